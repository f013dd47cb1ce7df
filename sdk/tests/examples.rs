//! The example bots' command lines (`cargo test` builds the examples next to this test):
//! `--help` is a usage text and exit code 0, a wrong command line one line and exit 2.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn example(name: &str, args: &[&str]) -> Output {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let binary: PathBuf = profile_dir.join("examples").join(name);
    Command::new(&binary)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{} runs: {e}", binary.display()))
}

#[test]
fn help_is_a_usage_text_and_bad_arguments_one_line_with_exit_code_2() {
    for name in ["fraud_alert_bot", "airline_delay_bot"] {
        for help in ["--help", "-h"] {
            let out = example(name, &[help]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(0), "{name} {help}");
            assert!(text.starts_with(&format!("usage: {name} ")), "{text}");
            assert!(text.contains("--register HANDLE"), "{text}");
        }
        for bad in [
            vec![],
            vec!["ws://127.0.0.1:7878"],
            vec!["ws://127.0.0.1:7878", "./profile", "--no-such-option"],
        ] {
            let out = example(name, &bad);
            let said = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name} {bad:?}: {said}");
            assert!(
                said.starts_with("error: ") && said.lines().count() == 1,
                "{said}"
            );
            assert!(!said.contains("Error: \""), "{said}");
        }
    }
}
