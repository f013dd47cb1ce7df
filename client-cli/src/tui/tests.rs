//! The view as a person meets it, without a terminal: app state and keys in, the screen
//! read back from ratatui's test backend (80 × 24, and resized).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use parley_protocol::business::{BusinessCertificate, Category, CategorySet};
use parley_protocol::e2e::content::{Card, CardAction, CardField, CardId};
use parley_protocol::ids::{AccountId, Handle, MessageId};
use parley_sdk::store::{MessageState, SendStatus};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::app::{Action, App, Input, Options, Overlay};
use super::model::{Body, Conversation, Entry, PeerView};
use super::view;
use crate::commands::moderation;
use crate::local_time::LocalTime;

/// 2026-12-05 09:00 UTC.
const T0: u64 = 1_796_461_200_000;
const MINUTE: u64 = 60_000;

fn account(n: u8) -> AccountId {
    AccountId([n; 32])
}

fn id(n: u8) -> MessageId {
    MessageId([n; 16])
}

fn peer(n: u8, handle: &str) -> PeerView {
    PeerView {
        account: account(n),
        handle: Some(Handle::parse(handle).unwrap()),
        business: None,
        consent: CategorySet::EMPTY,
        safety_verified: false,
    }
}

fn text(n: u8, at_ms: u64, state: MessageState, body: &str) -> Entry {
    Entry {
        id: id(n),
        at_ms,
        body: Body::Text(body.to_owned()),
        state,
    }
}

fn card() -> Card {
    Card {
        id: CardId([9; 16]),
        title: "Did you make this purchase?".into(),
        fields: vec![
            CardField {
                label: "Amount".into(),
                value: "42.00 EUR".into(),
            },
            CardField {
                label: "Merchant".into(),
                value: "Coffee Shop".into(),
            },
        ],
        actions: vec![
            CardAction {
                id: "yes".into(),
                label: "Yes, it was me".into(),
            },
            CardAction {
                id: "no".into(),
                label: "No".into(),
            },
        ],
        expires_at_ms: None,
        category: Some(Category::SecurityAlert),
    }
}

fn bank() -> PeerView {
    PeerView {
        business: Some(BusinessCertificate {
            account: account(3),
            serial: 1,
            legal_name: "Acme Bank plc".into(),
            display_name: "Acme Bank".into(),
            domain: "acme.example".into(),
            categories: CategorySet::ALL,
            issued_at_ms: 0,
            expires_at_ms: u64::MAX,
        }),
        consent: CategorySet::of([Category::SecurityAlert]),
        ..peer(3, "acmebank")
    }
}

/// Bob (safety number verified; my messages delivered and read, two of his unread),
/// Acme Bank (a verified business, with a fraud card), Carol (nothing yet).
fn people() -> Vec<Conversation> {
    let bob = Conversation {
        peer: PeerView {
            safety_verified: true,
            ..peer(2, "bob")
        },
        entries: vec![
            text(1, T0, MessageState::Sent(SendStatus::Read), "Lunch today?"),
            text(2, T0 + MINUTE, MessageState::Seen, "Sure! Where?"),
            text(
                3,
                T0 + 2 * MINUTE,
                MessageState::Sent(SendStatus::Delivered),
                "The noodle place by the station, at half past twelve.",
            ),
            text(4, T0 + 3 * MINUTE, MessageState::Unread, "Perfect."),
            text(5, T0 + 4 * MINUTE, MessageState::Unread, "See you there"),
        ],
        unread: 2,
    };
    let bank = Conversation {
        peer: bank(),
        entries: vec![Entry {
            id: id(6),
            at_ms: T0 - 30 * MINUTE,
            body: Body::Card {
                card: card(),
                category: Some(Category::SecurityAlert),
                answered: None,
            },
            state: MessageState::Unread,
        }],
        unread: 1,
    };
    let carol = Conversation {
        peer: peer(4, "carol"),
        entries: vec![text(7, T0 - 24 * 60 * MINUTE, MessageState::Seen, "hi!")],
        unread: 0,
    };
    vec![carol, bank, bob]
}

