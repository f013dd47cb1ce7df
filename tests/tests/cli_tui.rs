//! `parley tui` as people use it: two full-screen clients in pseudo-terminals (80 × 24)
//! through a real server process, the screens read through a terminal emulator. Alice
//! types a message, Bob's view shows it, Alice's view shows it delivered and, once Bob
//! opens the conversation, read.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use parley_tests::cli::{CliUser, TwoPeople};
use parley_tests::terminal::{keys, Terminal};

/// How long a screen may take to show what a step expects.
const STEP: Duration = Duration::from_secs(20);

/// `parley tui ARGS` for `user`, in an 80 × 24 pseudo-terminal.
fn tui(user: &CliUser, args: &[&str]) -> Terminal {
    let mut all = vec!["tui"];
    all.extend(args);
    Terminal::spawn(&user.profile, &user.command(&all), 80, 24).unwrap()
}

/// The screen line that shows `text`.
fn line_with<'a>(screen: &'a str, text: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.contains(text))
        .unwrap_or_else(|| panic!("no line with {text:?}:\n{screen}"))
}

#[test]
fn alice_writes_in_the_tui_bob_sees_it_and_alice_sees_it_delivered_then_read() {
    let Some(people) = TwoPeople::start() else {
        return;
    };
    let (alice, bob) = (&people.alice, &people.bob);

    // Bob's view is open with nothing in it yet.
    let mut bob_view = tui(bob, &[]);
    bob_view
        .wait_for_text("No conversation open.", STEP)
        .unwrap();
    assert!(bob_view.alternate_screen());

    // Alice opens the conversation with bob and types.
    let mut alice_view = tui(alice, &["bob"]);
    alice_view.wait_for_text("Message @bob", STEP).unwrap();
    alice_view.press("hello bob, from the tui").unwrap();
    alice_view
        .wait_for_text("hello bob, from the tui", STEP)
        .unwrap();
    alice_view.press(keys::ENTER).unwrap();

    // Bob's list shows alice with one unread message (and the text is not shown yet:
    // the conversation is not open).
    let screen = bob_view
        .wait_for("alice with (1) unread", STEP, |s| {
            s.lines().any(|l| l.contains("@alice") && l.contains("(1)"))
        })
        .unwrap();
    assert!(!screen.contains("hello bob"), "{screen}");

    // Bob's client stored it: delivered, and not read while bob has not opened it.
    let screen = alice_view
        .wait_for_text("you: hello bob, from the tui · delivered", STEP)
        .unwrap();
    assert!(line_with(&screen, "you: hello bob").contains(" · delivered"));
    assert!(!screen.contains(" · read"), "{screen}");

    // Bob opens the conversation: he reads it, and alice's view says so.
    bob_view.press(keys::DOWN).unwrap();
    let screen = bob_view
        .wait_for_text("@alice: hello bob, from the tui", STEP)
        .unwrap();
    // Open (marked ▸), and no longer unread.
    assert!(!line_with(&screen, "│▸@alice").contains("(1)"), "{screen}");
    alice_view
        .wait_for_text("you: hello bob, from the tui · read", STEP)
        .unwrap();

    // Bob answers; alice has the conversation open, so it shows at once.
    bob_view.press("hi alice!").unwrap();
    bob_view.press(keys::ENTER).unwrap();
    alice_view.wait_for_text("@bob: hi alice!", STEP).unwrap();
    bob_view
        .wait_for_text("you: hi alice! · read", STEP)
        .unwrap();

    // A resize redraws the whole view at the new size.
    alice_view.resize(100, 30).unwrap();
    alice_view
        .wait_for("the view at 100 × 30", STEP, |s| {
            let lines: Vec<&str> = s.lines().collect();
            lines.len() >= 30
                && lines[29].contains("Enter send")
                && lines[0].trim_end().ends_with("online")
                && lines[0].trim_end().len() > 90
        })
        .unwrap();

    // Both leave with Ctrl-C: the process succeeds and the terminal is given back.
    for view in [&mut alice_view, &mut bob_view] {
        view.press(keys::CTRL_C).unwrap();
        assert!(view.wait_exit(STEP).unwrap(), "parley tui failed");
        assert!(!view.alternate_screen(), "the terminal was not restored");
    }

    // What the views showed is what `parley history` has.
    let history = alice.run(&["history", "bob"]);
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(history.contains("hello bob, from the tui"), "{history}");
    assert!(history.contains("hi alice!"), "{history}");
}

#[test]
fn without_a_terminal_or_with_an_unknown_handle_it_fails_before_the_screen_opens() {
    let Some(people) = TwoPeople::start() else {
        return;
    };
    // Without a terminal: says what to use instead.
    let error = people.alice.fail(&["tui", "bob"]);
    assert!(error.contains("parley tui needs a terminal"), "{error}");
    assert!(error.contains("--profile alice chat HANDLE"), "{error}");
    // In a terminal, an unknown handle: the error, and the terminal never taken over.
    let mut view = tui(&people.alice, &["nosuchuser"]);
    assert!(
        !view.wait_exit(STEP).unwrap(),
        "parley tui nosuchuser succeeded"
    );
    let screen = view.screen();
    assert!(!view.alternate_screen());
    assert!(
        screen.contains("error: no such user: @nosuchuser"),
        "{screen}"
    );
}
