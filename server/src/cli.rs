//! The `parley-server` command line: subcommands, and the configuration file.
//!
//! Every setting of [`Config`] comes from, in order of precedence:
//!
//! 1. a flag (`--max-connections 100`),
//! 2. its `PARLEY_*` environment variable (`PARLEY_MAX_CONNECTIONS=100`),
//! 3. the TOML file named by `--config` / `PARLEY_CONFIG` (`max_connections = 100`: the
//!    flag's name with `_` for `-`),
//! 4. the default.
//!
//! A flag given twice takes its last value, so wrappers can append overrides.
//!
//! The file is checked before anything starts: an unknown key, a table, or a value the
//! flag would refuse stops the server with a message naming the file and the key.
//! `parley-server print-config` prints the effective configuration as a file that can be
//! given back to `--config`, each line annotated with where its value came from.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::Config;

/// Parley relay: carries end-to-end encrypted envelopes between accounts over WebSockets,
/// storing them durably (SQLite) until the recipient acknowledges them. Without a
/// subcommand, runs the server.
#[derive(Debug, Parser)]
#[command(name = "parley-server", version, about, long_about = None)]
#[command(args_override_self = true)]
pub struct Cli {
    /// TOML configuration file. Flags and PARLEY_* variables override its values; keys
    /// are the flags' names with `_` for `-` (see `parley-server print-config`).
    #[arg(
        long = "config",
        env = "PARLEY_CONFIG",
        global = true,
        value_name = "FILE"
    )]
    pub config_file: Option<PathBuf>,

    /// The server's settings.
    #[command(flatten)]
    pub config: Config,

    /// What to do instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `parley-server` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the effective configuration as TOML (usable with --config) and exit.
    PrintConfig,
    /// Operator commands on the data directory (safe while the server runs).
    #[command(subcommand)]
    Admin(AdminCommand),
}

/// `parley-server admin ...`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Print counts from the database: accounts, devices, queued envelopes, sizes
    /// (SQLite store).
    Stats,
    /// Apply the store's missing schema migrations and print its schema version (nodes
    /// also do this when they start; run it before a rolling upgrade).
    Migrate,
    /// Write a consistent copy of the database to FILE while the server keeps serving.
    Backup {
        /// Where to write the backup; must not exist yet.
        file: PathBuf,
    },
    /// Print the verification authority's public key and fingerprint (clients pin it).
    Authority,
    /// Issue a signed business certificate to the account with HANDLE (reissue with the
    /// next serial if it has one). The display name must not be confusable with another
    /// verified business's.
    VerifyBusiness {
        /// The business account's handle (with or without @).
        handle: String,
        /// Registered legal name, e.g. "Acme Bank plc".
        #[arg(long)]
        legal_name: String,
        /// Name shown in chats, e.g. "Acme Bank".
        #[arg(long)]
        display_name: String,
        /// Domain the business proved control of, e.g. acmebank.example.
        #[arg(long)]
        domain: String,
        /// Categories it may send in, comma-separated: security_alert, transactional,
        /// authentication, marketing, or all.
        #[arg(long)]
        categories: String,
        /// How long the certificate is valid (e.g. 365d).
        #[arg(long, default_value = "365d", value_parser = crate::config::parse_duration)]
        valid_for: std::time::Duration,
    },
    /// Revoke the business certificate of HANDLE: clients lose the badge, and it may only
    /// answer people who write to it.
    RevokeBusiness {
        /// The business account's handle.
        handle: String,
    },
    /// List every business: certificate, status, tier, reports.
    ListBusinesses,
    /// Suspend the business HANDLE: its sends are refused with `suspended`.
    Suspend {
        /// The business account's handle.
        handle: String,
    },
    /// Lift a suspension (manual or automatic after reports); the report count restarts.
    Unsuspend {
        /// The business account's handle.
        handle: String,
    },
    /// Set the reach tier of the business HANDLE (see --business-reach-tiers).
    SetTier {
        /// The business account's handle.
        handle: String,
        /// Tier number, 0 first.
        tier: u32,
    },
    /// Write a self-signed end-entity certificate (cert.pem) and its private key
    /// (key.pem, mode 0600) into DIR, for trying `wss://`: start the server with
    /// `--tls-cert DIR/cert.pem --tls-key DIR/key.pem` and give clients
    /// `parley --ca-file DIR/cert.pem`. For testing only; existing files are not
    /// overwritten.
    SelfSignedCert {
        /// A DNS name or IP address clients connect to (repeat for more), e.g.
        /// `--host localhost --host 127.0.0.1`.
        #[arg(long = "host", required = true, value_name = "NAME")]
        hosts: Vec<String>,
        /// Directory to write cert.pem and key.pem into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// The configuration file.
    File,
    /// An environment variable (its name).
    Env(String),
    /// A command-line flag.
    Flag,
}