fn app() -> App {
    App::new(
        people(),
        Options {
            bell: true,
            keep: 500,
        },
    )
}

fn key(code: KeyCode) -> Input {
    Input::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn ctrl(c: char) -> Input {
    Input::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        assert_eq!(app.handle(key(KeyCode::Char(c))), vec![]);
    }
}

/// The screen as lines of text.
fn screen(app: &App, width: u16, height: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|frame| {
            view::draw(
                frame,
                app,
                "@alice",
                &LocalTime::in_zone(jiff::tz::TimeZone::UTC),
            )
        })
        .unwrap();
    let buffer = terminal.backend().buffer();
    (0..height)
        .map(|y| {
            (0..width)
                .map(|x| buffer[(x, y)].symbol())
                .collect::<String>()
        })
        .collect()
}

fn shows(screen: &[String], text: &str) -> bool {
    screen.iter().any(|line| line.contains(text))
}

fn assert_shows(screen: &[String], text: &str) {
    assert!(
        shows(screen, text),
        "{text:?} is not on the screen:\n{}",
        screen.join("\n")
    );
}

#[test]
fn the_list_shows_unread_counts_badges_and_marks_at_80_by_24() {
    let app = app();
    let screen = screen(&app, 80, 24);
    assert_shows(&screen, "parley · @alice");
    assert_shows(&screen, "online");
    // Newest activity first: bob, then the bank, then carol.
    let row = |name: &str| screen.iter().position(|l| l.contains(name)).unwrap();
    assert!(row("@bob") < row("@acmebank") && row("@acmebank") < row("@carol"));
    assert_shows(&screen, " @bob ✓");
    assert!(
        screen[row("@bob")].contains("(2)"),
        "{}",
        screen[row("@bob")]
    );
    assert_shows(&screen, "@acmebank [B]");
    assert!(screen[row("@acmebank")].contains("(1)"));
    assert!(!screen[row("@carol")].contains('('));
    assert_shows(&screen, "No conversation open.");
    assert_shows(&screen, "Enter send");
    assert_eq!(screen.len(), 24);
}

#[test]
fn opening_a_conversation_marks_it_read_and_shows_times_and_states() {
    let mut app = app();
    assert_eq!(
        app.handle(key(KeyCode::Down)),
        vec![Action::MarkRead(account(2))]
    );
    let screen = screen(&app, 80, 24);
    assert_shows(&screen, "@bob · safety number verified");
    assert_shows(&screen, "── Sat 2026-12-05 ──");
    assert_shows(&screen, "09:00 you: Lunch today? · read");
    assert_shows(&screen, "09:01 @bob: Sure! Where?");
    assert_shows(&screen, "· delivered");
    assert_shows(&screen, "09:04 @bob: See you there");
    assert_shows(&screen, "Message @bob");
    // No unread count once open; opening it again owes nothing.
    let row = screen.iter().find(|l| l.contains("▸@bob ✓")).unwrap();
    assert!(!row.contains("(2)"), "{row}");
    assert_eq!(
        app.handle(key(KeyCode::Down)),
        vec![Action::MarkRead(account(3))]
    );
    assert_eq!(app.handle(key(KeyCode::Up)), vec![]);
    // Up from the top wraps to the end of the list.
    assert_eq!(app.handle(key(KeyCode::Up)), vec![]);
    let carol = self::screen(&app, 80, 24);
    assert_shows(&carol, "@carol · safety number not verified");
}

