//! The command line: global options (accepted before or after the command) and commands.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The profile used without `--profile`.
pub const DEFAULT_PROFILE: &str = "default";

/// parley: end-to-end encrypted chat on a Parley server.
///
/// Identities live in profiles under the home directory; each profile is one account.
/// Messages are encrypted on this machine; the server only carries ciphertext.
#[derive(Debug, Parser)]
#[command(name = "parley", version, about, long_about)]
pub struct Args {
    /// Server URL; repeat the option or give a comma-separated list for the nodes of one
    /// deployment, and parley fails over to the next whenever a server cannot be reached.
    #[arg(
        long,
        global = true,
        env = "PARLEY_SERVER",
        default_value = "ws://127.0.0.1:7878",
        value_name = "URL[,URL...]"
    )]
    pub server: Vec<String>,

    /// PEM file of CA certificates to trust for a wss:// server instead of the web PKI
    /// roots (for a private CA or a test certificate).
    #[arg(long, global = true, env = "PARLEY_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Where profiles live [default: $XDG_DATA_HOME/parley or ~/.local/share/parley].
    #[arg(long, global = true, env = "PARLEY_HOME")]
    pub home: Option<PathBuf>,

    /// Which identity to use; several profiles can live on one machine.
    #[arg(long, global = true, env = "PARLEY_PROFILE", default_value = DEFAULT_PROFILE)]
    pub profile: String,

    /// Machine-readable output: one JSON object per line.
    #[arg(long, global = true)]
    pub json: bool,

    /// The operator's verification authority key (64 hex digits), to check business
    /// certificates against. Without it, the key the server presents is pinned on first
    /// contact (its fingerprint is shown: compare it with the one the operator publishes).
    #[arg(long, global = true, env = "PARLEY_AUTHORITY")]
    pub authority: Option<String>,

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
        /// When this profile's database is damaged (empty or unreadable), move it aside
        /// and register a new identity; without it such a profile is never replaced.
        #[arg(long)]
        replace_damaged_profile: bool,
    },
    /// Show this profile's handle and account.
    Whoami,
    /// Send a message and wait until the server has stored it.
    ///
    /// A verified business account sends with --category: the relay delivers it only if
    /// the person granted that category (or, for `conversation`, wrote to the business
    /// in the last 24 hours).
    Send {
        /// Recipient handle, e.g. @bob.
        handle: String,
        /// The message (several words are joined with spaces).
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
        /// (Business accounts) the message's category: security_alert, transactional,
        /// authentication, marketing or conversation.
        #[arg(long)]
        category: Option<String>,
    },
    /// Print messages that arrived, acknowledge them, and exit.
    Inbox {
        /// Keep waiting this long for more messages, with a unit (e.g. 30s, 5m).
        #[arg(long, default_value = "0s", value_parser = parley_protocol::duration::parse)]
        wait: std::time::Duration,
    },
    /// Chat interactively: type a line to send it; /help lists the chat's commands
    /// (/to HANDLE TEXT answers someone else, /quit or /exit leaves).
    ///
    /// Lines starting with / are never sent (//TEXT sends /TEXT). Times are local (TZ).
    /// On a terminal, keys are read one by one: the line being typed stays put when a
    /// message arrives, and a long pasted line is kept whole. While the chat runs,
    /// `contacts`, `history`, `safety-number`, `whoami` and `consent list` work beside it.
    ///
    /// Opens on the last 20 messages of the conversation, then shows new ones as they
    /// arrive, and the state of yours as receipts come back (delivered, read). Viewing the
    /// conversation sends read receipts (see `parley settings read-receipts`).
    Chat {
        /// Who to chat with.
        handle: String,
    },
    /// Show a conversation, oldest first, with the state of your messages.
    ///
    /// Each message with its date and time, and the state of yours: queued (not yet
    /// accepted by the server), sent, delivered (their device has it), read (they viewed
    /// the conversation), or not sent (the server refused it).
    ///
    /// Fetches what is waiting on the server first (new messages, receipts), when it can
    /// be reached; otherwise shows what this profile has stored. Viewing the conversation
    /// marks its messages read and sends read receipts, unless they are turned off
    /// (`parley settings read-receipts off`).
    History {
        /// The contact.
        handle: String,
        /// Show at most this many of the latest messages.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Delete the stored messages of one conversation, or of all (--all).
    ///
    /// On this machine only: the other side keeps its copy. Contacts, safety-number
    /// marks and consent stay. Asks nothing; says how many messages it deleted.
    DeleteHistory {
        /// The contact whose conversation to delete.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        handle: Option<String>,
        /// Delete every conversation.
        #[arg(long)]
        all: bool,
    },
    /// This profile's local settings.
    #[command(subcommand)]
    Settings(SettingsCommand),
    /// Full-screen chat: conversations on the left with unread counts, the open one on
    /// the right, an input line at the bottom.
    ///
    /// The list marks verified businesses [B] and contacts whose safety number you
    /// verified with ✓; the conversation shows times, the state of your messages (sent,
    /// delivered, read) and cards, which you answer by key. Opening a conversation marks
    /// it read. A message in another conversation rings the terminal bell (--no-bell
    /// turns that off). The line-based `chat` stays for scripts and small terminals.
    #[command(after_help = crate::tui::keys::help_text())]
    Tui {
        /// Open the conversation with this handle first (it is looked up before the
        /// screen opens: an unknown handle is an error).
        handle: Option<String>,
        /// No terminal bell for a message in a conversation that is not open.
        #[arg(long)]
        no_bell: bool,
        /// Messages kept on screen per conversation (older ones stay in the history).
        #[arg(long, default_value_t = 500, value_name = "N",
              value_parser = clap::value_parser!(u16).range(1..))]
        keep: u16,
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
    /// Take the verified mark off a contact: after its identity changed, to write to the
    /// account its handle now names.
    Unverify {
        /// The contact.
        handle: String,
    },
    /// Verified businesses: show an account's certificate, checked on this machine.
    #[command(subcommand)]
    Business(BusinessCommand),
    /// What businesses may send you: grant, revoke, list, export your signed consent.
    #[command(subcommand)]
    Consent(ConsentCommand),
    /// Block an account: the server refuses its messages to you.
    Block {
        /// Who to block.
        handle: String,
    },
    /// Unblock an account.
    Unblock {
        /// Who to unblock.
        handle: String,
    },
    /// Report an account to the server's operator (enough reports suspend a business).
    Report {
        /// Who to report.
        handle: String,
    },
    /// Answer a card (e.g. "Did you make this purchase?") with one of its actions; the
    /// answer is signed by you over the card exactly as you saw it.
    Answer {
        /// The card's message id as `inbox` shows it (a unique prefix is enough).
        message: String,
        /// The action id shown in brackets on the card, e.g. `yes`.
        action: String,
    },
    /// This profile's public settings.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// This account's devices, as the account signed their list (without a subcommand:
    /// list them).
    Devices {
        /// What to do with them.
        #[command(subcommand)]
        command: Option<DevicesCommand>,
    },
    /// Link another device to this account, or (with CODE) join this profile to it.
    ///
    /// On the device that has the account (say, your phone), `parley link` shows a
    /// linking code, and a QR code of it on a terminal wide enough, and waits for the new
    /// device. When one joins, it asks you to confirm (--yes skips the question; without
    /// a terminal --yes is required), then adds it to the account's signed device list and
    /// hands it the account's key, end-to-end encrypted: the server never sees it.
    ///
    /// On the new device (say, your laptop), in a profile of its own: `parley --profile
    /// laptop link CODE` joins with the code the other device shows, and from then on
    /// that profile is the same account (`parley devices` lists both). A code works once,
    /// for a few minutes (10 by default: the server's --link-lifetime).
    Link {
        /// The code `parley link` shows on your other device: join this (new, empty)
        /// profile to that account.
        code: Option<String>,
        /// The new device's name on the account's device list [default: device N].
        #[arg(long, conflicts_with = "code")]
        name: Option<String>,
        /// Approve whichever device joins with the code, without asking.
        #[arg(long, conflicts_with = "code")]
        yes: bool,
    },
    /// Delete this account on the server; the handle becomes free.
    DeleteAccount {
        /// Confirm: this cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

/// `parley business ...`.
#[derive(Debug, Subcommand)]
pub enum BusinessCommand {
    /// Show whether HANDLE is a verified business: legal name, domain, categories it may
    /// use, certificate validity, and the verification authority's fingerprint. The
    /// certificate is checked here against the authority key (pinned on first contact).
    Show {
        /// The account to check.
        handle: String,
    },
}

/// `parley consent ...`.
#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// Allow a verified business to message you in some categories. The grant is signed
    /// with your key, enforced by the server and kept in your local ledger.
    Grant {
        /// The business.
        handle: String,
        /// Categories, comma-separated or repeated: security_alert, transactional,
        /// authentication, marketing, or all.
        #[arg(long = "category", required = true, num_args = 1)]
        categories: Vec<String>,
        /// Let the grant lapse by itself after this many days.
        #[arg(long)]
        expires_in_days: Option<u64>,
    },
    /// Withdraw consent: some categories, or (without --category) all of them. Takes
    /// effect before the business's next send; its queued messages are deleted.
    Revoke {
        /// The business.
        handle: String,
        /// Categories to withdraw (default: all).
        #[arg(long = "category", num_args = 1)]
        categories: Vec<String>,
    },
    /// List the businesses you gave consent to, and what each may send now.
    List,
    /// Print your consent ledger as JSON: every grant and revocation with its signature,
    /// verifiable offline (`parley consent verify`).
    Export,
    /// Check an exported ledger's signatures offline (FILE, or - for standard input).
    Verify {
        /// The exported JSON.
        file: std::path::PathBuf,
    },
}

/// `parley settings ...`.
#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Turn read receipts on or off (without on/off: show the setting).
    ///
    /// With read receipts on (the default), viewing a conversation (history, chat) tells
    /// the other person you read their messages. Delivered receipts are always sent.
    ReadReceipts {
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: Option<String>,
    },
}

/// `parley devices ...`.
#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Remove a device from this account: a newer signed list without it is published,
    /// and the server deletes that device, its queue and its prekeys and disconnects it.
    Remove {
        /// The device id, as `parley devices` shows it.
        device: u32,
    },
}

/// `parley profile ...`.
#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Set the display name others see (names that look like a verified business's
    /// are refused), or clear it with --clear.
    SetName {
        /// The name.
        #[arg(required_unless_present = "clear")]
        name: Option<String>,
        /// Remove the display name.
        #[arg(long, conflicts_with = "name")]
        clear: bool,
    },
}
