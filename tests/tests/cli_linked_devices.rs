//! Linked devices in use, through a real server and the `parley` CLI (issue 15): a phone
//! profile links a laptop and a tablet, and from then on
//!
//! * a message to the account reaches all three devices, each of which drains and
//!   acknowledges its own queue, whether it was online or not;
//! * what one device sends shows on the others as the account's own message, and a
//!   contact verified on one is verified on the others;
//! * a sender whose view of the list is stale (the tablet was linked after Bob last
//!   wrote) has its send refused with the new list, and Bob's client checks it, makes the
//!   copies again and reaches the tablet by itself, saying loudly that Alice's devices
//!   changed.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use parley_tests::cli::CliUser;
use parley_tests::ServerProcess;
use serde_json::Value;

/// The texts of the messages `user`'s inbox prints (received ones).
fn received(user: &CliUser) -> Vec<String> {
    texts_of(&user.json(&["inbox"]), "message")
}

fn texts_of(lines: &[Value], kind: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["type"] == kind)
        .map(|l| l["text"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_every_device_and_what_one_sends_shows_on_the_others_as_mine() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), "127.0.0.1:0".parse().unwrap(), &[]).unwrap();
    let user = |profile| CliUser::new(home.path(), profile, &server.url()).unwrap();
    let (phone, laptop, tablet, bob) = (user("phone"), user("laptop"), user("tablet"), user("bob"));
    phone.run(&["register", "alice"]);
    bob.run(&["register", "bob"]);
    phone.link_device(&laptop, "laptop");
    phone.link_device(&tablet, "tablet");

    // All three are offline when Bob writes; each gets it from its own queue.
    bob.run(&["send", "@alice", "hello", "all", "of", "you"]);
    for device in [&phone, &laptop, &tablet] {
        assert_eq!(received(device), vec!["hello all of you"]);
    }
    // Acknowledged per device: the phone's ack took nothing from the others.
    bob.run(&["send", "@alice", "second"]);
    assert_eq!(received(&phone), vec!["second"]);
    assert_eq!(received(&phone), Vec::<String>::new(), "drained");
    assert_eq!(received(&tablet), vec!["second"]);
    assert_eq!(received(&laptop), vec!["second"]);

    // The phone answers; Bob gets it once, and the laptop and tablet show it as Alice's.
    phone.run(&["send", "@bob", "from", "my", "phone"]);
    assert_eq!(received(&bob), vec!["from my phone"]);
    for device in [&laptop, &tablet] {
        let lines = device.json(&["inbox"]);
        assert_eq!(
            texts_of(&lines, "sent_elsewhere"),
            vec!["from my phone"],
            "{lines:?}"
        );
        let shown = lines
            .iter()
            .find(|l| l["type"] == "sent_elsewhere")
            .unwrap();
        assert_eq!(shown["device"], 1);
        assert_eq!(shown["to"], "bob");
        // And in the conversation, as a message Alice sent.
        let history = device.json(&["history", "@bob"]);
        let mine: Vec<&Value> = history
            .iter()
            .filter(|m| m["text"] == "from my phone")
            .collect();
        assert_eq!(mine.len(), 1, "{history:?}");
        assert_eq!(mine[0]["mine"], true, "{history:?}");
    }

    // `devices` says when each device last logged in (to the day), to Alice alone.
    let listed = phone.json(&["devices"]);
    assert_eq!(listed.len(), 3, "{listed:?}");
    for device in &listed {
        assert!(device["last_seen_day_ms"].as_u64().is_some(), "{listed:?}");
    }

    // Alice compares safety numbers with Bob on her phone: her other devices take the mark.
    phone.run(&["verify", "@bob"]);
    for device in [&laptop, &tablet] {
        device.run(&["inbox"]);
        let contacts = device.json(&["contacts"]);
        let bob = contacts.iter().find(|c| c["handle"] == "bob").unwrap();
        assert_eq!(bob["verified"], true, "{contacts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_sender_is_told_the_new_list_and_reaches_the_new_device_by_itself() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), "127.0.0.1:0".parse().unwrap(), &[]).unwrap();
    let user = |profile| CliUser::new(home.path(), profile, &server.url()).unwrap();
    let (phone, tablet, bob) = (user("phone"), user("tablet"), user("bob"));
    phone.run(&["register", "alice"]);
    bob.run(&["register", "bob"]);

    // Bob writes while Alice has one device: his client remembers that list.
    bob.run(&["send", "@alice", "before"]);
    assert_eq!(received(&phone), vec!["before"]);

    // Alice links a tablet after Bob last looked. His next send is refused as stale; his
    // client checks the new list, encrypts for the tablet too, and sends again.
    phone.link_device(&tablet, "tablet");
    let sent = bob.output(&["send", "@alice", "after"]);
    assert!(sent.status.success(), "{sent:?}");
    let stderr = String::from_utf8_lossy(&sent.stderr);
    assert!(
        stderr.contains("The devices of @alice changed: device 2 added"),
        "no loud line about Alice's new device: {stderr}"
    );
    assert_eq!(received(&tablet), vec!["after"]);
    assert_eq!(received(&phone), vec!["after"]);

    // The next send goes straight to both.
    bob.run(&["send", "@alice", "again"]);
    assert_eq!(received(&tablet), vec!["again"]);
}
