//! What both example bots share: command-line arguments (`--help` prints the usage and
//! exits 0; a bad argument is one line and exit code 2), opening (or registering) the
//! bot's profile, and how `main` ends (an error is one
//! line, `error: ...`, exit code 1).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use parley_protocol::ids::Handle;
use parley_sdk::bot::BusinessBot;
use parley_sdk::store::ClientStore;
use parley_sdk::{Client, ClientConfig, ServerList};

/// A boxed error for `main`.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// `<server-urls> <profile-dir>` then `--name value` options and bare flags.
#[derive(Debug)]
pub struct Args {
    /// The relay, e.g. `ws://127.0.0.1:7878`, or the nodes of one deployment as a
    /// comma-separated list (`ws://a:7878,ws://b:7878`) for the bot to fail over
    /// between.
    pub servers: ServerList,
    /// Where the bot keeps its identity and state (`bot.db`).
    pub profile_dir: PathBuf,
    options: Vec<(String, Option<String>)>,
    usage: String,
}

/// Exit code for a command line that could not be used.
const BAD_USAGE: u8 = 2;

impl Args {
    /// Parses `std::env::args` (options named in `known`): with `-h` or `--help` prints
    /// `help` and exits 0; on a bad command line prints one line (what is wrong, and
    /// `usage`) and exits 2.
    pub fn parse_or_exit(usage: &str, help: &str, known: &[&str]) -> Args {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.iter().any(|a| a == "-h" || a == "--help") {
            println!("usage: {usage}\n\n{help}");
            std::process::exit(0);
        }
        match Args::parse(args, usage, known) {
            Ok(args) => args,
            Err(e) => bad_usage(&e.to_string()),
        }
    }

    /// Says what is wrong with the command line (one line) and exits 2.
    pub fn bad(&self, what: &str) -> ! {
        bad_usage(&format!("{what}; usage: {}", self.usage))
    }

    fn parse(args: Vec<String>, usage: &str, known: &[&str]) -> Result<Args, Error> {
        let mut args = args.into_iter();
        let (Some(server), Some(profile_dir)) = (args.next(), args.next()) else {
            return Err(
                format!("expected a server URL and a profile directory; usage: {usage}").into(),
            );
        };
        let mut options = Vec::new();
        let rest: Vec<String> = args.collect();
        let mut i = 0;
        while i < rest.len() {
            let name = rest[i]
                .strip_prefix("--")
                .filter(|name| known.contains(name))
                .ok_or_else(|| format!("unexpected argument {}; usage: {usage}", rest[i]))?;
            let value = rest.get(i + 1).filter(|v| !v.starts_with("--")).cloned();
            i += if value.is_some() { 2 } else { 1 };
            options.push((name.to_owned(), value));
        }
        Ok(Args {
            servers: server
                .parse()
                .map_err(|e| format!("{server}: {e}; usage: {usage}"))?,
            profile_dir: PathBuf::from(profile_dir),
            options,
            usage: usage.to_owned(),
        })
    }

    /// The value of `--name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// A handle given as `--name` (a bad one ends the program: [`Args::bad`]).
    pub fn handle(&self, name: &str) -> Option<Handle> {
        self.value(name)
            .map(|h| Handle::parse(h).unwrap_or_else(|e| self.bad(&format!("--{name} {h}: {e}"))))
    }

    /// A duration given as `--name` with its unit (`30s`, `5m`), or `default`.
    pub fn duration(&self, name: &str, default: Duration) -> Duration {
        match self.value(name) {
            Some(v) => parley_protocol::duration::parse(v)
                .unwrap_or_else(|e| self.bad(&format!("--{name} {v}: {e}"))),
            None => default,
        }
    }
}

/// Opens the bot's profile; with `--register HANDLE`, registers it first and says what
/// the operator must do before the bot may send.
pub async fn open_bot(args: &Args, categories: &str) -> Result<Option<BusinessBot>, Error> {
    let config = ClientConfig::with_servers(args.servers.clone());
    let store = Arc::new(ClientStore::open(&args.profile_dir.join("bot.db"))?);
    if let Some(handle) = args.handle("register") {
        let profile = Client::register(&config, store, Some(handle.clone())).await?;
        println!(
            "Registered {handle} (account {}).\n\
             Now the server's operator verifies it:\n  \
             parley-server admin verify-business {} --legal-name \"...\" --display-name \"...\" \
             --domain example.com --categories {categories}\n\
             then run this example again without --register.",
            profile.account,
            handle.as_str()
        );
        return Ok(None);
    }
    match BusinessBot::start(config, store).await {
        Ok(bot) => Ok(Some(bot)),
        Err(parley_sdk::SdkError::NotRegistered) => Err(format!(
            "the bot profile in {} is not registered yet: run this example once with \
             --register <bot-handle>",
            args.profile_dir.display()
        )
        .into()),
        Err(e) => Err(e.into()),
    }
}

/// Prints `message` (one line) and exits with [`BAD_USAGE`].
fn bad_usage(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(i32::from(BAD_USAGE))
}

/// How `main` ends: an error is one line on standard error and exit code 1.
pub fn finish(result: Result<(), Error>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