/// The parsed command line with the configuration file merged in.
#[derive(Debug)]
pub struct Loaded {
    /// Flags, file and variables, merged.
    pub cli: Cli,
    /// Each setting's effective value (as text) and where it came from, in `--help`
    /// order, keyed by its file key.
    pub settings: Vec<Setting>,
}

/// One effective setting, for `print-config`.
#[derive(Clone, Debug)]
pub struct Setting {
    /// The file key (`max_connections`).
    pub key: String,
    /// The value as text, as a flag would take it (`16384`, `10s`, `127.0.0.1:7878`).
    pub value: String,
    /// Whether the value is a number or a boolean (printed without quotes).
    pub bare: bool,
    /// Where it came from.
    pub source: Source,
}

/// The command line or the configuration file is invalid.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A flag or variable is invalid, or `--help` / `--version` was asked for (clap
    /// prints those itself: call `exit()` on it).
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// The configuration file is unreadable or invalid.
    #[error("configuration file {}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// Parses `args` (with the program name first), merging the configuration file.
pub fn load<I, T>(args: I) -> Result<Loaded, LoadError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let command = Cli::command();
    let first = command.clone().try_get_matches_from(&args)?;
    let mut from_file = Vec::new();
    let mut merged_args = args.clone();
    if let Some(path) = first.get_one::<PathBuf>("config_file") {
        let file_args = file_arguments(&command, &first, path)?;
        from_file = file_args.iter().map(|(id, _)| id.clone()).collect();
        // The file's values go right after the program name: flags given on the command
        // line were already excluded, so nothing is given twice.
        let mut with_file = args.first().cloned().into_iter().collect::<Vec<_>>();
        with_file.extend(file_args.into_iter().map(|(_, arg)| arg));
        with_file.extend(args.iter().skip(1).cloned());
        merged_args = with_file;
    }
    let matches = command.clone().try_get_matches_from(&merged_args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let settings = settings(&command, &matches, &from_file);
    Ok(Loaded { cli, settings })
}

/// Settings that are not server settings.
const NOT_SETTINGS: [&str; 3] = ["config_file", "help", "version"];

/// The file's settings as `--flag=value` arguments, for every key not already given by a
/// flag or variable; each value checked by the flag's own parser.
fn file_arguments(
    command: &clap::Command,
    first: &clap::ArgMatches,
    path: &Path,
) -> Result<Vec<(String, OsString)>, LoadError> {
    let fail = |message: String| LoadError::File {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| fail(format!("not valid TOML: {}", e.message())))?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let arg = command
            .get_arguments()
            .find(|a| a.get_id().as_str() == key && !NOT_SETTINGS.contains(&key.as_str()))
            .ok_or_else(|| {
                fail(format!(
                    "unknown key `{key}` (keys are flag names with `_` for `-`; \
                     `parley-server print-config` lists them)"
                ))
            })?;
        let Some(long) = arg.get_long() else {
            return Err(fail(format!("key `{key}` cannot be set in a file")));
        };
        let is_flag = matches!(arg.get_action(), ArgAction::SetTrue);
        let text = match value {
            toml::Value::Boolean(b) if is_flag => b.to_string(),
            _ if is_flag => return Err(fail(format!("key `{key}` must be true or false"))),
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err(fail(format!(
                    "key `{key}` must be a string, a number or a boolean"
                )))
            }
        };
        check_value(arg, &text).map_err(|e| fail(format!("key `{key}`: {e}")))?;
        if matches!(
            first.value_source(key),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        match (is_flag, text.as_str()) {
            (true, "true") => out.push((key.clone(), OsString::from(format!("--{long}")))),
            (true, _) => {}
            (false, _) => out.push((key.clone(), OsString::from(format!("--{long}={text}")))),
        }
    }
    Ok(out)
}