#[test]
fn enter_sends_the_line_and_receipts_move_its_state() {
    let mut app = app();
    app.handle(key(KeyCode::Down));
    type_text(&mut app, "on my way");
    assert_shows(&screen(&app, 80, 24), "on my way");
    let actions = app.handle(key(KeyCode::Enter));
    assert_eq!(
        actions,
        vec![Action::Send {
            to: Handle::parse("bob").unwrap(),
            account: account(2),
            text: "on my way".into(),
        }]
    );
    assert_eq!(app.editor().text(), "");
    app.handle(Input::Sent {
        to: account(2),
        entry: text(
            8,
            T0 + 5 * MINUTE,
            MessageState::Sent(SendStatus::Accepted),
            "on my way",
        ),
    });
    assert_shows(&screen(&app, 80, 24), "09:05 you: on my way · sent");
    for (status, word) in [
        (SendStatus::Delivered, "delivered"),
        (SendStatus::Read, "read"),
    ] {
        app.handle(Input::Status { id: id(8), status });
        assert_shows(
            &screen(&app, 80, 24),
            &format!("09:05 you: on my way · {word}"),
        );
    }
    // Nothing to send: an empty line and a line with no conversation open.
    assert_eq!(app.handle(key(KeyCode::Enter)), vec![]);
}

#[test]
fn a_message_in_another_conversation_rings_and_counts_the_open_one_is_read() {
    let mut app = app();
    app.handle(key(KeyCode::Down)); // bob
    let from_carol = text(9, T0 + 6 * MINUTE, MessageState::Unread, "are you coming?");
    let actions = app.handle(Input::Received {
        peer: peer(4, "carol"),
        entry: from_carol,
    });
    assert_eq!(actions, vec![Action::Bell]);
    let screen_now = screen(&app, 80, 24);
    let row = screen_now.iter().find(|l| l.contains("@carol")).unwrap();
    assert!(row.contains("(1)"), "{row}");
    // In the open conversation: shown and read at once, no bell.
    let actions = app.handle(Input::Received {
        peer: peer(2, "bob"),
        entry: text(10, T0 + 7 * MINUTE, MessageState::Unread, "running late"),
    });
    assert_eq!(actions, vec![Action::MarkRead(account(2))]);
    assert_shows(&screen(&app, 80, 24), "09:07 @bob: running late");
    // A stranger's first message starts a conversation; no bell when it is turned off.
    let mut quiet = App::new(
        people(),
        Options {
            bell: false,
            keep: 500,
        },
    );
    let actions = quiet.handle(Input::Received {
        peer: peer(5, "dave"),
        entry: text(11, T0 + 8 * MINUTE, MessageState::Unread, "hello?"),
    });
    assert_eq!(actions, vec![]);
    let screen = screen(&quiet, 80, 24);
    assert!(
        screen[2].contains("@dave") && screen[2].contains("(1)"),
        "{}",
        screen[2]
    );
}

#[test]
fn a_card_is_answered_by_key_with_the_number_of_its_action() {
    let mut app = app();
    // Without a card in the open conversation, the key says so.
    app.handle(key(KeyCode::Down));
    app.handle(ctrl('a'));
    assert_eq!(app.overlay(), None);
    assert_shows(&screen(&app, 80, 24), "no card to answer");
    app.handle(key(KeyCode::Down)); // the bank
    let screen_card = screen(&app, 80, 24);
    assert_shows(
        &screen_card,
        "@acmebank [verified business: Acme Bank, acme.example]",
    );
    assert_shows(&screen_card, "      +-- Did you make this purchase?");
    assert_shows(&screen_card, "sent a card (security_alert):");
    assert_shows(&screen_card, "+-- Did you make this purchase?");
    assert_shows(&screen_card, "|  Amount    42.00 EUR");
    assert_shows(&screen_card, "Ctrl-A to answer: 1 Yes, it was me   2 No");
    app.handle(ctrl('a'));
    assert_eq!(app.overlay(), Some(&Overlay::Card(id(6))));
    let overlay = screen(&app, 80, 24);
    assert_shows(&overlay, "Answer the card");
    assert_shows(&overlay, "1  Yes, it was me");
    assert_shows(&overlay, "2  No");
    // A number past the actions does nothing; a right one answers.
    assert_eq!(app.handle(key(KeyCode::Char('7'))), vec![]);
    assert_eq!(
        app.handle(key(KeyCode::Char('2'))),
        vec![Action::Answer {
            id: id(6),
            action: "no".into(),
        }]
    );
    assert_eq!(app.overlay(), None);
    app.handle(Input::Answered {
        id: id(6),
        action: "no".into(),
    });
    assert_shows(&screen(&app, 80, 24), "+-- answered: no");
    app.handle(ctrl('a'));
    assert_eq!(app.overlay(), None, "an answered card is not offered again");
}

