//! An airline: answers `status <flight>` in conversation, and broadcasts a delay notice
//! (category `transactional`) to the passengers of a delayed flight who opted in.
//!
//! ```text
//! airline_delay_bot <server-urls> <profile-dir> --register <bot-handle>   # once
//! airline_delay_bot <server-urls> <profile-dir> [--delay <flight> --passengers a,b,c]
//!                   [--serve DURATION]
//! ```
//!
//! Passengers opt in with `parley consent grant <bot-handle> --category transactional`
//! and ask with `parley send <bot-handle> status LH1234`. See `docs/bots.md`.

mod common;

use std::process::ExitCode;
use std::time::Duration;

use common::{finish, open_bot, Args, Error};
use parley_protocol::business::Category;
use parley_protocol::ids::Handle;
use parley_sdk::bot::{BotMessage, Pacing, SendOutcome};
use parley_sdk::Event;

const USAGE: &str = "airline_delay_bot <server-urls> <profile-dir> (--register <bot-handle> | \
                     [--delay <flight> --passengers a,b,c] [--serve DURATION])";

/// The operations system's view of a few flights (simulated).
const FLIGHTS: &[(&str, &str)] = &[
    ("LH1234", "delayed 45 min: new departure 14:35, gate B12"),
    ("LH2001", "on time: departure 09:10, gate A3"),
];

const HELP: &str = "An airline: broadcasts a delay notice (category transactional) to the \
passengers of a flight who opted in, and answers `status <flight>` in conversation.

  <server-urls>        the relay, e.g. ws://127.0.0.1:7878 (or a comma-separated list)
  <profile-dir>        where the bot keeps its identity and state (bot.db)
  --register HANDLE    register the bot's account once; the operator then verifies it
  --delay FLIGHT       broadcast FLIGHT's delay notice (e.g. LH1234)
  --passengers A,B,C   to these passengers' handles
  --serve DURATION     then answer `status <flight>` for this long (e.g. 5m)

See docs/bots.md.";

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse_or_exit(USAGE, HELP, &["register", "delay", "passengers", "serve"]);
    finish(run(args).await)
}

async fn run(args: Args) -> Result<(), Error> {
    let serve = args.duration("serve", Duration::ZERO);
    let Some(mut bot) = open_bot(&args, "transactional").await? else {
        return Ok(());
    };

    if let Some(flight) = args.value("delay") {
        let passengers = args
            .value("passengers")
            .unwrap_or_default()
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                Handle::parse(p).unwrap_or_else(|e| args.bad(&format!("--passengers {p}: {e}")))
            })
            .collect::<Vec<_>>();
        let notice = format!("Flight {flight} is {}.", status_of(flight));
        // One key per flight and notice: running this again reaches nobody twice.
        let report = bot
            .broadcast(
                &passengers,
                &BotMessage::Text(notice),
                Category::Transactional,
                &format!("delay:{flight}:1"),
                Pacing::default(),
            )
            .await?;
        for (passenger, outcome) in &report.results {
            let said = match outcome {
                SendOutcome::Accepted { .. } => "notified".to_owned(),
                SendOutcome::NoConsent => "not opted in (or not a passenger on Parley)".to_owned(),
                other => other.to_string(),
            };
            println!("{passenger}: {said}");
        }
        println!(
            "{} of {} notified.",
            report.accepted(),
            report.results.len()
        );
    }

    let until = tokio::time::Instant::now() + serve;
    println!("Answering `status <flight>` for {} s.", serve.as_secs());
    while let Ok(Some(event)) = tokio::time::timeout_at(until, bot.next_event()).await {
        let Event::Message {
            handle: Some(from),
            text,
            id,
            ..
        } = event
        else {
            continue;
        };
        let answer = match text.trim().split_once(' ') {
            Some((command, flight)) if command.eq_ignore_ascii_case("status") => {
                let flight = flight.trim().to_ascii_uppercase();
                format!("{flight}: {}", status_of(&flight))
            }
            _ => "Send `status <flight>`, e.g. `status LH1234`.".to_owned(),
        };
        // The passenger just wrote: a `conversation` reply is inside the care window.
        let outcome = bot
            .send_text(
                &from,
                &answer,
                Category::Conversation,
                &format!("reply:{id}"),
            )
            .await?;
        println!("{from} asked \"{text}\": answer {outcome}");
    }
    bot.stop().await;
    Ok(())
}

fn status_of(flight: &str) -> &'static str {
    FLIGHTS
        .iter()
        .find(|(f, _)| f.eq_ignore_ascii_case(flight))
        .map(|(_, s)| *s)
        .unwrap_or("unknown to us")
}
