//! A standby instance of a business bot (issue 15, docs/bots.md §9), through a real server
//! (or, through the [`Deployment`] switch, a two-node cluster with the standby on the other
//! node than the active instance): the bank's bot runs on device 1 and links a standby,
//! device 2, into an empty profile with the SDK's `LinkInvite` / `NewDevice` (stopped while
//! it links: one profile, one connection). The person uses the real `parley` binary.
//!
//! One instance is active, the other takes over when it stops. Both run the same bot code,
//! which records what it handled (the card id of each answer, the message id of each
//! message) in a set both share and skips what is there, so nothing is acted on twice:
//!
//! * the active instance sends a card; the person answers it, the active instance blocks
//!   the card and says so, then stops;
//! * the person asks a question; the standby starts and works through its own queue,
//!   which holds everything since it was linked: the person's consent record, the card
//!   (a `sent` copy, kept in its table of cards sent), the answer (checked against that
//!   copy, and skipped as handled), the confirmation (a `sent` copy) and the question,
//!   which it answers;
//! * the person gets one confirmation, from device 1, and the answer, from device 2, both
//!   shown as the verified business;
//! * the former active instance, started again, finds the question and the standby's
//!   answer in its own queue and skips the question as handled.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parley_protocol::business::Category;
use parley_protocol::e2e::content::{Card, CardAction, CardField, CardId};
use parley_protocol::ids::{DeviceId, Handle, MessageId};
use parley_sdk::bot::{BusinessBot, SendOutcome};
use parley_sdk::link::{LinkInvite, NewDevice};
use parley_sdk::store::{ClientStore, SendStatus, SentCard};
use parley_sdk::{Client, ClientConfig, Event};
use parley_tests::cli::CliUser;
use parley_tests::deployment::Deployment;
use serde_json::Value;

const BANK: &str = "acmebank";
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);
/// Linking: both ends on connections of their own, on a loaded machine.
const LINK_TIMEOUT: Duration = Duration::from_secs(60);

const BLOCKED: &str = "We blocked your card; a new one is on its way.";
const QUESTION: &str = "is my card blocked now?";
const ANSWER: &str = "Yes: your card is blocked and a new one is on its way.";

/// Work a bot instance acts on once per account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Work {
    /// An answer to a card.
    Card(CardId),
    /// A message from a person.
    Message(MessageId),
}

/// What the bank has handled, in storage both instances reach (here a set they share; in a
/// deployment, a table in the bank's own database).
#[derive(Debug, Default)]
struct Handled(Mutex<HashSet<Work>>);

impl Handled {
    /// Records `work`; `false` when it was handled already, by either instance.
    fn claim(&self, work: Work) -> bool {
        self.0.lock().unwrap().insert(work)
    }
}

/// What an instance did with one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Did {
    /// Blocked the card a "no" answered, and told the person.
    Blocked(CardId),
    /// Answered a message.
    Replied(MessageId),
    /// Skipped work already handled.
    Skipped(Work),
    /// Nothing to do.
    Nothing,
}

/// The bank's bot, the same code in both instances: a "no" to a fraud card blocks the card
/// and says so; a question is answered in the care window. Each at most once per account.
async fn serve(bot: &BusinessBot, handled: &Handled, event: &Event) -> Did {
    match event {
        Event::CardAnswered { card, answer, .. } => {
            let work = Work::Card(card.id);
            if !handled.claim(work) {
                return Did::Skipped(work);
            }
            assert_eq!(answer.action, "no");
            let key = format!("blocked:{}", card.id.to_hex());
            let sent = bot
                .send_text(&handle("alice"), BLOCKED, Category::SecurityAlert, &key)
                .await
                .unwrap();
            assert!(sent.is_accepted(), "{sent:?}");
            Did::Blocked(card.id)
        }
        Event::Message {
            id, handle: from, ..
        } => {
            let work = Work::Message(*id);
            if !handled.claim(work) {
                return Did::Skipped(work);
            }
            let from = from.as_ref().expect("the person's verified handle");
            let key = format!("reply:{}", id.to_hex());
            let sent = bot
                .send_text(from, ANSWER, Category::Conversation, &key)
                .await
                .unwrap();
            assert!(sent.is_accepted(), "{sent:?}");
            Did::Replied(*id)
        }
        Event::InvalidCardAnswer { from, reason } => {
            panic!("an answer from {from:?} was refused: {reason}")
        }
        _ => Did::Nothing,
    }
}

/// Runs `bot` until `done` accepts what it saw (each event within [`EVENT_TIMEOUT`]);
/// returns every event with what the bot did with it, in order.
async fn run_until(
    bot: &mut BusinessBot,
    handled: &Handled,
    mut done: impl FnMut(&Event, Did) -> bool,
) -> Vec<(Event, Did)> {
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(EVENT_TIMEOUT, bot.next_event())
            .await
            .unwrap_or_else(|_| panic!("no event within {EVENT_TIMEOUT:?} after {seen:#?}"))
            .expect("the bot runs");
        let did = serve(bot, handled, &event).await;
        let stop = done(&event, did);
        seen.push((event, did));
        if stop {
            return seen;
        }
    }
}

