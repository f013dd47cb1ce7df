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

/// Starts the server on a fresh data directory with `args`, expects it to refuse them and
/// stop; returns what it said.
fn refused(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = server()
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn invalid_values_are_refused_with_a_message_naming_them() {
    let stderr = refused(&["--max-envelope-bytes", "1000000"]);
    assert!(stderr.contains("max-envelope-bytes"), "{stderr}");

    let stderr = refused(&["--hold-deadline", "2m"]);
    assert!(
        stderr.contains("hold-deadline") && stderr.contains("60s"),
        "{stderr}"
    );

    let out = server().args(["--auth-timeout", "soon"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duration"));
}

#[test]
fn an_admin_listener_off_loopback_is_refused_unless_allowed() {
    let stderr = refused(&["--admin-listen", "0.0.0.0:0"]);
    assert!(
        stderr.contains("admin-listen") && stderr.contains("--admin-allow-remote"),
        "{stderr}"
    );
}

#[test]
fn a_config_file_is_merged_under_variables_and_flags_and_printed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("parley.toml");
    std::fs::write(
        &file,
        "max_connections = 100\nretention = \"7d\"\nwrite_timeout = \"3s\"\n",
    )
    .unwrap();
    let out = server()
        .arg("--config")
        .arg(&file)
        .args(["--write-timeout", "4s", "print-config"])
        .env("PARLEY_RETENTION", "2d")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.contains("max_connections = 100  # config file\n"),
        "{printed}"
    );
    assert!(
        printed.contains("retention = \"2d\"  # environment PARLEY_RETENTION\n"),
        "{printed}"
    );
    assert!(
        printed.contains("write_timeout = \"4s\"  # flag\n"),
        "{printed}"
    );
    assert!(
        printed.contains("durability = \"full\"  # default\n"),
        "{printed}"
    );
}

#[test]
fn unknown_keys_and_invalid_values_in_the_file_stop_the_server_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("parley.toml");
    for (text, expected) in [
        ("max_conections = 1\n", "unknown key `max_conections`"),
        (
            "keepalive_interval = \"often\"\n",
            "key `keepalive_interval`",
        ),
        ("max_envelope_bytes = 1000000\n", "max_envelope_bytes"),
        ("group_commit_max = 0\n", "group_commit_max"),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = server()
            .arg("--config")
            .arg(&file)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{text}: {stderr}");
        assert!(!dir.path().join("data").exists(), "nothing started");
    }
}

#[test]
fn the_example_configuration_in_deploy_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/parley.toml");
    let out = server()
        .args(["--config", example, "print-config"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.contains("listen = \"0.0.0.0:443\"  # config file\n"),
        "{printed}"
    );
}
