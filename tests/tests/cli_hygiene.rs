//! Careless input and empty output, through the `parley` binary and a server process
//! (issue 17, "input and output hygiene"): each bad input gets one sentence and leaves
//! nothing behind, and hints name the profile in use.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;

use parley_protocol::e2e::content::MAX_TEXT_BYTES;
use parley_tests::cli::CliUser;
use parley_tests::ServerProcess;

/// A server, and Alice and Bob registered on it (profiles "alice" and "bob").
struct TwoPeople {
    alice: CliUser,
    bob: CliUser,
    server: ServerProcess,
    home: tempfile::TempDir,
    _data: tempfile::TempDir,
}

impl TwoPeople {
    fn start() -> TwoPeople {
        let data = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let server =
            ServerProcess::start(data.path(), "127.0.0.1:0".parse().unwrap(), &[]).unwrap();
        let person = |profile: &str| {
            let user = CliUser::new(home.path(), profile, &server.url()).unwrap();
            user.run(&["register", profile]);
            user
        };
        TwoPeople {
            alice: person("alice"),
            bob: person("bob"),
            server,
            home,
            _data: data,
        }
    }

    /// Another profile under the same home and server, not registered.
    fn profile(&self, name: &str) -> CliUser {
        CliUser::new(self.home.path(), name, &self.server.url()).unwrap()
    }
}

/// The texts of the messages `inbox --json` printed.
fn inbox(user: &CliUser) -> Vec<String> {
    user.json(&["inbox"])
        .iter()
        .filter(|v| v["type"] == "message")
        .map(|v| v["text"].as_str().unwrap().to_owned())
        .collect()
}

fn one_sentence(said: &str) {
    assert_eq!(said.trim().lines().count(), 1, "one sentence: {said}");
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn regression_a_message_over_the_limit_or_empty_is_refused_in_one_sentence() {
    let people = TwoPeople::start();
    let (alice, bob) = (&people.alice, &people.bob);

    let long = "x".repeat(100_000);
    let refused = alice.fail(&["send", "bob", &long]);
    one_sentence(&refused);
    assert!(
        refused.contains(&format!("the limit is {MAX_TEXT_BYTES} bytes"))
            && refused.contains("100000 bytes")
            && !refused.contains("encryption"),
        "{refused}"
    );
    for empty in ["", "   "] {
        let refused = alice.fail(&["send", "bob", empty]);
        one_sentence(&refused);
        assert!(refused.contains("the message is empty"), "{refused}");
    }
    // The longest text allowed goes through.
    let longest = "y".repeat(MAX_TEXT_BYTES);
    alice.run(&["send", "bob", &longest]);
    alice.run(&["send", "bob", "after the refusals"]);
    assert_eq!(
        inbox(bob),
        vec![longest, "after the refusals".to_owned()],
        "nothing refused was sent"
    );
}

#[test]
fn regression_an_http_server_url_gets_a_hint() {
    let home = tempfile::tempdir().unwrap();
    for (url, hint) in [
        ("http://127.0.0.1:7878", "use ws://127.0.0.1:7878"),
        ("https://chat.example", "use wss://chat.example"),
    ] {
        let user = CliUser::new(home.path(), "web", url).unwrap();
        let said = user.fail(&["register", "web"]);
        one_sentence(&said);
        assert!(said.contains(hint), "{url}: {said}");
    }
}

#[test]
fn regression_an_empty_inbox_says_so() {
    let people = TwoPeople::start();
    let out = people.bob.run(&["inbox"]);
    assert_eq!(stdout(&out).trim(), "No new messages.");
    people.alice.run(&["send", "bob", "now there is one"]);
    let out = people.bob.run(&["inbox"]);
    assert!(
        !stdout(&out).contains("No new messages."),
        "{}",
        stdout(&out)
    );
    assert!(
        people.bob.json(&["inbox"]).is_empty(),
        "--json prints no line"
    );
}

#[test]
fn regression_hints_name_the_profile_in_use() {
    let people = TwoPeople::start();
    let (alice, bob) = (&people.alice, &people.bob);
    alice.run(&["send", "bob", "hello"]);
    assert_eq!(inbox(bob).len(), 1);
    let out = alice.run(&["safety-number", "bob"]);
    assert!(
        stdout(&out).contains("run: parley --profile alice verify @bob"),
        "{}",
        stdout(&out)
    );
    let said = alice.fail(&["safety-number", "carol"]);
    assert!(
        said.contains("(parley --profile alice send @carol"),
        "{said}"
    );

    // The default profile is not named.
    let default = people.profile("default");
    default.run(&["register", "dee"]);
    default.run(&["send", "bob", "hello from dee"]);
    let out = default.run(&["safety-number", "bob"]);
    assert!(
        stdout(&out).contains("run: parley verify @bob"),
        "{}",
        stdout(&out)
    );
    // A profile whose account was deleted.
    bob.run(&["delete-account", "--yes"]);
    let said = bob.fail(&["whoami"]);
    one_sentence(&said);
    assert!(
        said.contains("not registered: run `parley --profile bob register <handle>`"),
        "{said}"
    );
}

#[test]
fn regression_a_person_blocked_by_a_person_is_not_told_about_categories() {
    let people = TwoPeople::start();
    let (alice, bob) = (&people.alice, &people.bob);
    alice.run(&["send", "bob", "first"]);
    bob.run(&["block", "alice"]);
    let refused = alice.fail(&["send", "bob", "second"]);
    one_sentence(&refused);
    assert!(
        refused.contains("not delivered: @bob does not accept messages from you")
            && !refused.contains("categor"),
        "{refused}"
    );
    assert_eq!(inbox(bob), vec!["first".to_owned()]);
}

#[test]
fn regression_a_command_on_a_missing_profile_leaves_no_directory() {
    let people = TwoPeople::start();
    let nobody = people.profile("nobody");
    for args in [
        &["send", "bob", "hi"][..],
        &["whoami"],
        &["inbox"],
        &["contacts"],
    ] {
        let refused = nobody.fail(args);
        one_sentence(&refused);
        assert!(
            refused.contains("no profile \"nobody\"")
                && refused.contains("parley --profile nobody register <handle>"),
            "{args:?}: {refused}"
        );
        assert!(
            !Path::new(&people.home.path().join("nobody")).exists(),
            "{args:?} left a profile directory"
        );
    }
    // `register` still creates it.
    nobody.run(&["register", "nobody"]);
    nobody.run(&["whoami"]);
}

#[test]
fn regression_the_display_name_a_person_sets_is_shown_beside_their_handle() {
    let people = TwoPeople::start();
    let (alice, bob) = (&people.alice, &people.bob);
    bob.run(&["profile", "set-name", "Bob Smith"]);
    alice.run(&["send", "bob", "hi"]);
    let contacts = stdout(&alice.run(&["contacts"]));
    assert!(contacts.contains("@bob \"Bob Smith\""), "{contacts}");
    let listed = alice.json(&["contacts"]);
    assert_eq!(listed[0]["display_name"], "Bob Smith", "{listed:?}");

    // Cleared: the next lookup forgets it.
    bob.run(&["profile", "set-name", "--clear"]);
    alice.run(&["send", "bob", "again"]);
    let contacts = stdout(&alice.run(&["contacts"]));
    assert!(!contacts.contains("Bob Smith"), "{contacts}");
}
