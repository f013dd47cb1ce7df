//! `parley link` through a real server, as two people at two terminals would run it: the
//! phone profile shows a code (`parley link --yes --json`), the laptop profile joins with
//! it (`parley --profile laptop link CODE`), and from then on the laptop is device 2 of
//! the same account; both list the two devices. A code works once and expires; a code
//! nobody opened, a malformed one, a profile that already holds an account and the
//! relay's device cap are refused in plain words. The relay never holds the account's
//! identity secret: no file under its data directory contains it. At a terminal (a
//! pseudo-terminal read through an emulator), `parley link` draws the QR code and asks
//! before it adds the device that joined: "n" turns it away, "y" adds it.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use parley_protocol::devices::LinkOffer;
use parley_sdk::store::ClientStore;
use parley_tests::cli::CliUser;
use parley_tests::terminal::{keys, Terminal};
use parley_tests::ServerProcess;
use rand_core::OsRng;
use serde_json::Value;

/// Long enough for a debug-built CLI on a loaded machine.
const LIMIT: Duration = Duration::from_secs(60);

const USED_OR_EXPIRED: &str =
    "this linking code was already used or has expired; run `parley link` again on your other device";

fn identity_secret(home: &Path, profile: &str) -> Vec<u8> {
    ClientStore::open_read_only(&home.join(profile).join("client.db"))
        .unwrap()
        .identity()
        .unwrap()
        .expect("an identity")
        .secret
        .to_vec()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The phone's `parley link --yes` running, and the code it shows.
fn show_code(phone: &CliUser, extra: &[&str]) -> (parley_tests::cli::RunningCli, String) {
    let mut args = vec!["link", "--yes"];
    args.extend_from_slice(extra);
    let mut showing = phone.spawn_json(&args).unwrap();
    let shown = showing.next_json(LIMIT).unwrap();
    assert_eq!(shown["type"], "link_code", "{shown}");
    assert!(shown["expires_at_ms"].as_u64().unwrap() > 0, "{shown}");
    let code = shown["code"].as_str().unwrap().to_owned();
    assert!(code.starts_with("parley-link:"), "{code}");
    (showing, code)
}

fn device_ids(listed: &[Value]) -> Vec<u64> {
    listed
        .iter()
        .map(|d| d["device"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_laptop_profile_joins_the_phones_account_as_device_2_and_the_relay_never_holds_the_key() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), "127.0.0.1:0".parse().unwrap(), &[]).unwrap();
    let phone = CliUser::new(home.path(), "phone", &server.url()).unwrap();
    let laptop = CliUser::new(home.path(), "laptop", &server.url()).unwrap();
    phone.run(&["register", "alice"]);

    // Without a terminal to ask on, and without --yes, nothing is opened.
    let refused = phone.fail(&["link"]);
    assert!(refused.contains("--yes"), "{refused}");

    let (showing, code) = show_code(&phone, &["--name", "laptop"]);
    let joined = laptop.json(&["link", &code]);
    assert_eq!(joined[0]["type"], "linked", "{joined:?}");
    assert_eq!(joined[0]["device"], 2);
    assert_eq!(joined[0]["handle"], "alice");
    let (ok, shown, stderr) = showing.finish(LIMIT).unwrap();
    assert!(ok, "the phone's parley link failed: {stderr}");
    let linked = shown.last().expect("device_linked");
    assert_eq!(linked["type"], "device_linked", "{shown:?}");
    assert_eq!(linked["device"], 2);
    assert_eq!(linked["name"], "laptop");
    assert_eq!(linked["list_version"], 1);

    // One account, two devices, each profile marking itself.
    let account = phone.json(&["whoami"])[0]["account"].clone();
    let me = laptop.json(&["whoami"]);
    assert_eq!(me[0]["account"], account);
    assert_eq!(me[0]["device"], 2);
    assert_eq!(
        identity_secret(home.path(), "phone"),
        identity_secret(home.path(), "laptop"),
        "the laptop holds the account's identity"
    );
    // `devices` logs in: the laptop authenticates as device 2.
    for (who, this) in [(&phone, 1), (&laptop, 2)] {
        let listed = who.json(&["devices"]);
        assert_eq!(device_ids(&listed), vec![1, 2], "{listed:?}");
        for device in &listed {
            assert_eq!(
                device["this_device"],
                device["device"] == this,
                "{listed:?}"
            );
            assert_eq!(device["list_version"], 1);
        }
        assert_eq!(listed[1]["name"], "laptop");
        assert!(listed[1]["linked_at_ms"].as_u64().unwrap() > 0);
    }
    let text = String::from_utf8_lossy(&laptop.run(&["devices"]).stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("device 2"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("\"laptop\"")
            && line.contains("linked 20")
            && line.ends_with("(this device)"),
        "{text}"
    );

    // Used once: a second device with the same code is turned away in plain words.
    let tablet = CliUser::new(home.path(), "tablet", &server.url()).unwrap();
    let again = tablet.fail(&["link", &code]);
    assert!(again.contains(USED_OR_EXPIRED), "{again}");

    // The relay carried the sealed hand-over, never the identity secret.
    let secret = identity_secret(home.path(), "phone");
    assert_eq!(secret.len(), 64);
    let files = files_under(data.path());
    assert!(!files.is_empty());
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        for part in [&secret[..], &secret[..32], &secret[32..]] {
            assert!(
                !bytes.windows(part.len()).any(|w| w == part),
                "{} holds identity secret bytes",
                file.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_unknown_and_malformed_codes_are_refused_in_plain_words() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        data.path(),
        "127.0.0.1:0".parse().unwrap(),
        &["--link-lifetime", "1s"],
    )
    .unwrap();
    let phone = CliUser::new(home.path(), "phone", &server.url()).unwrap();
    let laptop = CliUser::new(home.path(), "laptop", &server.url()).unwrap();
    phone.run(&["register", "alice"]);

    // Nobody joins within the lifetime: the phone gives up, and the code is dead.
    let (showing, code) = show_code(&phone, &[]);
    let (ok, _, stderr) = showing.finish(LIMIT).unwrap();
    assert!(!ok);
    assert!(stderr.contains("the linking code expired"), "{stderr}");
    let expired = laptop.output(&["link", &code, "--json"]);
    assert!(!expired.status.success());
    let said = parley_tests::cli::json_lines(&expired);
    assert_eq!(said[0]["code"], "link_unavailable", "{said:?}");
    assert_eq!(said[0]["message"], USED_OR_EXPIRED);

    // A well-formed code that no device ever opened.
    let never = LinkOffer::generate(&mut OsRng).code().encode();
    let refused = laptop.fail(&["link", &never]);
    assert!(refused.contains(USED_OR_EXPIRED), "{refused}");

    // Not a code at all.
    let refused = laptop.fail(&["link", "parley-link:NOT-A-CODE"]);
    assert!(refused.contains("not a Parley linking code"), "{refused}");

    // The laptop profile is still empty; the phone's is not, and is never overwritten.
    let refused = phone.fail(&["link", &never]);
    assert!(refused.contains("already holds an account"), "{refused}");
    assert_eq!(phone.json(&["whoami"])[0]["device"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_relays_device_cap_no_device_is_added() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        data.path(),
        "127.0.0.1:0".parse().unwrap(),
        &["--max-devices-per-account", "1"],
    )
    .unwrap();
    let phone = CliUser::new(home.path(), "phone", &server.url()).unwrap();
    let laptop = CliUser::new(home.path(), "laptop", &server.url()).unwrap();
    phone.run(&["register", "alice"]);

    let (showing, code) = show_code(&phone, &[]);
    let joining = laptop.output(&["link", &code, "--json"]);
    let (ok, shown, stderr) = showing.finish(LIMIT).unwrap();
    assert!(!ok, "{shown:?}");
    assert!(
        stderr.contains("as many devices as the server allows"),
        "{stderr}"
    );
    assert_eq!(
        shown.last().unwrap()["code"],
        "too_many_devices",
        "{shown:?}"
    );
    // The laptop was told the code is no longer available, and holds nothing.
    assert!(!joining.status.success());
    let said = parley_tests::cli::json_lines(&joining);
    assert_eq!(said.last().unwrap()["code"], "link_unavailable", "{said:?}");
    let listed = phone.json(&["devices"]);
    assert_eq!(device_ids(&listed), vec![1]);
}

/// `parley link --name laptop` at a 160 × 60 terminal, and the code it shows.
fn show_code_at_a_terminal(phone: &CliUser) -> (Terminal, String) {
    let terminal = Terminal::spawn(
        "phone",
        &phone.command(&["link", "--name", "laptop"]),
        160,
        60,
    )
    .unwrap();
    let screen = terminal
        .wait_for_text("Waiting for the new device", LIMIT)
        .unwrap();
    let code = screen
        .split_whitespace()
        .find(|word| word.starts_with("parley-link:"))
        .unwrap_or_else(|| panic!("no code on the screen:\n{screen}"))
        .to_owned();
    assert!(
        screen.contains('▀') && screen.contains('▄'),
        "a QR code in half blocks:\n{screen}"
    );
    (terminal, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_terminal_the_phone_shows_a_qr_code_and_asks_before_adding_the_device() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), "127.0.0.1:0".parse().unwrap(), &[]).unwrap();
    let phone = CliUser::new(home.path(), "phone", &server.url()).unwrap();
    let laptop = CliUser::new(home.path(), "laptop", &server.url()).unwrap();
    phone.run(&["register", "alice"]);

    // Declined: the laptop is turned away and the account keeps one device.
    let (mut terminal, code) = show_code_at_a_terminal(&phone);
    let joining = laptop.spawn_json(&["link", &code]).unwrap();
    terminal
        .wait_for_text(
            "as device 2 \"laptop\"? It will read and send your messages",
            LIMIT,
        )
        .unwrap();
    terminal.press("n").unwrap();
    terminal.press(keys::ENTER).unwrap();
    assert!(!terminal.wait_exit(LIMIT).unwrap());
    assert!(
        terminal.screen().contains("not linked: you declined"),
        "{}",
        terminal.screen()
    );
    let (ok, said, _) = joining.finish(LIMIT).unwrap();
    assert!(!ok);
    assert_eq!(said.last().unwrap()["code"], "link_unavailable", "{said:?}");
    assert_eq!(device_ids(&phone.json(&["devices"])), vec![1]);

    // Confirmed: the laptop becomes device 2.
    let (mut terminal, code) = show_code_at_a_terminal(&phone);
    let joining = laptop.spawn_json(&["link", &code]).unwrap();
    terminal.wait_for_text("[y/N]", LIMIT).unwrap();
    terminal.press("y").unwrap();
    terminal.press(keys::ENTER).unwrap();
    assert!(terminal.wait_exit(LIMIT).unwrap(), "{}", terminal.screen());
    assert!(
        terminal.screen().contains("Linked device 2 \"laptop\""),
        "{}",
        terminal.screen()
    );
    let (ok, said, stderr) = joining.finish(LIMIT).unwrap();
    assert!(ok, "{stderr}");
    assert_eq!(said.last().unwrap()["device"], 2, "{said:?}");
    assert_eq!(device_ids(&laptop.json(&["devices"])), vec![1, 2]);
}
