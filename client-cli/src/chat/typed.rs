//! What a line typed in `chat` means: a message to the open conversation, a message to
//! someone else (`/to HANDLE TEXT`), or a local command. A line that starts with `/` is
//! never sent as it stands: an unknown `/word` gets the local help, and `//text` sends
//! `/text`.

/// A typed line, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Typed<'a> {
    /// An empty (or blank) line: nothing to do.
    Nothing,
    /// Text for the open conversation.
    Text(&'a str),
    /// `/to HANDLE TEXT`: text for someone else.
    To {
        /// The handle as typed.
        handle: &'a str,
        /// The text.
        text: &'a str,
    },
    /// `/help`.
    Help,
    /// `/quit` or `/exit`.
    Leave,
    /// A `/command` that is not one: show the help.
    Unknown(&'a str),
    /// A command without what it needs: its usage.
    Usage(&'static str),
}

/// The help shown for `/help` and after an unknown command; `peer` is the open
/// conversation's handle.
pub fn help(peer: &str, business: bool) -> String {
    let mut text = format!(
        "Type a line and press Enter to send it to {peer}. Commands (never sent):\n\
         \x20 /to HANDLE TEXT   send TEXT to someone else, e.g. to answer a message from a\n\
         \x20                   third person shown here: /to @carol see you at 6\n\
         \x20 /help             this list\n\
         \x20 /quit, /exit      leave the chat (Ctrl-D on an empty line and Ctrl-C too)\n\
         \x20 //TEXT            send TEXT that starts with a slash (as /TEXT)"
    );
    if business {
        text.push_str(
            "\n  STOP              withdraw all your consent to this business's messages",
        );
    }
    text
}

/// Reads one typed line.
pub fn parse(line: &str) -> Typed<'_> {
    let line = line.trim();
    if line.is_empty() {
        return Typed::Nothing;
    }
    if line.starts_with("//") {
        return Typed::Text(&line[1..]);
    }
    let Some(command) = line.strip_prefix('/') else {
        return Typed::Text(line);
    };
    let (word, rest) = command
        .split_once(char::is_whitespace)
        .map_or((command, ""), |(w, r)| (w, r.trim_start()));
    match word {
        "quit" | "exit" | "q" => Typed::Leave,
        "help" | "h" | "?" => Typed::Help,
        "to" => match rest.split_once(char::is_whitespace) {
            Some((handle, text)) if !text.trim().is_empty() => Typed::To {
                handle,
                text: text.trim(),
            },
            _ => Typed::Usage("/to HANDLE TEXT"),
        },
        _ => Typed::Unknown(line.split_whitespace().next().unwrap_or(line)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

    use super::*;

    #[test]
    fn text_is_sent_and_slash_words_are_local() {
        assert_eq!(parse("  hello bob "), Typed::Text("hello bob"));
        assert_eq!(parse("   "), Typed::Nothing);
        assert_eq!(parse("/quit"), Typed::Leave);
        assert_eq!(parse("/exit"), Typed::Leave);
        assert_eq!(parse("/help"), Typed::Help);
        assert_eq!(parse("/shrug whatever"), Typed::Unknown("/shrug"));
        assert_eq!(parse("//shrug"), Typed::Text("/shrug"));
        assert_eq!(parse("//"), Typed::Text("/"));
    }

    #[test]
    fn to_names_someone_else() {
        assert_eq!(
            parse("/to @carol see you at 6"),
            Typed::To {
                handle: "@carol",
                text: "see you at 6"
            }
        );
        assert_eq!(parse("/to carol"), Typed::Usage("/to HANDLE TEXT"));
        assert_eq!(parse("/to"), Typed::Usage("/to HANDLE TEXT"));
        assert!(help("@bob", false).contains("/to HANDLE TEXT"));
        assert!(help("@acme", true).contains("STOP"));
    }
}
