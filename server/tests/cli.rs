//! The `parley-server` binary's command line: help, and refusal of bad configuration.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;

fn server() -> Command {
    Command::new(env!("CARGO_BIN_EXE_parley-server"))
}

#[test]
fn help_explains_every_limit_and_its_environment_variable() {
    let out = server().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--data-dir",
        "--max-connections",
        "--auth-timeout",
        "--write-timeout",
        "--retention",
        "--max-envelope-bytes",
        "--durability",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
    assert!(help.contains("PARLEY_LISTEN") && help.contains("PARLEY_DATA_DIR"));
}

#[test]
fn invalid_values_are_refused_with_a_message_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = server()
        .args(["--listen", "127.0.0.1:0", "--max-envelope-bytes", "1000000"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max-envelope-bytes"), "{stderr}");

    let out = server().args(["--auth-timeout", "soon"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duration"));
}

#[test]
fn an_admin_listener_off_loopback_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let out = server()
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("admin-listen") && stderr.contains("--admin-allow-remote"),
        "{stderr}"
    );
}
