//! `parley`: the command-line chat client. Parses the command line, opens the profile,
//! runs the command, and turns errors into a message and a non-zero exit code.

mod args;
mod beside;
mod chat;
mod commands;
mod explain;
mod line_edit;
mod local_time;
mod output;
mod paths;
mod render;
mod tui;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use parley_sdk::store::{ClientStore, Damaged};
use parley_sdk::{ClientConfig, SdkError, ServerList, TlsTrust};

use args::{
    Args, BusinessCommand, Command, ConsentCommand, DevicesCommand, ProfileCommand, SettingsCommand,
};
use commands::moderation::Action;
use commands::Context;
use output::Output;

fn main() -> ExitCode {
    let args = Args::parse();
    let authority = match args.authority.as_deref().map(parse_authority).transpose() {
        Ok(key) => key,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let json = args.json;
    let out = Output {
        json,
        authority,
        profile: (args.profile != args::DEFAULT_PROFILE).then(|| args.profile.clone()),
        days: Default::default(),
    };
    let parley = out.parley();
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(args, out)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = explain::refusal(&e)
                .or_else(|| explain::not_registered(&e, &parley))
                .unwrap_or_else(|| format!("{e:#}"));
            if json {
                let code = e
                    .downcast_ref::<parley_sdk::SdkError>()
                    .and_then(parley_sdk::SdkError::code)
                    .map(|code| code.as_str());
                println!(
                    "{}",
                    serde_json::json!({"type": "error", "message": message, "code": code})
                );
            }
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, out: Output) -> anyhow::Result<()> {
    let servers = ServerList::new(&args.server).context("--server")?;
    if let Command::Consent(ConsentCommand::Verify { file }) = &args.command {
        // Offline, and about a file: no profile is opened (or created).
        return commands::consent::verify(&out, file);
    }
    let path = paths::profile_database(args.home, &args.profile)?;
    let creates_profile = matches!(
        args.command,
        Command::Register { .. } | Command::Link { code: Some(_), .. }
    );
    if !creates_profile && !path.exists() {
        // Opening would create the profile: only `register` and `link CODE` make one.
        anyhow::bail!(
            "there is no profile {:?} yet; to create it, run: {} register <handle> (or, to \
             make it another device of an account you have elsewhere: {} link CODE)",
            args.profile,
            out.parley(),
            out.parley()
        );
    }
    // Only an explicit `register --replace-damaged-profile` replaces a damaged profile.
    let damaged = match args.command {
        Command::Register {
            replace_damaged_profile: true,
            ..
        } => Damaged::SetAside,
        _ => Damaged::Refuse,
    };
    let store = match ClientStore::open_with(&path, damaged) {
        Ok(store) => store,
        // Another process (an open chat) holds the profile: read beside it, or say what
        // to do (see `beside`).
        Err(SdkError::ProfileInUse) if beside::reads_only(&args.command) => {
            ClientStore::open_read_only(&path)?
        }
        Err(SdkError::ProfileInUse) => anyhow::bail!(beside::advice(&args.command, &out.parley())),
        Err(e) => return Err(e.into()),
    };
    let store = Arc::new(store);
    let mut config = ClientConfig::with_servers(servers);
    config.authority = out.authority;
    if let Some(ca_file) = &args.ca_file {
        config.tls = TlsTrust::ca_file(ca_file)?;
    }
    let ctx = Context { store, config, out };
    match args.command {
        Command::Register { handle, .. } => commands::register(&ctx, &handle).await,
        Command::Whoami => commands::whoami(&ctx),
        Command::Send {
            handle,
            text,
            category,
        } => commands::send(&ctx, &handle, &text.join(" "), category.as_deref()).await,
        Command::Inbox { wait } => commands::inbox(&ctx, wait).await,
        Command::Chat { handle } => commands::chat(&ctx, &handle).await,
        Command::History { handle, limit } => commands::history(&ctx, &handle, limit).await,
        Command::DeleteHistory { handle, all: _ } => {
            commands::delete_history(&ctx, handle.as_deref())
        }
        Command::Settings(SettingsCommand::ReadReceipts { state }) => {
            commands::read_receipts(&ctx, state.as_deref())
        }
        Command::Tui {
            handle,
            no_bell,
            keep,
        } => {
            tui::tui(
                &ctx,
                handle.as_deref(),
                tui::app::Options {
                    bell: !no_bell,
                    keep: keep.into(),
                },
            )
            .await
        }
        Command::Contacts => commands::contacts(&ctx),
        Command::SafetyNumber { handle } => commands::safety_number(&ctx, &handle),
        Command::Verify { handle } => commands::verify(&ctx, &handle).await,
        Command::Unverify { handle } => commands::unverify(&ctx, &handle).await,
        Command::DeleteAccount { yes } => commands::delete_account(&ctx, yes).await,
        Command::Business(BusinessCommand::Show { handle }) => {
            commands::business::show(&ctx, &handle).await
        }
        Command::Consent(command) => match command {
            ConsentCommand::Grant {
                handle,
                categories,
                expires_in_days,
            } => commands::consent::grant(&ctx, &handle, &categories, expires_in_days).await,
            ConsentCommand::Revoke { handle, categories } => {
                commands::consent::revoke(&ctx, &handle, &categories).await
            }
            ConsentCommand::List => commands::consent::list(&ctx),
            ConsentCommand::Export => commands::consent::export(&ctx).await,
            // Answered above, before a profile is opened.
            ConsentCommand::Verify { file } => commands::consent::verify(&ctx.out, &file),
        },
        Command::Block { handle } => {
            commands::moderation::moderate(&ctx, &handle, Action::Block).await
        }
        Command::Unblock { handle } => {
            commands::moderation::moderate(&ctx, &handle, Action::Unblock).await
        }
        Command::Report { handle } => {
            commands::moderation::moderate(&ctx, &handle, Action::Report).await
        }
        Command::Answer { message, action } => commands::answer(&ctx, &message, &action).await,
        Command::Devices { command: None } => commands::devices::list(&ctx).await,
        Command::Devices {
            command: Some(DevicesCommand::Remove { device }),
        } => commands::devices::remove(&ctx, device).await,
        Command::Link {
            code: Some(code), ..
        } => commands::link::join(&ctx, &code).await,
        Command::Link {
            code: None,
            name,
            yes,
        } => commands::link::show(&ctx, name.as_deref(), yes).await,
        Command::Profile(ProfileCommand::SetName { name, clear }) => {
            commands::set_name(&ctx, if clear { None } else { name }).await
        }
    }
}

/// Parses `--authority`: the verification authority's key as 64 hex digits.
fn parse_authority(text: &str) -> anyhow::Result<parley_protocol::business::AuthorityKey> {
    let bytes = hex::decode(text.trim().replace(' ', ""))
        .map_err(|_| anyhow::anyhow!("--authority: expected 64 hex digits"))?;
    parley_protocol::business::AuthorityKey::from_slice(&bytes)
        .ok_or_else(|| anyhow::anyhow!("--authority: expected 64 hex digits (32 bytes)"))
}