/// Runs `text` through the parser of `arg` alone; the error's first line if it fails.
fn check_value(arg: &clap::Arg, text: &str) -> Result<(), String> {
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return Ok(());
    }
    let alone = arg.clone().env(None).required(false).global(false);
    let long = arg.get_long().unwrap_or_default();
    clap::Command::new("parley-server")
        .arg(alone)
        .try_get_matches_from(["parley-server".to_owned(), format!("--{long}={text}")])
        .map(|_| ())
        .map_err(|e| {
            let message = e.to_string();
            let first = message.lines().next().unwrap_or_default();
            first.trim_start_matches("error: ").to_owned()
        })
}

/// Settings whose value is a URL that may hold a password.
const URL_SETTINGS: [&str; 2] = ["store", "bus"];

/// Settings never shown at all.
const SECRET_SETTINGS: [&str; 1] = ["cluster_key"];

/// How `print-config` shows a setting's value: secrets hidden, passwords in URLs replaced.
fn shown(key: &str, value: String) -> String {
    if SECRET_SETTINGS.contains(&key) && !value.is_empty() {
        "(not shown)".to_owned()
    } else if URL_SETTINGS.contains(&key) {
        crate::topology::redact_url(&value)
    } else {
        value
    }
}

/// Every server setting's effective value and source.
fn settings(
    command: &clap::Command,
    matches: &clap::ArgMatches,
    from_file: &[String],
) -> Vec<Setting> {
    let mut out = Vec::new();
    for arg in command.get_arguments() {
        let key = arg.get_id().as_str();
        if NOT_SETTINGS.contains(&key) {
            continue;
        }
        let value = matches
            .get_raw(key)
            .map(|values| {
                values
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let source = if from_file.iter().any(|k| k == key) {
            Source::File
        } else {
            match matches.value_source(key) {
                Some(ValueSource::CommandLine) => Source::Flag,
                Some(ValueSource::EnvVariable) => Source::Env(
                    arg.get_env()
                        .map(|e| e.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
                _ => Source::Default,
            }
        };
        let value = shown(key, value);
        let bare = value.parse::<u64>().is_ok() || value == "true" || value == "false";
        out.push(Setting {
            key: key.to_owned(),
            value,
            bare,
            source,
        });
    }
    out
}

impl Loaded {
    /// The effective configuration as a TOML file, each line saying where its value came
    /// from. Holds no secrets: the TLS key is a path (its contents are never read here),
    /// passwords in the store and bus URLs are replaced by `***`, and the cluster key is
    /// not shown.
    pub fn print_config(&self) -> String {
        let mut out = String::from(
            "# parley-server: effective configuration\n\
             # precedence: flags > PARLEY_* variables > --config file > defaults\n",
        );
        for setting in &self.settings {
            if setting.value.is_empty() && setting.source == Source::Default {
                out.push_str(&format!("# {} = (not set)\n", setting.key));
                continue;
            }
            let value = if setting.bare {
                setting.value.clone()
            } else {
                toml::Value::String(setting.value.clone()).to_string()
            };
            let source = match &setting.source {
                Source::Default => "default".to_owned(),
                Source::File => "config file".to_owned(),
                Source::Env(name) => format!("environment {name}"),
                Source::Flag => "flag".to_owned(),
            };
            out.push_str(&format!("{} = {value}  # {source}\n", setting.key));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(text: &str, args: &[&str]) -> Result<Loaded, LoadError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.toml");
        std::fs::write(&path, text).unwrap();
        let mut all = vec!["parley-server".to_owned(), "--config".to_owned()];
        all.push(path.display().to_string());
        all.extend(args.iter().map(|a| (*a).to_owned()));
        load(all)
    }

    #[test]
    fn file_values_apply_and_flags_override_them() {
        let loaded = with_file(
            "max_connections = 100\nretention = \"7d\"\nadmin_listen = \"off\"\n\
             admin_allow_remote = true\n",
            &["--max-connections", "200"],
        )
        .unwrap();
        let config = &loaded.cli.config;
        assert_eq!(config.max_connections, 200, "the flag wins");
        assert_eq!(config.retention.as_secs(), 7 * 86_400);
        assert_eq!(config.admin_listen.0, None);
        assert!(config.admin_allow_remote);
        let printed = loaded.print_config();
        assert!(
            printed.contains("max_connections = 200  # flag\n"),
            "{printed}"
        );
        assert!(
            printed.contains("retention = \"7d\"  # config file\n"),
            "{printed}"
        );
        assert!(
            printed.contains("listen = \"127.0.0.1:7878\"  # default\n"),
            "{printed}"
        );
    }

    #[test]
    fn print_config_never_shows_passwords_or_the_cluster_key() {
        let loaded = with_file(
            "store = \"postgres://parley:hunter2@db:5432/parley\"\n\
             bus = \"nats://node:natsecret@nats:4222\"\n\
             cluster_key = \"0123456789abcdef-secret\"\n\
             node_id = \"n1\"\n",
            &[],
        )
        .unwrap();
        let config = &loaded.cli.config;
        assert!(config.store.is_postgres());
        assert!(config.validate().is_ok());
        let printed = loaded.print_config();
        for secret in ["hunter2", "natsecret", "0123456789abcdef-secret"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(
            printed.contains("store = \"postgres://parley:***@db:5432/parley\""),
            "{printed}"
        );
        assert!(
            printed.contains("cluster_key = \"(not shown)\""),
            "{printed}"
        );
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn a_cluster_needs_postgres_and_a_cluster_key() {
        let loaded = with_file("bus = \"nats://nats:4222\"\n", &[]).unwrap();
        let err = loaded.cli.config.validate().unwrap_err().to_string();
        assert!(err.contains("store") && err.contains("postgres"), "{err}");
        let loaded = with_file(
            "bus = \"nats://nats:4222\"\nstore = \"postgres://db/parley\"\n",
            &[],
        )
        .unwrap();
        let err = loaded.cli.config.validate().unwrap_err().to_string();
        assert!(err.contains("cluster_key"), "{err}");
    }

    #[test]
    fn unknown_keys_tables_and_bad_values_name_the_key() {
        let err = with_file("max_conections = 1\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key `max_conections`"), "{err}");
        let err = with_file("max_connections = \"many\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key `max_connections`") && err.contains("many"),
            "{err}"
        );
        let err = with_file("retention = \"forever\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("key `retention`"), "{err}");
        let err = with_file("[limits]\nx = 1\n", &[]).unwrap_err().to_string();
        assert!(err.contains("`limits`"), "{err}");
        let err = with_file("admin_allow_remote = \"yes\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("true or false"), "{err}");
        let err = with_file("listen = \n", &[]).unwrap_err().to_string();
        assert!(err.contains("not valid TOML"), "{err}");
    }

    #[test]
    fn printed_configuration_reads_back_as_the_same_configuration() {
        let first = with_file("max_envelope_bytes = 1000\n", &["--log", "debug"]).unwrap();
        let printed = first.print_config();
        let again = with_file(&printed, &[]).unwrap();
        assert_eq!(again.cli.config.max_envelope_bytes, 1000);
        assert_eq!(again.cli.config.log, "debug");
        assert_eq!(
            again.print_config().lines().count(),
            printed.lines().count()
        );
    }

    #[test]
    fn a_flag_given_twice_takes_its_last_value() {
        let loaded = load(["parley-server", "--log", "info", "--log", "trace"]).unwrap();
        assert_eq!(loaded.cli.config.log, "trace");
    }

    #[test]
    fn subcommands_parse_with_settings_before_or_after() {
        let loaded = load([
            "parley-server",
            "admin",
            "backup",
            "/tmp/b.db",
            "--data-dir",
            "/d",
        ])
        .unwrap();
        assert!(matches!(
            loaded.cli.command,
            Some(Command::Admin(AdminCommand::Backup { .. }))
        ));
        assert_eq!(loaded.cli.config.data_dir, PathBuf::from("/d"));
    }
}
