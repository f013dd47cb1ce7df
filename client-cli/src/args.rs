//! The command line: global options (accepted before or after the command) and commands.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// parley: end-to-end encrypted chat on a Parley server.
///
/// Identities live in profiles under the home directory; each profile is one account.
/// Messages are encrypted on this machine; the server only carries ciphertext.
#[derive(Debug, Parser)]
#[command(name = "parley", version, about, long_about)]
pub struct Args {
    /// Server URL.
    #[arg(
        long,
        global = true,
        env = "PARLEY_SERVER",
        default_value = "ws://127.0.0.1:7878"
    )]
    pub server: String,

    /// PEM file of CA certificates to trust for a wss:// server instead of the web PKI
    /// roots (for a private CA or a test certificate).
    #[arg(long, global = true, env = "PARLEY_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Where profiles live [default: $XDG_DATA_HOME/parley or ~/.local/share/parley].
    #[arg(long, global = true, env = "PARLEY_HOME")]
    pub home: Option<PathBuf>,

    /// Which identity to use; several profiles can live on one machine.
    #[arg(long, global = true, env = "PARLEY_PROFILE", default_value = "default")]
    pub profile: String,

    /// Machine-readable output: one JSON object per line.
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an identity for this profile and register it with a handle.
    Register {
        /// The handle others will find you by (3-32 of a-z, 0-9, _).
        handle: String,
    },
    /// Show this profile's handle and account.
    Whoami,
    /// Send a message and wait until the server has stored it.
    Send {
        /// Recipient handle, e.g. @bob.
        handle: String,
        /// The message (several words are joined with spaces).
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Print messages that arrived, acknowledge them, and exit.
    Inbox {
        /// Keep waiting this many seconds for more messages.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Chat interactively: type a line to send it, /quit to leave.
    Chat {
        /// Who to chat with.
        handle: String,
    },
    /// List the people this profile has talked to.
    Contacts,
    /// Show the safety number with a contact, to compare in person or by phone.
    SafetyNumber {
        /// The contact.
        handle: String,
    },
    /// Mark a contact as verified after comparing safety numbers.
    Verify {
        /// The contact.
        handle: String,
    },
    /// Delete this account on the server; the handle becomes free.
    DeleteAccount {
        /// Confirm: this cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}
