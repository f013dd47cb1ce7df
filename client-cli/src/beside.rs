//! Commands beside an open chat: what `parley` does when another process (a running
//! `parley chat`, usually) holds the profile.
//!
//! The profile lock guards the profile's one connection to the relay: a second engine
//! on the same profile would log in as the same device, displace the first one's
//! connection, and advance the same end-to-end sessions from two processes (each
//! message encrypted on a session state the other process has already used). So there
//! is never a second engine, and no command is served by talking to the running one
//! (that would need a local socket protocol, its access control and its failure modes,
//! for little gain: the chat has the commands a person needs while chatting).
//!
//! What is safe is reading: commands that only read the local store ([`reads_only`])
//! open it read-only beside the holder (SQLite in WAL mode gives a reader the last
//! committed state while the holder writes; a read-only connection cannot write, and
//! the SDK refuses to start an engine on it). Every other command gets [`advice`]: one
//! sentence that says what to do instead, never "use another profile" (another profile
//! is another identity).

use crate::args::{Command, ConsentCommand};

/// Whether `command` only reads the profile's local store, so that it can run
/// read-only beside the process that holds the profile.
pub fn reads_only(command: &Command) -> bool {
    matches!(
        command,
        Command::Whoami
            | Command::Contacts
            | Command::SafetyNumber { .. }
            | Command::History { .. }
            | Command::Consent(ConsentCommand::List)
    )
}

/// What to do when `command` needs the profile that another process holds; `parley` is
/// the command as the person runs it.
pub fn advice(command: &Command, parley: &str) -> String {
    let busy = parley_sdk::SdkError::ProfileInUse;
    let todo = match command {
        Command::Send { handle, .. } => format!(
            "type the message in the open chat instead (to someone other than the person \
             you chat with: /to {} TEXT), or leave that chat with /quit first",
            parley_protocol::Handle::parse(handle)
                .map_or_else(|_| handle.clone(), |h| h.to_string())
        ),
        Command::Chat { .. } => "use the chat that is already open (/to HANDLE TEXT writes to \
                                 someone else from there), or leave it with /quit first"
            .to_owned(),
        Command::Inbox { .. } => "new messages are shown in the open chat; or leave it with \
                                  /quit first"
            .to_owned(),
        _ => format!(
            "leave the open chat with /quit (or stop the other process) first; `{parley} \
             contacts`, `history`, `safety-number`, `whoami` and `consent list` work beside it"
        ),
    };
    format!("{busy}: {todo}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

    use super::*;

    #[test]
    fn reading_commands_run_beside_and_the_others_say_what_to_do() {
        assert!(reads_only(&Command::Contacts));
        assert!(reads_only(&Command::Whoami));
        let send = Command::Send {
            handle: "carol".into(),
            text: vec!["hi".into()],
            category: None,
        };
        assert!(!reads_only(&send));
        let said = advice(&send, "parley --profile alice");
        assert!(said.contains("/to @carol TEXT"), "{said}");
        assert!(!said.contains("--profile"), "{said}");
        let said = advice(
            &Command::Verify {
                handle: "bob".into(),
            },
            "parley --profile alice",
        );
        assert!(said.contains("`parley --profile alice contacts`"), "{said}");
    }
}
