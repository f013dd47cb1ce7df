//! What both example bots share: command-line arguments, opening (or registering) the
//! bot's profile, and waiting out a rate limit.

use std::path::PathBuf;
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
}

impl Args {
    /// Parses `std::env::args`, or explains `usage`.
    pub fn parse(usage: &str) -> Result<Args, Error> {
        let mut args = std::env::args().skip(1);
        let (Some(server), Some(profile_dir)) = (args.next(), args.next()) else {
            return Err(format!("usage: {usage}").into());
        };
        let mut options = Vec::new();
        let rest: Vec<String> = args.collect();
        let mut i = 0;
        while i < rest.len() {
            let name = rest[i]
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {}; usage: {usage}", rest[i]))?;
            let value = rest.get(i + 1).filter(|v| !v.starts_with("--")).cloned();
            i += if value.is_some() { 2 } else { 1 };
            options.push((name.to_owned(), value));
        }
        Ok(Args {
            servers: server.parse()?,
            profile_dir: PathBuf::from(profile_dir),
            options,
        })
    }

    /// The value of `--name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// A handle given as `--name`.
    pub fn handle(&self, name: &str) -> Result<Option<Handle>, Error> {
        self.value(name)
            .map(|h| Handle::parse(h).map_err(|e| format!("--{name} {h}: {e}").into()))
            .transpose()
    }

    /// A duration given as `--name` with its unit (`30s`, `5m`), or `default`.
    pub fn duration(&self, name: &str, default: Duration) -> Result<Duration, Error> {
        match self.value(name) {
            Some(v) => {
                Ok(parley_protocol::duration::parse(v).map_err(|e| format!("--{name}: {e}"))?)
            }
            None => Ok(default),
        }
    }
}

/// Opens the bot's profile; with `--register HANDLE`, registers it first and says what
/// the operator must do before the bot may send.
pub async fn open_bot(args: &Args, categories: &str) -> Result<Option<BusinessBot>, Error> {
    let config = ClientConfig::with_servers(args.servers.clone());
    let store = Arc::new(ClientStore::open(&args.profile_dir.join("bot.db"))?);
    if let Some(handle) = args.handle("register")? {
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
    Ok(Some(BusinessBot::start(config, store).await?))
}