#[test]
fn consent_and_block_from_the_view() {
    let mut app = app();
    app.handle(key(KeyCode::Down));
    app.handle(key(KeyCode::Down)); // the bank
    app.handle(ctrl('o'));
    let overlay = screen(&app, 80, 24);
    assert_shows(&overlay, "Consent for @acmebank");
    assert_shows(&overlay, "1  [x] security_alert");
    assert_shows(&overlay, "2  [ ] transactional");
    let bank = Handle::parse("acmebank").unwrap();
    assert_eq!(
        app.handle(key(KeyCode::Char('2'))),
        vec![Action::Consent {
            business: bank.clone(),
            grant: true,
            categories: CategorySet::of([Category::Transactional]),
        }]
    );
    app.handle(ctrl('o'));
    assert_eq!(
        app.handle(key(KeyCode::Char('1'))),
        vec![Action::Consent {
            business: bank.clone(),
            grant: false,
            categories: CategorySet::of([Category::SecurityAlert]),
        }]
    );
    app.handle(ctrl('o'));
    assert_eq!(
        app.handle(key(KeyCode::Char('0'))),
        vec![Action::Consent {
            business: bank.clone(),
            grant: false,
            categories: CategorySet::ALL,
        }]
    );
    app.handle(Input::ConsentChanged {
        account: account(3),
        in_force: CategorySet::EMPTY,
    });
    app.handle(ctrl('o'));
    assert_shows(&screen(&app, 80, 24), "1  [ ] security_alert");
    app.handle(key(KeyCode::Esc));
    assert_eq!(app.overlay(), None);

    app.handle(ctrl('b'));
    assert_shows(
        &screen(&app, 80, 24),
        "b  block: the server refuses its messages to you",
    );
    assert_eq!(
        app.handle(key(KeyCode::Char('b'))),
        vec![Action::Moderate {
            who: bank,
            action: moderation::Action::Block,
        }]
    );
    // Consent is only for businesses.
    app.handle(key(KeyCode::Up)); // bob
    app.handle(ctrl('o'));
    assert_eq!(app.overlay(), None);
    assert_shows(
        &screen(&app, 80, 24),
        "consent is only for verified businesses",
    );
}

#[test]
fn help_lists_every_key_and_unknown_commands_are_not_sent() {
    let mut app = app();
    app.handle(key(KeyCode::F(1)));
    let help = screen(&app, 80, 24);
    for (keys, _) in super::keys::HELP {
        assert_shows(&help, keys);
    }
    app.handle(key(KeyCode::Esc));
    app.handle(key(KeyCode::Down));
    type_text(&mut app, "/exti");
    assert_eq!(app.handle(key(KeyCode::Enter)), vec![]);
    assert_shows(&screen(&app, 80, 24), "unknown command /exti");
    assert_eq!(
        app.editor().text(),
        "/exti",
        "the line stays to be corrected"
    );
    app.handle(ctrl('u'));
    type_text(&mut app, "/open dave");
    assert_eq!(
        app.handle(key(KeyCode::Enter)),
        vec![Action::Open(Handle::parse("dave").unwrap())]
    );
    type_text(&mut app, "/help");
    app.handle(key(KeyCode::Enter));
    assert_eq!(app.overlay(), Some(&Overlay::Help));
    app.handle(key(KeyCode::Esc));
    type_text(&mut app, "/quit");
    assert_eq!(app.handle(key(KeyCode::Enter)), vec![Action::Quit]);
    assert_eq!(app.handle(ctrl('c')), vec![Action::Quit]);
}

