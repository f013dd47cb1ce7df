//! The "ready" log line: how a supervisor (tests, the load-test harness, scripts) learns
//! where a server started with `--listen 127.0.0.1:0` actually listens.
//!
//! The server logs [`READY_MESSAGE`] once, when it accepts connections, with the fields
//! `listen=ADDR` and `admin=ADDR|off`, in text or JSON format. [`parse_ready_line`] reads
//! both formats, with or without terminal colours.

use std::net::SocketAddr;

/// The message of the ready log line.
pub const READY_MESSAGE: &str = "parley-server ready";

/// Where the server listens, as announced in its ready line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadyLine {
    /// The WebSocket listener.
    pub listen: SocketAddr,
    /// The admin HTTP listener, unless it is off.
    pub admin: Option<SocketAddr>,
}

/// The addresses in `line` if it is the ready line (text or JSON log format).
pub fn parse_ready_line(line: &str) -> Option<ReadyLine> {
    let plain = strip_ansi(line);
    if !plain.contains(READY_MESSAGE) {
        return None;
    }
    let field = |name: &str| {
        let text = plain
            .split(&format!(" {name}="))
            .nth(1)
            .map(|rest| rest.split_whitespace().next().unwrap_or(""))
            .or_else(|| {
                // JSON: "name":"value"
                let rest = plain.split(&format!("\"{name}\":\"")).nth(1)?;
                rest.split('"').next()
            })?;
        text.parse::<SocketAddr>().ok()
    };
    Some(ReadyLine {
        listen: field("listen")?,
        admin: field("admin"),
    })
}

/// Removes terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_text_coloured_text_and_json() {
        let text = "2026 INFO parley-server ready listen=127.0.0.1:21001 admin=off tls=false";
        let coloured = "\u{1b}[2m2026\u{1b}[0m INFO parley-server ready \u{1b}[3mlisten\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:21001 \u{1b}[3madmin\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:7879";
        let json = r#"{"fields":{"message":"parley-server ready","listen":"127.0.0.1:21001","admin":"127.0.0.1:7879"}}"#;
        let listen = SocketAddr::from(([127, 0, 0, 1], 21001));
        let admin = Some(SocketAddr::from(([127, 0, 0, 1], 7879)));
        assert_eq!(
            parse_ready_line(text),
            Some(ReadyLine {
                listen,
                admin: None
            })
        );
        assert_eq!(
            parse_ready_line(coloured),
            Some(ReadyLine { listen, admin })
        );
        assert_eq!(parse_ready_line(json), Some(ReadyLine { listen, admin }));
        assert_eq!(
            parse_ready_line("INFO something else listen=1.2.3.4:5"),
            None
        );
    }
}
