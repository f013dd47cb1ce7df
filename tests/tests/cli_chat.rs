//! Two people chatting with the `parley` CLI, as processes, through a server process (or,
//! through the [`parley_tests::deployment::Deployment`] switch, through a two-node
//! cluster, each person on another node).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::process::{Output, Stdio};

use parley_tests::chat::{self, ChatProcess, CHAT_WAIT};
use parley_tests::cli::{CliUser, TwoPeople};
use parley_tests::server::ServerProcess;
use parley_tests::terminal::keys;
use serde_json::Value;

/// `inbox --json`: the messages' (from, text).
fn inbox(user: &CliUser) -> Vec<(Option<String>, String)> {
    messages(&user.run(&["inbox", "--json"]))
}

fn messages(out: &Output) -> Vec<(Option<String>, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|v| v["type"] == "message")
        .map(|v| {
            (
                v["from"].as_str().map(str::to_owned),
                v["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Every file under `dir`, concatenated (files that vanish while read are skipped: a
/// running PostgreSQL removes temporary files).
fn database_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(database_bytes(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn two_people_chat_with_the_cli_through_a_server_process() {
    let Some(people) = TwoPeople::start() else {
        return;
    };
    let (alice, bob) = (people.alice.clone(), people.bob.clone());
    let deployment = &people.deployment;

    // Both ways; bob is offline when alice writes, and the other way round.
    alice.run(&["send", "bob", "canary-one: hello bob"]);
    assert_eq!(
        inbox(&bob),
        vec![(Some("alice".into()), "canary-one: hello bob".into())]
    );
    bob.run(&["send", "@alice", "canary-two", "hi", "alice"]);
    assert_eq!(
        inbox(&alice),
        vec![(Some("bob".into()), "canary-two hi alice".into())]
    );
    // Nothing twice.
    assert_eq!(inbox(&bob), vec![]);

    // Online delivery: bob waits while alice writes.
    let waiting = bob
        .command(&["inbox", "--json", "--wait", "4s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    alice.run(&["send", "bob", "canary-three: are you there?"]);
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        messages(&out),
        vec![(Some("alice".into()), "canary-three: are you there?".into())]
    );

    // Errors a person can act on.
    let out = alice.command(&["send", "nobody", "x"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such user: @nobody"));

    // Bob re-registers with new keys under the same handle: alice is warned.
    bob.run(&["delete-account", "--yes"]);
    bob.run(&["register", "bob"]);
    let out = alice.run(&["send", "bob", "canary-four: is this still you?"]);
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning.contains("WARNING") && warning.contains("CHANGED"),
        "{warning}"
    );
    assert_eq!(
        inbox(&bob),
        vec![(
            Some("alice".into()),
            "canary-four: is this still you?".into()
        )]
    );

    // The relay never saw a plaintext.
    let stored = database_bytes(&deployment.database_dir());
    assert!(!stored.is_empty());
    for canary in ["canary-one", "canary-two", "canary-three", "canary-four"] {
        assert!(
            !contains(&stored, canary),
            "{canary} found in the server's database"
        );
    }
    let panics = deployment.panics();
    assert!(panics.is_empty(), "{panics:?}");
}

/// Which side speaks first after a verified contact's handle comes to name another
/// account.
#[derive(Clone, Copy, Debug)]
enum FirstAfterTheChange {
    /// The person writes to the handle.
    Person,
    /// The new account behind the handle writes to the person.
    NewIdentity,
}

/// Issue 18, point 1: Alice verified Bob; Bob's handle then names a new account (he
/// deleted his account and registered again). Whoever writes first, nothing goes to the
/// new account until Alice runs `unverify`, and the refusal names the handle.
fn a_verified_contact_stays_verified_after_a_change(first: FirstAfterTheChange) {
    let Some(people) = TwoPeople::start() else {
        return;
    };
    let (alice, bob) = (people.alice.clone(), people.bob.clone());
    let deployment = &people.deployment;
    alice.run(&["send", "bob", "before the change"]);
    assert_eq!(inbox(&bob).len(), 1);
    alice.run(&["verify", "bob"]);

    bob.run(&["delete-account", "--yes"]);
    bob.run(&["register", "bob"]);
    if let FirstAfterTheChange::NewIdentity = first {
        bob.run(&["send", "alice", "it is me, new keys"]);
        let out = alice.run(&["inbox"]);
        let warning = String::from_utf8_lossy(&out.stderr);
        assert!(
            warning.contains("WARNING") && warning.contains("CHANGED"),
            "{warning}"
        );
    }

    let refused = alice.fail(&["send", "bob", "for the old bob only"]);
    assert!(
        refused.contains("parley --profile alice unverify @bob") && !refused.contains("HANDLE"),
        "{first:?}: {refused}"
    );
    let contacts = alice.json(&["contacts"]);
    let verified_bob = contacts
        .iter()
        .find(|c| c["handle"] == "bob")
        .unwrap_or_else(|| panic!("{first:?}: @bob is still a contact: {contacts:?}"));
    assert_eq!(verified_bob["verified"], true, "{first:?}: {contacts:?}");
    assert_eq!(
        inbox(&bob),
        vec![],
        "{first:?}: nothing reached the new account"
    );

    alice.run(&["unverify", "bob"]);
    alice.run(&["send", "bob", "accepted change"]);
    assert_eq!(
        inbox(&bob),
        vec![(Some("alice".into()), "accepted change".into())]
    );
    let panics = deployment.panics();
    assert!(panics.is_empty(), "{panics:?}");
}

#[test]
fn regression_a_verified_contact_changed_is_refused_when_the_person_writes_first() {
    a_verified_contact_stays_verified_after_a_change(FirstAfterTheChange::Person);
}

#[test]
fn regression_a_verified_contact_changed_is_refused_when_the_new_identity_writes_first() {
    a_verified_contact_stays_verified_after_a_change(FirstAfterTheChange::NewIdentity);
}

/// Issue 18, point 6: a person's `send --category` is refused by the relay with
/// `not_a_business`, the CLI says why, and nothing reaches the recipient.
#[test]
fn regression_a_person_sending_with_a_category_is_refused_and_told_why() {
    let Some(people) = TwoPeople::start() else {
        return;
    };
    let (alice, bob) = (people.alice.clone(), people.bob.clone());

    let refused = alice.fail(&["send", "bob", "buy now", "--category", "marketing"]);
    assert!(
        refused.contains("--category is only for verified business accounts"),
        "{refused}"
    );
    let out = alice.output(&[
        "send",
        "bob",
        "buy now",
        "--category",
        "marketing",
        "--json",
    ]);
    assert!(!out.status.success());
    let lines = parley_tests::cli::json_lines(&out);
    assert_eq!(lines.last().unwrap()["code"], "not_a_business", "{lines:?}");

    alice.run(&["send", "bob", "without a category"]);
    assert_eq!(
        inbox(&bob),
        vec![(Some("alice".into()), "without a category".into())],
        "only the message without a category was delivered"
    );
}

/// Issue 17, `chat`: a local command or an unknown `/word` is never sent, an unknown
/// handle fails before the prompt, a third person's message can be answered with `/to`,
/// a line over the limit gets `send`'s sentence, and beside the open chat `contacts`
/// works while `send` says what to do.
#[test]
fn chat_commands_stay_local_and_third_parties_can_be_answered() {
    let Some(people) = TwoPeople::start() else {
        return;
    };
    let (alice, bob) = (people.alice.clone(), people.bob.clone());
    let carol = CliUser::new(&alice.home, "carol", &people.deployment.url_for(1)).unwrap();
    carol.run(&["register", "carol"]);

    let started = std::time::Instant::now();
    let refused = alice.fail(&["chat", "nosuchuser"]);
    assert_eq!(
        refused.trim(),
        "error: no such user: @nosuchuser",
        "{refused}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    let mut chat = ChatProcess::open(&alice, "bob");
    chat.type_line("/help");
    chat.wait_stderr("/to HANDLE TEXT");
    chat.type_line("/shrug whatever");
    chat.wait_stderr("/shrug: not a chat command; nothing was sent.");
    chat.type_line(&"x".repeat(100_000));
    chat.wait_stderr("the message is 100000 bytes long and the limit is");
    chat.type_line("hello bob");
    chat.type_line("/to carol hi carol");
    chat.wait_stderr("(sent to @carol)");
    assert_eq!(
        inbox(&carol),
        vec![(Some("alice".into()), "hi carol".into())]
    );

    // Beside the open chat: reading works, a send says what to do.
    let contacts = alice.json(&["contacts"]);
    let handles: Vec<&str> = contacts
        .iter()
        .filter_map(|c| c["handle"].as_str())
        .collect();
    assert!(
        handles.contains(&"bob") && handles.contains(&"carol"),
        "{contacts:?}"
    );
    let shown = alice.run(&["history", "bob"]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("hello bob"),
        "history beside the open chat: {shown:?}"
    );
    let refused = alice.fail(&["send", "carol", "from another terminal"]);
    assert!(
        refused.contains("type the message in the open chat")
            && refused.contains("/to @carol TEXT")
            && !refused.contains("use --profile"),
        "{refused}"
    );

    // A third person writes: shown, with how to answer.
    carol.run(&["send", "alice", "hey alice, carol here"]);
    chat.wait_stdout("@carol: hey alice, carol here");
    chat.wait_stderr("/to @carol TEXT");
    assert!(chat.quit(), "chat left cleanly on /quit");

    assert_eq!(
        inbox(&bob),
        vec![(Some("alice".into()), "hello bob".into())],
        "only the typed message reached bob: no /help, no /shrug, no over-long line"
    );
}

/// Issue 17, `chat`: the chat says when the server goes away and when it is back, and
/// goes on sending after.
#[test]
fn chat_says_when_the_connection_is_lost_and_back() {
    if parley_tests::deployment::on_cluster() {
        return; // one server process is what this test kills and restarts
    }
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let server = ServerProcess::start(data.path(), any, &[]).unwrap();
    let addr = server.addr;
    let alice = CliUser::new(home.path(), "alice", &server.url()).unwrap();
    let bob = CliUser::new(home.path(), "bob", &server.url()).unwrap();
    alice.run(&["register", "alice"]);
    bob.run(&["register", "bob"]);

    let mut chat = ChatProcess::open(&alice, "bob");
    server.kill().unwrap();
    chat.wait_stderr("--- connection lost");
    let server = ServerProcess::start(data.path(), addr, &[]).unwrap();
    chat.wait_stderr("--- connection back");
    chat.type_line("after the restart");
    assert!(chat.quit());
    assert_eq!(
        inbox(&bob),
        vec![(Some("alice".into()), "after the restart".into())]
    );
    assert!(server.panics().is_empty());
}

/// Issue 17, `chat` on a terminal: a message that arrives while a line is being typed
/// is printed above it and the line is drawn again, whole; a pasted 5 000-character line
/// is sent whole (the terminal's line discipline would cut it at 4 095).
#[test]
fn chat_on_a_terminal_keeps_the_typed_line_and_a_long_paste_whole() {
    let Some(people) = TwoPeople::start() else {
        return;
    };
    let (alice, bob) = (people.alice.clone(), people.bob.clone());
    let mut chat = chat::on_a_terminal(&alice, "bob").unwrap();
    chat.press("half typed").unwrap();
    chat.wait_for_text("to @bob> half typed", CHAT_WAIT)
        .unwrap();
    bob.run(&["send", "alice", "incoming while typing"]);
    chat.wait_for(
        "the typed line drawn again below the message",
        CHAT_WAIT,
        |screen| {
            screen
                .rsplit_once("@bob: incoming while typing")
                .is_some_and(|(_, after)| after.contains("to @bob> half typed"))
        },
    )
    .unwrap();

    let long: String = (0..5000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    // Ctrl-U: the half-typed line goes.
    chat.press(keys::CTRL_U).unwrap();
    // Pasted as a terminal emulator writes a paste: in pieces, each once the pty has room
    // (its input buffer holds 4 KiB; here: once the previous piece is drawn, the prompt
    // row then ending with the piece's last characters).
    for end in (1000..=long.len()).step_by(1000) {
        chat.press(&long[end - 1000..end]).unwrap();
        let last = &long[end - 30..end];
        chat.wait_for(
            &format!("the prompt row ending {last:?}"),
            CHAT_WAIT,
            |screen| screen.lines().any(|row| row.trim_end().ends_with(last)),
        )
        .unwrap();
    }
    chat.press("\r/quit\r").unwrap();
    assert!(
        chat.wait_exit(CHAT_WAIT).unwrap(),
        "chat left cleanly on /quit"
    );
    assert_eq!(inbox(&bob), vec![(Some("alice".into()), long)]);
}
