//! A profile on disk, through the `parley` binary and a server process: private files,
//! a damaged database never silently replaced by a new identity, and a registration that
//! failed never looking like an account (issue 18, points 2 and 3).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use parley_tests::cli::CliUser;
use parley_tests::ServerProcess;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn server(data: &Path) -> ServerProcess {
    ServerProcess::start(data, "127.0.0.1:0".parse().unwrap(), &[]).unwrap()
}

/// The profile's directory and the files in it.
fn profile_files(user: &CliUser) -> (PathBuf, Vec<PathBuf>) {
    let dir = user.home.join(&user.profile);
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    (dir, files)
}

fn assert_private(user: &CliUser, when: &str) {
    let (dir, files) = profile_files(user);
    assert_eq!(mode(&dir), 0o700, "{when}: {}", dir.display());
    assert!(files.iter().any(|f| f.ends_with("client.db")), "{files:?}");
    for file in files {
        assert_eq!(mode(&file), 0o600, "{when}: {}", file.display());
    }
}

#[test]
fn regression_a_new_and_an_old_profile_are_private_to_the_user() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = server(data.path());
    let alice = CliUser::new(home.path(), "alice", &server.url()).unwrap();

    alice.run(&["register", "alice"]);
    assert_private(&alice, "a new profile");

    // A profile written by an older parley, or copied under a loose umask.
    let (dir, files) = profile_files(&alice);
    set_mode(&dir, 0o755);
    for file in &files {
        set_mode(file, 0o644);
    }
    alice.run(&["whoami"]);
    assert_private(&alice, "an old profile, once opened");
}

#[test]
fn regression_an_emptied_or_corrupted_profile_is_never_treated_as_new() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = server(data.path());
    let alice = CliUser::new(home.path(), "alice", &server.url()).unwrap();
    alice.run(&["register", "alice"]);
    let database = home.path().join("alice").join("client.db");

    for damage in [
        &b""[..],
        &b"not a database: the disk returned garbage here"[..],
    ] {
        std::fs::write(&database, damage).unwrap();
        for args in [&["whoami"][..], &["register", "alice2"][..]] {
            let refused = alice.fail(args);
            assert!(
                refused.contains(&database.display().to_string())
                    && refused.contains("--replace-damaged-profile"),
                "{args:?}: {refused}"
            );
            assert_eq!(refused.trim().lines().count(), 1, "one sentence: {refused}");
        }
        assert_eq!(std::fs::read(&database).unwrap(), damage, "left untouched");
    }

    // Asked explicitly, the damaged file is moved aside and a new identity registered.
    alice.run(&["register", "alice2", "--replace-damaged-profile"]);
    let out = alice.run(&["whoami"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("@alice2"));
    let aside = std::fs::read_dir(home.path().join("alice"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("client.db.damaged-")
        })
        .count();
    assert_eq!(aside, 1);
}

#[test]
fn regression_a_failed_register_is_not_shown_as_an_account() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();

    // No server listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("ws://{}", closed.local_addr().unwrap());
    drop(closed);
    let offline = CliUser::new(home.path(), "offline", &nowhere).unwrap();
    offline.fail(&["register", "bob"]);
    let whoami = offline.fail(&["whoami"]);
    assert!(
        whoami.contains("not registered")
            && whoami.contains("parley --profile offline register bob"),
        "{whoami}"
    );

    // The handle is taken: the server refused.
    let server = server(data.path());
    let bob = CliUser::new(home.path(), "bob", &server.url()).unwrap();
    bob.run(&["register", "bob"]);
    let other = CliUser::new(home.path(), "other", &server.url()).unwrap();
    let taken = other.fail(&["register", "bob"]);
    assert!(taken.contains("handle_taken"), "{taken}");
    let whoami = other.fail(&["whoami"]);
    assert!(whoami.contains("not registered"), "{whoami}");
    assert!(other
        .fail(&["send", "bob", "hi"])
        .contains("not registered"));

    // Another handle completes the registration, with the same key.
    other.run(&["register", "robert"]);
    let out = other.run(&["whoami"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("@robert"));
    // And the offline profile registers once a server is there.
    let offline = CliUser::new(home.path(), "offline", &server.url()).unwrap();
    offline.run(&["register", "bobby"]);
    offline.run(&["whoami"]);
}
