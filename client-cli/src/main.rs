//! `parley`: the command-line chat client. Parses the command line, opens the profile,
//! runs the command, and turns errors into a message and a non-zero exit code.

mod args;
mod commands;
mod output;
mod paths;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use parley_sdk::store::ClientStore;
use parley_sdk::{ClientConfig, TlsTrust};

use args::{Args, Command};
use commands::Context;
use output::Output;

fn main() -> ExitCode {
    let args = Args::parse();
    let out = Output { json: args.json };
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(args, out)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if out.json {
                println!(
                    "{}",
                    serde_json::json!({"type": "error", "message": format!("{e:#}")})
                );
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, out: Output) -> anyhow::Result<()> {
    let path = paths::profile_database(args.home, &args.profile)?;
    let store = Arc::new(ClientStore::open(&path)?);
    let mut config = ClientConfig::new(args.server);
    if let Some(ca_file) = &args.ca_file {
        config.tls = TlsTrust::ca_file(ca_file)?;
    }
    let ctx = Context { store, config, out };
    match args.command {
        Command::Register { handle } => commands::register(&ctx, &handle).await,
        Command::Whoami => commands::whoami(&ctx),
        Command::Send { handle, text } => commands::send(&ctx, &handle, &text.join(" ")).await,
        Command::Inbox { wait } => commands::inbox(&ctx, wait).await,
        Command::Chat { handle } => commands::chat(&ctx, &handle).await,
        Command::Contacts => commands::contacts(&ctx),
        Command::SafetyNumber { handle } => commands::safety_number(&ctx, &handle),
        Command::Verify { handle } => commands::verify(&ctx, &handle),
        Command::DeleteAccount { yes } => commands::delete_account(&ctx, yes).await,
    }
}