#[test]
fn long_text_wraps_and_the_view_follows_a_resize() {
    let mut app = app();
    app.handle(key(KeyCode::Down));
    let long = "This message is long enough to wrap over several lines of the \
                conversation pane when the terminal is narrow, and every word of \
                it stays on the screen: nothing is cut at the edge.";
    let bob = people()[2].peer.clone();
    app.handle(Input::Received {
        peer: bob,
        entry: text(12, T0 + 9 * MINUTE, MessageState::Unread, long),
    });
    for (width, height) in [(80, 24), (60, 30), (50, 26)] {
        app.handle(Input::Resize { rows: height });
        let screen = screen(&app, width, height);
        assert_eq!(screen.len(), usize::from(height));
        // The conversation pane's text, unwrapped again.
        let list_width = usize::from((width / 4).clamp(18, 28));
        let pane: Vec<String> = screen
            .iter()
            .map(|l| {
                l.chars()
                    .skip(list_width + 1)
                    .collect::<String>()
                    .trim_end_matches(['│', ' '])
                    .trim()
                    .to_owned()
            })
            .collect();
        let joined = pane.join(" ");
        assert!(
            joined.contains(&format!("09:09 @bob: {long}")),
            "not all of it at {width}x{height}:\n{}",
            screen.join("\n")
        );
        let lines = pane
            .iter()
            .filter(|l| ["This", "wrap", "cut"].iter().any(|w| l.contains(w)));
        assert!(lines.count() >= 2, "it wraps at {width}x{height}");
    }
    // Smaller: the newest lines stay in view.
    assert_shows(&screen(&app, 44, 12), "edge.");
    // Tiny terminals draw without a panic.
    for (width, height) in [(20, 6), (1, 1), (80, 3)] {
        screen(&app, width, height);
    }
}

#[test]
fn the_connection_state_is_shown_when_lost_and_when_back() {
    let mut app = app();
    app.handle(Input::Connection(None));
    assert_eq!(app.notice(), None, "the first connection is no news");
    app.handle(Input::Connection(Some("connection refused".into())));
    let screen_lost = screen(&app, 80, 24);
    assert_shows(&screen_lost, "offline: connection refused");
    assert_shows(&screen_lost, "connection lost; reconnecting");
    app.handle(Input::Connection(None));
    let screen_back = screen(&app, 80, 24);
    assert_shows(&screen_back, "online");
    assert_shows(&screen_back, "connection back");
}

#[test]
fn a_paste_is_one_line_and_stops_at_the_message_limit() {
    let mut app = app();
    app.handle(key(KeyCode::Down));
    app.handle(Input::Paste("two\nlines".into()));
    assert_eq!(app.editor().text(), "two lines");
    let limit = parley_protocol::e2e::content::MAX_TEXT_BYTES;
    app.handle(Input::Paste("x".repeat(limit)));
    assert_eq!(app.editor().text().len(), limit);
    assert_shows(
        &screen(&app, 80, 24),
        &format!("the limit of one message ({limit} bytes)"),
    );
}

/// The README's screenshot is this rendering; `PARLEY_WRITE_SCREENSHOT=1` rewrites it.
#[test]
fn the_readme_screenshot_is_the_rendered_view() {
    let mut app = app();
    app.handle(key(KeyCode::Down));
    type_text(&mut app, "On my way!");
    let shot = screen(&app, 80, 24)
        .iter()
        .map(|l| l.trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n");
    let block = format!("{README_START}\n```text\n{shot}\n```\n{README_END}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (Some(start), Some(end)) = (readme.find(README_START), readme.find(README_END)) else {
        panic!("README.md has no {README_START} ... {README_END} block");
    };
    let current = &readme[start..end + README_END.len()];
    if std::env::var_os("PARLEY_WRITE_SCREENSHOT").is_some() {
        std::fs::write(&path, readme.replace(current, &block)).unwrap();
    } else {
        assert_eq!(
            current, block,
            "the README's screenshot is stale: run with PARLEY_WRITE_SCREENSHOT=1"
        );
    }
}

const README_START: &str = "<!-- parley tui screenshot: written by the test the_readme_screenshot_is_the_rendered_view -->";
const README_END: &str = "<!-- end of parley tui screenshot -->";
