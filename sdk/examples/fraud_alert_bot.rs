//! A bank's fraud alerts: on a (simulated) suspicious card payment, send the customer a
//! card "Did you make this purchase?" with Yes / No, in category `security_alert`, and
//! act on the signed answer.
//!
//! ```text
//! fraud_alert_bot <server-urls> <profile-dir> --register <bot-handle>   # once
//! fraud_alert_bot <server-urls> <profile-dir> --customer <handle> [--wait DURATION]
//! ```
//!
//! The customer must have granted `security_alert` first
//! (`parley consent grant <bot-handle> --category security_alert`), else the relay
//! refuses the card and the bank falls back to a phone call. See `docs/bots.md`.

mod common;

use std::process::ExitCode;
use std::time::Duration;

use common::{finish, open_bot, Args, Error};
use parley_protocol::business::Category;
use parley_protocol::e2e::content::{Card, CardAction, CardField, CardId};
use parley_protocol::ids::AccountId;
use parley_sdk::bot::{BusinessBot, SendOutcome};
use parley_sdk::Event;

const USAGE: &str = "fraud_alert_bot <server-urls> <profile-dir> \
                     (--register <bot-handle> | --customer <handle> [--wait DURATION])";

const HELP: &str = "A bank's fraud alerts: sends the customer a card \"Did you make this \
purchase?\" (category security_alert) and acts on the signed answer.

  <server-urls>        the relay, e.g. ws://127.0.0.1:7878 (or a comma-separated list)
  <profile-dir>        where the bot keeps its identity and state (bot.db)
  --register HANDLE    register the bot's account once; the operator then verifies it
  --customer HANDLE    the customer to ask (who granted security_alert)
  --wait DURATION      how long to wait for the answer (default 5m)

See docs/bots.md.";

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse_or_exit(USAGE, HELP, &["register", "customer", "wait"]);
    finish(run(args).await)
}

async fn run(args: Args) -> Result<(), Error> {
    let customer = args.handle("customer");
    let wait = args.duration("wait", Duration::from_secs(300));
    if customer.is_none() && args.handle("register").is_none() {
        args.bad("--customer or --register is required");
    }
    let Some(mut bot) = open_bot(&args, "security_alert").await? else {
        return Ok(());
    };
    let Some(customer) = customer else {
        args.bad("--customer is required");
    };

    // The core banking system flags a payment (simulated).
    let transaction = format!("tx-{}", now_ms());
    println!("Suspicious payment {transaction} on {customer}'s card: asking them.");
    let card = Card {
        id: CardId([0; 16]), // set by the bot from the idempotency key
        title: "Did you make this purchase?".into(),
        fields: vec![
            field("Amount", "249.00 EUR"),
            field("Merchant", "Electro Shop Online"),
            field("Card", "**** 4711"),
        ],
        actions: vec![
            action("yes", "Yes, it was me"),
            action("no", "No, block my card"),
        ],
        expires_at_ms: Some(now_ms() + 15 * 60 * 1000),
        category: None, // set by the bot from the send's category
    };
    let key = format!("fraud:{transaction}");
    let outcome = send_with_retry(&bot, &customer, card, &key).await?;
    match outcome {
        SendOutcome::Accepted { .. } => println!("Card sent to {customer}: {outcome}."),
        SendOutcome::NoConsent => {
            println!("{customer} does not take security alerts from us: calling them instead.");
            bot.stop().await;
            return Ok(());
        }
        SendOutcome::Suspended => return Err("this business is suspended; stop sending".into()),
        other => return Err(format!("card not sent to {customer}: {other}").into()),
    }

    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let event = match tokio::time::timeout_at(deadline, bot.next_event()).await {
            Ok(Some(event)) => event,
            Ok(None) => return Err("the client stopped".into()),
            Err(_) => {
                println!(
                    "No answer in {} s: blocking the card as a precaution.",
                    wait.as_secs()
                );
                break;
            }
        };
        match event {
            Event::CardAnswered { from, answer, .. } => {
                // The SDK checked the signature, the digest of the card we sent, the
                // offered action and the expiry. Keep the answer: it is evidence.
                let verdict = if answer.action == "yes" {
                    "Thank you: the payment goes through."
                } else {
                    "Your card is now blocked. A new card is on its way."
                };
                println!(
                    "{} answered \"{}\" (signature checked against their identity key).",
                    who(&bot, &from.account),
                    answer.action
                );
                // Answering opened the 24 h care window: a `conversation` reply is allowed.
                let reply = bot
                    .send_text(
                        &customer,
                        verdict,
                        Category::Conversation,
                        &format!("{key}:reply"),
                    )
                    .await?;
                println!("Reply to {customer}: {reply}.");
                break;
            }
            Event::InvalidCardAnswer { reason, .. } => {
                println!("An answer was refused ({reason}); still waiting.");
            }
            Event::ConsentChanged { user, in_force, .. } => {
                println!("{} now consents to: {in_force}", who(&bot, &user));
            }
            _ => {}
        }
    }
    bot.stop().await;
    Ok(())
}

/// Sends the card, waiting out `rate_limited` a few times.
async fn send_with_retry(
    bot: &BusinessBot,
    customer: &parley_protocol::ids::Handle,
    card: Card,
    key: &str,
) -> Result<SendOutcome, Error> {
    for _ in 0..3 {
        match bot
            .send_card(customer, card.clone(), Category::SecurityAlert, key)
            .await?
        {
            SendOutcome::RateLimited { retry_after } => tokio::time::sleep(retry_after).await,
            other => return Ok(other),
        }
    }
    Ok(bot
        .send_card(customer, card, Category::SecurityAlert, key)
        .await?)
}

/// `@handle` of an account the bot has talked to, else the start of its id.
fn who(bot: &BusinessBot, account: &AccountId) -> String {
    match bot.client().store().contact(account) {
        Ok(Some(contact)) if contact.handle.is_some() => {
            contact.handle.map(|h| h.to_string()).unwrap_or_default()
        }
        _ => format!("account {}…", &account.to_hex()[..16]),
    }
}

fn field(label: &str, value: &str) -> CardField {
    CardField {
        label: label.into(),
        value: value.into(),
    }
}

fn action(id: &str, label: &str) -> CardAction {
    CardAction {
        id: id.into(),
        label: label.into(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
