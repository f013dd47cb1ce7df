//! The conversation history and receipts between people, through the `parley` binary and
//! a server process (issue 17, "History" and "Receipts"): `history` shows a conversation
//! in order with the state of my messages (sent, delivered, read), from the profile's
//! own store when the server is gone; receipts come from the other person's client as
//! it stores and as the person views the conversation (`history`, `chat`), and read
//! receipts can be turned off; `delete-history` leaves no row of the conversation.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;

use parley_tests::cli::CliUser;
use parley_tests::ServerProcess;
use serde_json::Value;

/// A server, and people registered on it.
struct People {
    server: Option<ServerProcess>,
    home: tempfile::TempDir,
    data: tempfile::TempDir,
}

impl People {
    fn start() -> People {
        let data = tempfile::tempdir().unwrap();
        let server =
            ServerProcess::start(data.path(), "127.0.0.1:0".parse().unwrap(), &[]).unwrap();
        People {
            server: Some(server),
            home: tempfile::tempdir().unwrap(),
            data,
        }
    }

    fn url(&self) -> String {
        self.server.as_ref().unwrap().url()
    }

    fn person(&self, name: &str) -> CliUser {
        let user = CliUser::new(self.home.path(), name, &self.url()).unwrap();
        user.run(&["register", name]);
        user
    }

    /// The profile's SQLite file.
    fn database(&self, profile: &str) -> PathBuf {
        self.home.path().join(profile).join("client.db")
    }
}

