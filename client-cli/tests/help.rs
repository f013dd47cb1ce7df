//! `parley --help` explains every command and global option.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;

#[test]
fn help_lists_commands_and_global_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_parley"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for word in [
        "register",
        "whoami",
        "send",
        "inbox",
        "chat",
        "contacts",
        "safety-number",
        "verify",
        "unverify",
        "business",
        "consent",
        "block",
        "unblock",
        "report",
        "answer",
        "profile",
        "--authority",
        "--server",
        "--home",
        "--profile",
        "--json",
        "PARLEY_SERVER",
    ] {
        assert!(help.contains(word), "--help mentions {word}");
    }
    for command in [
        &["register"][..],
        &["send"],
        &["inbox"],
        &["chat"],
        &["business", "show"],
        &["consent", "grant"],
        &["consent", "revoke"],
        &["consent", "list"],
        &["consent", "export"],
        &["consent", "verify"],
        &["block"],
        &["unblock"],
        &["report"],
        &["answer"],
        &["profile", "set-name"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_parley"))
            .args(command)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{command:?} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).lines().count() > 3,
            "{command:?} --help explains"
        );
    }
    let send = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["send", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&send.stdout).contains("--category"));
}

#[test]
fn help_explains_failover_between_several_servers() {
    let out = Command::new(env!("CARGO_BIN_EXE_parley"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("fails over to the next"), "{help}");
    assert!(help.contains("comma-separated"), "{help}");
}

#[test]
fn several_servers_are_taken_repeated_or_as_a_comma_list_and_an_empty_one_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let whoami = |servers: &[&str], env: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_parley"));
        command.arg("whoami").arg("--home").arg(home.path());
        for server in servers {
            command.args(["--server", server]);
        }
        command.env_remove("PARLEY_SERVER");
        if let Some(env) = env {
            command.env("PARLEY_SERVER", env);
        }
        let out = command.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Accepted (the profile does not exist, which is the next thing checked).
    for (servers, env) in [
        (&["ws://127.0.0.1:1", "ws://127.0.0.1:2"][..], None),
        (&["ws://127.0.0.1:1, ws://127.0.0.1:2"], None),
        (&[], Some("ws://127.0.0.1:1,ws://127.0.0.1:2")),
    ] {
        let stderr = whoami(servers, env);
        assert!(
            stderr.contains("there is no profile"),
            "{servers:?} {env:?}: {stderr}"
        );
    }
    for (servers, env) in [
        (&["ws://127.0.0.1:1", ""][..], None),
        (&["ws://127.0.0.1:1,,ws://127.0.0.1:2"], None),
        (&[], Some("ws://127.0.0.1:1,")),
        (&["127.0.0.1:7878"], None),
    ] {
        let stderr = whoami(servers, env);
        assert!(
            stderr.contains("--server: "),
            "{servers:?} {env:?}: {stderr}"
        );
    }
}

#[test]
fn global_options_work_after_the_command_and_bad_profiles_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["whoami", "--json", "--profile", "nobody"])
        .arg("--home")
        .arg(home.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("there is no profile \"nobody\" yet; to create it, run: parley --profile nobody register <handle>"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(r#""type":"error""#), "{stdout}");

    let out = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["whoami", "--profile", "../escape"])
        .arg("--home")
        .arg(home.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid profile name"));
}
