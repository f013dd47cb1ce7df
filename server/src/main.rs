//! `parley-server`: parses the command line and the configuration file, then runs the
//! relay or one operator command. Everything else lives in the library.
//!
//! A failure is printed as one line, `error: ` and the causes joined by `: `, and exits
//! with status 1, whatever `RUST_BACKTRACE` says: an operator's mistake (a wrong
//! directory, a bad value) is a sentence to act on, not a stack trace.

use std::process::ExitCode;

use anyhow::Context;
use parley_server::cli::{self, AdminCommand, Command, LoadError};
use parley_server::config::{Config, LogFormat};
use parley_server::store::{postgres, sqlite};
use parley_server::topology::StoreLocation;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let loaded = match cli::load(std::env::args_os()) {
        Ok(loaded) => loaded,
        Err(LoadError::Clap(e)) => e.exit(),
        Err(e) => return Err(e.into()),
    };
    let config = loaded.cli.config.clone();
    config.validate()?;
    match &loaded.cli.command {
        None => serve(config),
        Some(Command::PrintConfig) => {
            print!("{}", loaded.print_config());
            Ok(())
        }
        Some(Command::Admin(command @ (AdminCommand::Stats | AdminCommand::Backup { .. })))
            if config.store.is_postgres() =>
        {
            let name = match command {
                AdminCommand::Stats => "stats",
                _ => "backup",
            };
            anyhow::bail!(
                "admin {name} reads a SQLite database; this configuration's store is \
                 PostgreSQL: use pg_dump and PostgreSQL's own statistics (docs/operations.md, \
                 \"Cluster mode\")"
            )
        }
        Some(Command::Admin(AdminCommand::Stats)) => {
            let stats = sqlite::stats(config.sqlite_dir())?;
            print!("{}", parley_server::admin::render_stats(&stats));
            Ok(())
        }
        Some(Command::Admin(AdminCommand::Migrate)) => {
            let version = match &config.store {
                StoreLocation::Postgres(url) => {
                    admin_runtime()?.block_on(postgres::migrate(url.expose()))?
                }
                StoreLocation::Sqlite(_) => sqlite::migrate(config.sqlite_dir())?,
            };
            println!("schema version {version}");
            Ok(())
        }
        Some(Command::Admin(
            command @ (AdminCommand::Authority
            | AdminCommand::VerifyBusiness { .. }
            | AdminCommand::RevokeBusiness { .. }
            | AdminCommand::ListBusinesses
            | AdminCommand::Suspend { .. }
            | AdminCommand::Unsuspend { .. }
            | AdminCommand::SetTier { .. }),
        )) => {
            let run = parley_server::business_commands::run(command, &config);
            if let Some(out) = admin_runtime()?.block_on(run)? {
                print!("{out}");
            }
            Ok(())
        }
        Some(Command::Admin(AdminCommand::SelfSignedCert { hosts, out })) => {
            let written = parley_server::self_signed::write(hosts, out)?;
            let (cert, key) = (written.cert_file.display(), written.key_file.display());
            println!("certificate: {cert}\nprivate key: {key} (mode 0600)");
            println!("server: parley-server --tls-cert {cert} --tls-key {key}");
            println!(
                "client: parley --ca-file {cert} --server wss://{}:PORT ...",
                hosts[0]
            );
            Ok(())
        }
        Some(Command::Admin(AdminCommand::Backup { file })) => {
            let report = sqlite::backup(config.sqlite_dir(), file)?;
            println!(
                "backup written: {} ({} bytes, {} queued envelopes)",
                report.path.display(),
                report.bytes,
                report.queued_envelopes
            );
            Ok(())
        }
    }
}

/// A small runtime for one operator command.
fn admin_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs the relay until SIGINT or SIGTERM.
fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let admin = match config.admin_listen.0 {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (--admin-listen)"))?,
            ),
            None => None,
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        parley_server::run_with_admin(config, listener, admin, shutdown).await?;
        Ok(())
    })
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .with_context(|| format!("invalid --log filter '{}'", config.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutting down: draining connections");
    shutdown.cancel();
}