/// `history HANDLE --json`: (mine, text, state) of each message, in order.
fn history(user: &CliUser, handle: &str) -> Vec<(bool, String, String)> {
    user.json(&["history", handle])
        .into_iter()
        .filter(|v| v["type"] == "history")
        .map(|v: Value| {
            (
                v["mine"].as_bool().unwrap(),
                v["text"].as_str().unwrap().to_owned(),
                v["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn mine(text: &str, state: &str) -> (bool, String, String) {
    (true, text.to_owned(), state.to_owned())
}

fn theirs(text: &str, state: &str) -> (bool, String, String) {
    (false, text.to_owned(), state.to_owned())
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn history_shows_the_conversation_in_order_with_sent_delivered_and_read_and_survives_restarts() {
    let mut people = People::start();
    let (alice, bob) = (people.person("alice"), people.person("bob"));

    alice.run(&["send", "bob", "one: hello bob"]);
    assert_eq!(history(&alice, "bob"), vec![mine("one: hello bob", "sent")]);

    // Bob's client stores it: a delivered receipt comes back.
    bob.run(&["inbox"]);
    assert_eq!(
        history(&alice, "bob"),
        vec![mine("one: hello bob", "delivered")]
    );

    // Bob views the conversation: read.
    let seen = stdout(&bob.run(&["history", "alice"]));
    assert!(seen.contains("@alice: one: hello bob"), "{seen}");
    assert!(
        !seen.contains("(delivered)"),
        "no state on their lines: {seen}"
    );
    // The read receipt is taken by alice's next command, and is not a message.
    let taken = alice.json(&["inbox"]);
    assert!(taken.is_empty(), "a receipt shows nothing: {taken:?}");
    assert_eq!(history(&alice, "bob"), vec![mine("one: hello bob", "read")]);

    // Bob answers; alice writes again; bob opens the chat, which shows the recent past
    // and reads the new message.
    bob.run(&["send", "alice", "two: hi alice"]);
    alice.run(&["send", "bob", "three: how are you?"]);
    let chat = bob.output_with_input(&["chat", "alice"], "/quit\n");
    assert!(
        chat.status.success(),
        "{}",
        String::from_utf8_lossy(&chat.stderr)
    );
    let chat = stdout(&chat);
    let order: Vec<usize> = ["one: hello bob", "two: hi alice", "three: how are you?"]
        .iter()
        .map(|text| {
            chat.find(text)
                .unwrap_or_else(|| panic!("{text} in {chat}"))
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {chat}"
    );
    assert!(chat.contains("me: two: hi alice"), "{chat}");

    // Bob's answer is new to alice the first time she views it, then seen.
    let mut expected = vec![
        mine("one: hello bob", "read"),
        theirs("two: hi alice", "unread"),
        mine("three: how are you?", "read"),
    ];
    assert_eq!(history(&alice, "bob"), expected);
    expected[1] = theirs("two: hi alice", "seen");
    assert_eq!(history(&alice, "bob"), expected);

    // The text view: date and time, who, the text, the state of mine.
    let text = stdout(&alice.run(&["history", "bob", "--limit", "2"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "--limit 2: {text}");
    assert!(lines[0].ends_with("@bob: two: hi alice"), "{text}");
    assert!(
        lines[1].ends_with("me: three: how are you?  (read)"),
        "{text}"
    );
    let date = lines[0].trim_start_matches('[');
    assert!(
        date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-' && date.contains(" UTC] "),
        "a date with the time: {text}"
    );

    // With the server gone, the history is the profile's own.
    people.server.take().unwrap().kill().unwrap();
    let offline = alice.output(&["history", "bob", "--json"]);
    assert!(offline.status.success());
    let stderr = String::from_utf8_lossy(&offline.stderr);
    assert!(
        stderr.contains("showing what this profile has stored"),
        "{stderr}"
    );
    let stored: Vec<(bool, String, String)> = parley_tests::cli::json_lines(&offline)
        .into_iter()
        .map(|v| {
            (
                v["mine"].as_bool().unwrap(),
                v["text"].as_str().unwrap().to_owned(),
                v["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(stored, expected);
    drop(people.data);
}

#[test]
fn with_read_receipts_off_a_message_stays_delivered() {
    let people = People::start();
    let (alice, bob) = (people.person("alice"), people.person("bob"));
    let off = stdout(&bob.run(&["settings", "read-receipts", "off"]));
    assert!(off.contains("Read receipts are off"), "{off}");

    alice.run(&["send", "bob", "are you reading this?"]);
    let seen = stdout(&bob.run(&["history", "alice"]));
    assert!(seen.contains("are you reading this?"), "{seen}");
    assert_eq!(
        history(&alice, "bob"),
        vec![mine("are you reading this?", "delivered")]
    );

    // On again: the next conversation view is read.
    bob.run(&["settings", "read-receipts", "on"]);
    alice.run(&["send", "bob", "and this?"]);
    bob.run(&["history", "alice"]);
    assert_eq!(
        history(&alice, "bob"),
        vec![
            mine("are you reading this?", "delivered"),
            mine("and this?", "read")
        ]
    );
}

#[test]
fn delete_history_leaves_no_row_of_the_conversation() {
    let people = People::start();
    let (alice, bob, carol) = (
        people.person("alice"),
        people.person("bob"),
        people.person("carol"),
    );
    alice.run(&["send", "bob", "to bob"]);
    alice.run(&["send", "carol", "to carol"]);
    bob.run(&["send", "alice", "from bob"]);
    carol.run(&["send", "alice", "from carol"]);
    alice.run(&["inbox"]);
    bob.run(&["inbox"]);
    let bob_account = bob.json(&["whoami"])[0]["account"]
        .as_str()
        .unwrap()
        .to_owned();

    let said = stdout(&alice.run(&["delete-history", "bob"]));
    assert_eq!(
        said.trim(),
        "Deleted 2 messages of the conversation with @bob from this profile (the other side \
         keeps its copy)."
    );
    let db = rusqlite::Connection::open(people.database("alice")).unwrap();
    let rows = |table: &str| -> i64 {
        db.query_row(
            &format!("SELECT COUNT(*) FROM {table} WHERE hex(account) = upper(?1)"),
            [&bob_account],
            |r| r.get(0),
        )
        .unwrap()
    };
    for table in ["messages", "receipts_due", "sent_status"] {
        assert_eq!(rows(table), 0, "rows of the conversation left in {table}");
    }
    assert!(history(&alice, "bob").is_empty());
    assert_eq!(
        history(&alice, "carol").len(),
        2,
        "the other conversation stays"
    );

    let unknown = alice.fail(&["delete-history", "nobody"]);
    assert_eq!(
        unknown.trim(),
        "error: no conversation with @nobody on this profile (`parley --profile alice \
         contacts` lists the people it has talked to)"
    );

    let all = stdout(&alice.run(&["delete-history", "--all"]));
    assert!(
        all.starts_with("Deleted 2 messages of every conversation"),
        "{all}"
    );
    let left: i64 = db
        .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
}

/// An open `chat` prints a line when a receipt moves one of my messages forward.
#[test]
fn an_open_chat_shows_my_message_delivered_then_read() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let people = People::start();
    let (alice, bob) = (people.person("alice"), people.person("bob"));
    let mut chat = alice
        .command(&["chat", "bob"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = chat.stdin.take().unwrap();
    let (lines, printed) = mpsc::channel();
    let stdout = BufReader::new(chat.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for_line = |wanted: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match printed.recv_timeout(left) {
                Ok(line) if line.contains(wanted) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line with {wanted:?} from the open chat"),
            }
        }
    };
    writeln!(input, "ping from the chat").unwrap();

    // Bob's client stores it as soon as it is there.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !bob
        .json(&["inbox"])
        .iter()
        .any(|v| v["text"] == "ping from the chat")
    {
        assert!(Instant::now() < deadline, "bob never got the message");
    }
    let delivered = wait_for_line("delivered: \"ping from the chat\"");
    assert!(delivered.ends_with("(to @bob)"), "{delivered}");
    bob.run(&["history", "alice"]);
    wait_for_line("read: \"ping from the chat\"");

    writeln!(input, "/quit").unwrap();
    assert!(chat.wait().unwrap().success());
}
