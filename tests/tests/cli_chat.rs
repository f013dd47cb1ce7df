//! Two people chatting with the `parley` CLI, as processes, through a server process (or,
//! through the [`Deployment`] switch, through a two-node cluster, each person on another
//! node).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::process::{Output, Stdio};

use parley_tests::cli::CliUser;
use parley_tests::deployment::Deployment;
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

/// Alice and Bob, registered with the CLI on a deployment (on a cluster, on different
/// nodes), and what must live as long as they do.
struct TwoPeople {
    alice: CliUser,
    bob: CliUser,
    deployment: Deployment,
    /// The server's data directory and the CLI's home.
    _dirs: [tempfile::TempDir; 2],
}

impl TwoPeople {
    /// `None` when the cluster's services are not installed (the test is skipped).
    fn start() -> Option<TwoPeople> {
        let data = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let deployment = Deployment::start(data.path(), &[]).unwrap()?;
        let person = |profile, party| {
            CliUser::new(home.path(), profile, &deployment.url_for(party)).unwrap()
        };
        let (alice, bob) = (person("alice", 0), person("bob", 1));
        alice.run(&["register", "alice"]);
        bob.run(&["register", "@bob"]);
        Some(TwoPeople {
            alice,
            bob,
            deployment,
            _dirs: [data, home],
        })
    }
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
