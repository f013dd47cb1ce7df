//! An operator's mistakes, made with the real `parley-server` binary (issue 18, points 4,
//! 5 and 7): a second server on a data directory in use, admin commands in a directory
//! without a database, a backup into a missing directory, a duration without a unit.
//! Each is refused with one sentence that names what is wrong, also with
//! `RUST_BACKTRACE=1` in the environment, and nothing is created where it should not be.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use parley_tests::server::server_binary;
use parley_tests::{Client, ServerProcess, TestAccount};

/// `parley-server ARGS` with a backtrace asked for, as on many machines.
fn server_command(args: &[&str]) -> Command {
    let mut command = Command::new(server_binary().unwrap());
    command
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `command`, which must exit within `limit` (killed and failed otherwise).
fn exits_within(mut command: Command, limit: Duration) -> Output {
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The standard error of a run that must fail with one line (no backtrace).
fn one_sentence_failure(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{what} succeeded: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{what}: {stderr}");
    assert!(!stderr.contains("backtrace"), "{what}: {stderr}");
    stderr
}

fn admin(data_dir: &Path, args: &[&str]) -> Output {
    let mut command = server_command(&["admin"]);
    command.args(args).arg("--data-dir").arg(data_dir);
    exits_within(command, Duration::from_secs(30))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_second_server_on_a_data_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = ServerProcess::start(dir.path(), "127.0.0.1:0".parse().unwrap(), &[]).unwrap();

    let mut second = server_command(&["--listen", "127.0.0.1:0", "--admin-listen", "off"]);
    second.arg("--data-dir").arg(dir.path());
    let out = tokio::task::spawn_blocking(move || exits_within(second, Duration::from_secs(30)))
        .await
        .unwrap();
    let stderr = one_sentence_failure(&out, "a second server");
    assert!(
        stderr.contains("already running") && stderr.contains(&dir.path().display().to_string()),
        "{stderr}"
    );

    // The first one serves on.
    let alice = TestAccount::new(Some("alice"), 1);
    Client::register(&first.url(), &alice).await.unwrap();
    first.kill().unwrap();
    // Once it is gone, the directory is free again.
    let again = ServerProcess::start(dir.path(), "127.0.0.1:0".parse().unwrap(), &[]).unwrap();
    Client::login(&again.url(), &alice).await.unwrap();
}

#[test]
fn regression_admin_commands_refuse_a_directory_without_a_database() {
    let parent = tempfile::tempdir().unwrap();
    let empty = parent.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let missing = parent.path().join("mistyped");
    let commands: &[&[&str]] = &[
        &["stats"],
        &["migrate"],
        &["authority"],
        &["list-businesses"],
        &[
            "verify-business",
            "acme",
            "--legal-name",
            "Acme Bank plc",
            "--display-name",
            "Acme Bank",
            "--domain",
            "acme.example",
            "--categories",
            "security_alert",
        ],
        &["revoke-business", "acme"],
        &["suspend", "acme"],
        &["unsuspend", "acme"],
        &["set-tier", "acme", "1"],
    ];
    for dir in [&empty, &missing] {
        for args in commands {
            let out = admin(dir, args);
            let stderr = one_sentence_failure(&out, &format!("admin {args:?}"));
            assert!(stderr.contains("--data-dir"), "admin {args:?}: {stderr}");
            assert!(out.stdout.is_empty(), "admin {args:?} printed a result");
        }
        let backup = parent.path().join("backup.db");
        let out = admin(dir, &["backup", backup.to_str().unwrap()]);
        one_sentence_failure(&out, "admin backup");
        assert!(!backup.exists());
    }
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "nothing created"
    );
    assert!(!missing.exists(), "nothing created");
}

#[test]
fn regression_a_backup_into_a_missing_directory_is_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), "127.0.0.1:0".parse().unwrap(), &[]).unwrap();
    let target = dir.path().join("no-such-dir").join("parley.db");
    let out = admin(dir.path(), &["backup", target.to_str().unwrap()]);
    let stderr = one_sentence_failure(&out, "a backup into a missing directory");
    assert!(
        stderr.contains("no-such-dir") && stderr.contains("does not exist"),
        "{stderr}"
    );
    server.kill().unwrap();
}

/// One way of giving the server a setting: arguments, and maybe a variable.
struct Attempt<'a> {
    args: &'a [&'a str],
    variable: Option<(&'a str, &'a str)>,
}

#[test]
fn regression_a_duration_without_a_unit_is_refused_showing_the_accepted_form() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("parley.toml");
    std::fs::write(&file, "retention = 30\n").unwrap();
    let data_arg = data.to_str().unwrap();
    let file_arg = file.to_str().unwrap();
    let runs = [
        Attempt {
            args: &["--retention", "30", "--data-dir", data_arg],
            variable: None,
        },
        Attempt {
            args: &["--data-dir", data_arg],
            variable: Some(("PARLEY_RETENTION", "30")),
        },
        Attempt {
            args: &["--config", file_arg, "--data-dir", data_arg],
            variable: None,
        },
        Attempt {
            args: &["--care-window", "24", "print-config"],
            variable: None,
        },
    ];
    for Attempt { args, variable } in runs {
        let mut command = server_command(&["--listen", "127.0.0.1:0", "--admin-listen", "off"]);
        command.args(args);
        if let Some((name, value)) = variable {
            command.env(name, value);
        }
        let out = exits_within(command, Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} {variable:?} was accepted");
        let number = if args.contains(&"24") { "24" } else { "30" };
        assert!(
            stderr.contains("has no unit")
                && stderr.contains(&format!("{number}s"))
                && stderr.contains(&format!("{number}d")),
            "{args:?} {variable:?}: {stderr}"
        );
        assert!(!stderr.contains("backtrace"), "{stderr}");
        assert!(!data.exists(), "nothing started");
    }

    // With units, print-config shows them.
    std::fs::write(&file, "retention = \"30d\"\n").unwrap();
    let out = exits_within(
        server_command(&[
            "--config",
            file_arg,
            "--sweep-interval",
            "90s",
            "print-config",
        ]),
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("retention = \"30d\""), "{printed}");
    assert!(printed.contains("sweep_interval = \"90s\""), "{printed}");
    assert!(printed.contains("care_window = \"24h\""), "{printed}");
}
