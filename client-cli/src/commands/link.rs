//! `link`: on the device that has the account, show a linking code, wait for the new
//! device and, once the person confirms, add it (`parley link`); on the new device, join
//! with the code (`parley link CODE`). The exchange itself is the SDK's
//! ([`parley_sdk::link`]); this file owns what the person sees and answers.

use std::io::IsTerminal;

use anyhow::bail;
use parley_sdk::link::{check_device_name, LinkInvite, NewDevice};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use super::Context;
use crate::local_time;
use crate::output::name;

/// `parley link [--name NAME] [--yes]`.
pub async fn show(ctx: &Context, device_name: Option<&str>, yes: bool) -> anyhow::Result<()> {
    if let Some(device_name) = device_name {
        check_device_name(device_name)?;
    }
    if !yes && !std::io::stdin().is_terminal() {
        bail!(
            "`parley link` asks you to confirm the new device, and there is no terminal to \
             ask on; run it with --yes to add whichever device joins with the code"
        );
    }
    let invite = LinkInvite::open(&ctx.config, ctx.store.clone()).await?;
    let code = invite.code();
    let until = local_time::system().date_time(invite.expires_at_ms());
    let qr = (!ctx.out.json && std::io::stdout().is_terminal())
        .then(|| terminal_qr(&code, terminal_width()))
        .flatten()
        .map(|qr| format!("{qr}\n"))
        .unwrap_or_default();
    ctx.out.print(
        &format!(
            "On your new device, run (in a profile of its own, e.g. laptop):\n\n  \
             parley --profile laptop link {code}\n\n{qr}The code works once, until {until}. \
             Waiting for the new device... (Ctrl-C to stop)"
        ),
        json!({"type": "link_code", "code": code, "expires_at_ms": invite.expires_at_ms()}),
    );
    let mut request = invite.wait_for_join().await?;
    let device = request
        .next_device()
        .map(|d| d.0.to_string())
        .unwrap_or_else(|| "N".to_owned());
    let shown_name = device_name.map_or_else(|| format!("device {device}"), str::to_owned);
    if !yes {
        eprint!(
            "A device joined with the code. Add it to your account as device {device} \
             \"{shown_name}\"? It will read and send your messages as you. [y/N] "
        );
        let answer = tokio::select! {
            answer = read_line() => answer?,
            stopped = request.keep_alive() => return Err(stopped.into()),
        };
        if !matches!(answer.trim().to_lowercase().as_str(), "y" | "yes") {
            drop(request);
            bail!("not linked: you declined; the new device is told the code is no longer valid");
        }
    } else if !ctx.out.json {
        println!("A device joined with the code; adding it (--yes).");
    }
    let linked = request.approve(device_name).await?;
    ctx.out.print(
        &format!(
            "Linked device {} \"{}\": it sends and receives as you from now on (`parley devices` lists \
             it; `parley devices remove {}` takes it off).",
            linked.device.0, linked.name, linked.device.0
        ),
        json!({"type": "device_linked", "device": linked.device.0, "name": linked.name,
               "list_version": linked.list.version}),
    );
    Ok(())
}

/// `parley link CODE`.
pub async fn join(ctx: &Context, code: &str) -> anyhow::Result<()> {
    let new = NewDevice::prepare(&ctx.config, ctx.store.clone(), code).await?;
    if !ctx.out.json {
        println!("Joining; confirm on your other device...");
    }
    let profile = new.join().await?;
    ctx.out.print(
        &format!(
            "Linked: this profile is now device {} of {} (account {}).",
            profile.device.0,
            name(profile.handle.as_ref(), &profile.account),
            profile.account
        ),
        json!({"type": "linked", "device": profile.device.0,
               "handle": profile.handle.as_ref().map(|h| h.as_str()),
               "account": profile.account.to_hex()}),
    );
    Ok(())
}

async fn read_line() -> anyhow::Result<String> {
    let mut line = String::new();
    tokio::io::BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await?;
    Ok(line)
}

fn terminal_width() -> usize {
    crossterm::terminal::size().map_or(0, |(columns, _)| usize::from(columns))
}

/// Light margin around the code, in modules (QR readers want some quiet zone).
const QUIET_ZONE: usize = 2;

/// `code` as a QR code drawn with Unicode half blocks (two rows of modules per line),
/// black on white whatever the terminal's colours; `None` when it does not fit in
/// `columns`. The code is upper-cased (the parser ignores case) so that it fits the QR
/// alphanumeric mode: a smaller symbol.
fn terminal_qr(code: &str, columns: usize) -> Option<String> {
    let qr = qrcode::QrCode::with_error_correction_level(
        code.to_uppercase().as_bytes(),
        qrcode::EcLevel::L,
    )
    .ok()?;
    let modules = qr.width();
    let size = modules + 2 * QUIET_ZONE;
    if size > columns {
        return None;
    }
    let colors = qr.to_colors();
    let dark = |x: usize, y: usize| -> bool {
        let (Some(x), Some(y)) = (x.checked_sub(QUIET_ZONE), y.checked_sub(QUIET_ZONE)) else {
            return false;
        };
        x < modules && y < modules && colors[y * modules + x] == qrcode::Color::Dark
    };
    let mut out = String::new();
    for y in (0..size).step_by(2) {
        out.push_str("\x1b[30;107m");
        for x in 0..size {
            out.push(match (dark(x, y), dark(x, y + 1)) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push_str("\x1b[0m\n");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_qr_code_fits_a_usual_terminal_and_is_left_out_of_a_narrow_one() {
        let code = format!("parley-link:{}", "0123456789ABCDEFGHJK".repeat(4));
        let qr = terminal_qr(&code, 80).expect("fits 80 columns");
        let lines: Vec<&str> = qr.lines().collect();
        let width = lines[0]
            .trim_start_matches("\x1b[30;107m")
            .trim_end_matches("\x1b[0m")
            .chars()
            .count();
        assert!(width <= 45, "{width} columns");
        assert_eq!(lines.len(), width.div_ceil(2));
        assert!(lines.iter().all(|l| l.ends_with("\x1b[0m")));
        assert!(terminal_qr(&code, width - 1).is_none());
    }
}