fn handle(name: &str) -> Handle {
    Handle::parse(name).unwrap()
}

fn fraud_card() -> Card {
    Card {
        id: CardId([0; 16]),
        title: "Did you make this purchase?".into(),
        fields: vec![CardField {
            label: "Amount".into(),
            value: "249.00 EUR".into(),
        }],
        actions: vec![
            CardAction {
                id: "yes".into(),
                label: "Yes, it was me".into(),
            },
            CardAction {
                id: "no".into(),
                label: "No, block my card".into(),
            },
        ],
        expires_at_ms: None,
        category: None,
    }
}

fn of_type<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|v| v["type"] == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_bot_takes_over_when_the_active_one_stops_and_skips_what_it_handled() {
    let data = tempfile::tempdir().unwrap();
    let Some(deployment) = Deployment::start(data.path(), &[]).unwrap() else {
        return;
    };
    let dirs = tempfile::tempdir().unwrap();
    let (active_url, standby_url) = (deployment.url_for(0), deployment.url_for(1));
    let active_config = ClientConfig::new(active_url.clone());
    let standby_config = ClientConfig::new(standby_url.clone());
    let active_store = Arc::new(ClientStore::open(&dirs.path().join("active.db")).unwrap());
    let standby_store = Arc::new(ClientStore::open(&dirs.path().join("standby.db")).unwrap());
    let bank = Client::register(&active_config, active_store.clone(), Some(handle(BANK)))
        .await
        .unwrap();
    deployment
        .verify_business(BANK, "Acme Bank", "security_alert")
        .unwrap();
    let handled = Handled::default();

    // The bot runs on device 1, and stops while it links the standby into an empty profile.
    let mut active = BusinessBot::start(active_config.clone(), active_store.clone())
        .await
        .unwrap();
    run_until(&mut active, &handled, |e, _| matches!(e, Event::Drained)).await;
    active.stop().await;
    let invite = LinkInvite::open(&active_config, active_store.clone())
        .await
        .unwrap();
    assert_eq!(invite.next_device(), Some(DeviceId(2)));
    let joining = NewDevice::prepare(&standby_config, standby_store.clone(), &invite.code())
        .await
        .unwrap();
    let (linked, joined) = tokio::time::timeout(LINK_TIMEOUT, async {
        tokio::join!(
            async { invite.wait_for_join().await?.approve(Some("standby")).await },
            joining.join()
        )
    })
    .await
    .expect("linked in time");
    let (linked, joined) = (linked.unwrap(), joined.unwrap());
    assert_eq!(linked.device, DeviceId(2));
    assert_eq!(
        linked.list.device_ids().collect::<Vec<_>>(),
        [DeviceId(1), DeviceId(2)]
    );
    assert_eq!(joined.account, bank.account);
    assert_eq!(joined.device, DeviceId(2));
    assert_eq!(joined.handle, Some(handle(BANK)));

    // The active instance runs again. The person opts in; it gets her consent record.
    let mut active = BusinessBot::start(active_config, active_store.clone())
        .await
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let alice = CliUser::new(home.path(), "alice", &deployment.url_for(2)).unwrap();
    alice.run(&["register", "alice"]);
    alice.run(&["consent", "grant", BANK, "--category", "security_alert"]);
    run_until(&mut active, &handled, |e, _| {
        matches!(e, Event::ConsentChanged { .. })
    })
    .await;

    // It sends a card; she answers "no"; it blocks the card and tells her, then stops.
    let sent = active
        .send_card(
            &handle("alice"),
            fraud_card(),
            Category::SecurityAlert,
            "fraud:1",
        )
        .await
        .unwrap();
    let SendOutcome::Accepted { id: card_message } = sent else {
        panic!("{sent:?}")
    };
    let lines = alice.json(&["inbox"]);
    let cards = of_type(&lines, "card");
    assert_eq!(cards.len(), 1, "{lines:?}");
    assert_eq!(cards[0]["verified_business"], "Acme Bank");
    assert_eq!(cards[0]["id"], card_message.to_hex());
    alice.run(&["answer", &card_message.to_hex()[..8], "no"]);
    let by_active = run_until(&mut active, &handled, |_, did| {
        matches!(did, Did::Blocked(_))
    })
    .await;
    let Some((Event::CardAnswered { card, from, .. }, _)) = by_active.last() else {
        panic!("{by_active:#?}")
    };
    let (card, alice_account) = (card.clone(), from.account);
    // Her client stored the card (and said so) before she answered.
    assert!(
        by_active
            .iter()
            .any(|(e, _)| matches!(e, Event::Status { id, status, .. }
            if *id == card_message && *status == SendStatus::Delivered)),
        "{by_active:#?}"
    );
    active.stop().await;
    let lines = alice.json(&["inbox"]);
    let messages = of_type(&lines, "message");
    assert_eq!(messages.len(), 1, "{lines:?}");
    assert_eq!(messages[0]["text"], BLOCKED);
    assert_eq!(messages[0]["verified_business"], "Acme Bank");

    // She asks a question while only the standby could answer.
    alice.run(&["send", BANK, QUESTION]);

    // The standby starts and works through its own queue, which held everything since it
    // was linked.
    let mut standby = BusinessBot::start(standby_config, standby_store.clone())
        .await
        .unwrap();
    let by_standby = run_until(&mut standby, &handled, |_, did| {
        matches!(did, Did::Replied(_))
    })
    .await;
    standby.stop().await;
    let position = |what: &str, found: &dyn Fn(&Event, Did) -> bool| {
        let at: Vec<usize> = (0..by_standby.len())
            .filter(|&i| found(&by_standby[i].0, by_standby[i].1))
            .collect();
        assert_eq!(at.len(), 1, "{what} once in {by_standby:#?}");
        at[0]
    };
    let consent = position("her consent record", &|e, _| {
        matches!(e, Event::ConsentChanged { user, in_force, .. }
            if *user == alice_account && in_force.contains(Category::SecurityAlert))
    });
    let card_copy = position("the card as a sent copy", &|e, _| {
        matches!(e, Event::SentElsewhere { from, id, text, .. }
            if from.device == DeviceId(1) && *id == card_message && *text == card.title)
    });
    let answer = position("her answer, checked and skipped", &|e, did| {
        matches!(e, Event::CardAnswered { from, card: c, answer }
            if from.account == alice_account && *c == card && answer.action == "no")
            && did == Did::Skipped(Work::Card(card.id))
    });
    let confirmation = position("the confirmation as a sent copy", &|e, _| {
        matches!(e, Event::SentElsewhere { from, text, .. }
            if from.device == DeviceId(1) && text == BLOCKED)
    });
    let question = position("her question, answered", &|e, did| {
        matches!(e, Event::Message { text, .. } if text == QUESTION)
            && matches!(did, Did::Replied(_))
    });
    assert!(
        consent < card_copy && card_copy < answer && answer < confirmation,
        "{by_standby:#?}"
    );
    assert_eq!(question, by_standby.len() - 1);
    // Her receipt for the card reached the standby too, and moved no status there: a
    // status is the sending instance's.
    assert!(
        !by_standby
            .iter()
            .any(|(e, _)| matches!(e, Event::Status { .. })),
        "{by_standby:#?}"
    );
    // Its history holds what device 1 sent as its own, then her question and its answer.
    let history: Vec<(bool, String)> = standby_store
        .history(&alice_account, 10)
        .unwrap()
        .into_iter()
        .map(|m| (m.state.is_mine(), m.text))
        .collect();
    assert_eq!(
        history,
        [
            (true, card.title.clone()),
            (true, BLOCKED.to_owned()),
            (false, QUESTION.to_owned()),
            (true, ANSWER.to_owned()),
        ]
    );
    // The standby keeps the card as device 1 sent it, and now answered.
    let kept = standby_store.sent_card(&card.id).unwrap().unwrap();
    assert_eq!(
        kept,
        SentCard {
            to: alice_account,
            sender: Some(DeviceId(1)),
            card: card.clone(),
            answered: true,
        }
    );

    // She gets the answer from device 2, shown as the verified business; the confirmation
    // came once, from device 1.
    let lines = alice.json(&["inbox"]);
    let messages = of_type(&lines, "message");
    assert_eq!(messages.len(), 1, "{lines:?}");
    assert_eq!(messages[0]["text"], ANSWER);
    assert_eq!(messages[0]["from"], BANK);
    assert_eq!(messages[0]["category"], "conversation");
    assert_eq!(messages[0]["verified_business"], "Acme Bank");
    let on_her_device = ClientStore::open_read_only(&home.path().join("alice").join("client.db"))
        .unwrap()
        .inbox()
        .unwrap();
    let from_bank: Vec<(DeviceId, &str)> = on_her_device
        .iter()
        .filter(|m| m.from.account == bank.account && m.card.is_none())
        .map(|m| (m.from.device, m.text.as_str()))
        .collect();
    assert_eq!(
        from_bank,
        [(DeviceId(1), BLOCKED), (DeviceId(2), ANSWER)],
        "{on_her_device:#?}"
    );

    // The former active instance, started again, finds the question and the standby's
    // answer in its own queue, and skips the question as handled.
    let mut former = BusinessBot::start(ClientConfig::new(active_url), active_store.clone())
        .await
        .unwrap();
    let by_former = run_until(&mut former, &handled, |e, _| matches!(e, Event::Drained)).await;
    former.stop().await;
    let Event::Message { id: asked, .. } = &by_standby[question].0 else {
        unreachable!()
    };
    assert!(
        by_former
            .iter()
            .any(|(_, did)| *did == Did::Skipped(Work::Message(*asked))),
        "{by_former:#?}"
    );
    assert!(
        by_former
            .iter()
            .any(|(e, _)| matches!(e, Event::SentElsewhere { from, text, .. }
            if from.device == DeviceId(2) && text == ANSWER)),
        "{by_former:#?}"
    );
    let lines = alice.json(&["inbox"]);
    assert!(
        of_type(&lines, "message").is_empty(),
        "nothing twice: {lines:?}"
    );
    assert_eq!(deployment.panics(), Vec::<String>::new());
}
