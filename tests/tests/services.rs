//! The kit's throwaway services ([`TestPostgres`], [`TestNats`]) do what cluster tests
//! will rely on: they answer, keep their data and port across a stop (and a SIGKILL) and
//! a start, go silent when paused and come back on resume. Each test skips (one
//! `SKIPPED:` line) where the service is not installed, unless
//! `PARLEY_REQUIRE_SERVICES=1`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use parley_tests::nats::TestNats;
use parley_tests::postgres::TestPostgres;
use parley_tests::services::{is_alive, wait_until, PORT_RANGE};

/// How long a recovery (after resume or restart) may take before the test fails.
const RECOVERY: Duration = Duration::from_secs(10);

#[test]
fn postgres_answers_queries_in_database_parley() -> anyhow::Result<()> {
    let started = Instant::now();
    let Some(pg) = TestPostgres::start()? else {
        return Ok(());
    };
    eprintln!("PostgreSQL started in {:?}", started.elapsed());
    assert!(PORT_RANGE.contains(&pg.port()));
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{}/parley", pg.port())
    );
    assert_eq!(pg.query("select 1")?, "1");
    assert_eq!(
        pg.query("select current_database(), current_user")?,
        "parley|postgres"
    );
    assert_eq!(pg.query("show fsync")?, "on");
    assert_eq!(pg.query("show max_connections")?, "200");
    assert_eq!(pg.query("show listen_addresses")?, "127.0.0.1");
    Ok(())
}

#[test]
fn postgres_keeps_its_data_and_port_across_stop_kill_and_start_again() -> anyhow::Result<()> {
    let Some(pg) = TestPostgres::start()? else {
        return Ok(());
    };
    let port = pg.port();
    pg.query("create table t (id int primary key); insert into t values (1)")?;

    pg.stop()?;
    let refused = pg.query_within("select 1", RECOVERY);
    assert!(refused.is_err(), "a stopped server answered: {refused:?}");
    let started = Instant::now();
    pg.start_again()?;
    eprintln!("PostgreSQL started again in {:?}", started.elapsed());
    assert_eq!(pg.port(), port);
    assert_eq!(pg.query("select id from t")?, "1");

    // A committed row survives a SIGKILL of every PostgreSQL process (crash recovery).
    pg.query("insert into t values (2)")?;
    pg.kill()?;
    assert!(pg.query_within("select 1", RECOVERY).is_err());
    let started = Instant::now();
    pg.start_again()?;
    eprintln!(
        "PostgreSQL started again after SIGKILL in {:?}",
        started.elapsed()
    );
    assert_eq!(pg.query("select id from t order by id")?, "1\n2");
    assert!(pg.log().contains("database system was interrupted"));
    Ok(())
}

#[test]
fn a_paused_postgres_answers_nothing_and_recovers_on_resume() -> anyhow::Result<()> {
    let Some(pg) = TestPostgres::start()? else {
        return Ok(());
    };
    assert_eq!(pg.query("select 1")?, "1");
    pg.pause()?;
    // The kernel still completes the TCP handshake; the query gets no answer.
    let addr = SocketAddr::from(([127, 0, 0, 1], pg.port()));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    let paused = Instant::now();
    assert_eq!(pg.query_within("select 1", Duration::from_secs(1))?, None);
    assert!(paused.elapsed() >= Duration::from_secs(1));

    pg.resume()?;
    let resumed = Instant::now();
    wait_until(RECOVERY, "PostgreSQL answers after resume", || {
        Ok(pg.query_within("select 1", Duration::from_secs(1))? == Some("1".to_owned()))
    })?;
    eprintln!("PostgreSQL answered {:?} after resume", resumed.elapsed());
    Ok(())
}

#[test]
fn several_postgres_servers_run_side_by_side() -> anyhow::Result<()> {
    let Some(first) = TestPostgres::start()? else {
        return Ok(());
    };
    let started = Instant::now();
    let test = parley_tests::services::current_test_name();
    let others = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| TestPostgres::start_for(&test)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    eprintln!(
        "2 more PostgreSQL servers started in {:?}",
        started.elapsed()
    );
    let servers: Vec<TestPostgres> = std::iter::once(Some(first))
        .chain(others)
        .collect::<Option<_>>()
        .expect("PostgreSQL went missing between two starts");
    for (i, pg) in servers.iter().enumerate() {
        pg.query(&format!(
            "create table mine (n int); insert into mine values ({i})"
        ))?;
    }
    // Stopping one leaves the others alone.
    servers[0].stop()?;
    for (i, pg) in servers.iter().enumerate().skip(1) {
        assert_eq!(pg.query("select n from mine")?, i.to_string());
    }
    let ports: HashSet<u16> = servers.iter().map(TestPostgres::port).collect();
    assert_eq!(ports.len(), 3);
    Ok(())
}

#[test]
fn nats_sends_info_and_comes_back_on_the_same_port_after_stop_and_kill() -> anyhow::Result<()> {
    let started = Instant::now();
    let Some(nats) = TestNats::start()? else {
        return Ok(());
    };
    eprintln!("NATS started in {:?}", started.elapsed());
    let port = nats.port();
    assert!(PORT_RANGE.contains(&port));
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));
    assert_info(&nats)?;

    nats.stop()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    assert_eq!(
        refused.map(|_| ()).unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
    let started = Instant::now();
    nats.start_again()?;
    eprintln!("NATS started again in {:?}", started.elapsed());
    assert_eq!(nats.port(), port);
    assert_info(&nats)?;

    nats.kill()?;
    assert!(nats.info_within(Duration::from_secs(1)).is_err());
    nats.start_again()?;
    assert_info(&nats)?;
    Ok(())
}

#[test]
fn a_paused_nats_sends_no_info_until_resumed() -> anyhow::Result<()> {
    let Some(nats) = TestNats::start()? else {
        return Ok(());
    };
    assert_info(&nats)?;
    nats.pause()?;
    assert_eq!(nats.info_within(Duration::from_millis(500))?, None);
    nats.resume()?;
    let resumed = Instant::now();
    wait_until(RECOVERY, "NATS sends INFO after resume", || {
        Ok(nats
            .info_within(Duration::from_millis(500))?
            .is_some_and(|line| line.starts_with("INFO {")))
    })?;
    eprintln!("NATS answered {:?} after resume", resumed.elapsed());
    Ok(())
}

#[test]
fn nats_with_a_password_refuses_a_wrong_one() -> anyhow::Result<()> {
    let Some(nats) = TestNats::start_with_auth("parley", "s3cret")? else {
        return Ok(());
    };
    assert_eq!(
        nats.url(),
        format!("nats://parley:s3cret@127.0.0.1:{}", nats.port())
    );
    let info = nats
        .info_within(Duration::from_secs(2))?
        .expect("INFO banner");
    assert!(info.contains("\"auth_required\":true"), "{info}");
    let answer = |user: &str, pass: &str| -> anyhow::Result<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], nats.port()));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        let connect = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"user\":\"{user}\",\"pass\":\"{pass}\"}}\r\nPING\r\n"
        );
        stream.write_all(connect.as_bytes())?;
        // Read until PONG or -ERR, polling up to a deadline.
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 1024];
        while !(seen.contains("PONG") || seen.contains("-ERR")) && Instant::now() < deadline {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(seen)
    };
    let right = answer("parley", "s3cret")?;
    assert!(right.contains("PONG"), "{right}");
    let wrong = answer("parley", "wrong")?;
    assert!(wrong.contains("-ERR 'Authorization Violation'"), "{wrong}");
    Ok(())
}

#[test]
fn dropping_a_paused_server_leaves_no_process_and_no_directory() -> anyhow::Result<()> {
    if let Some(pg) = TestPostgres::start()? {
        let postmaster = pg.postmaster_pid()?;
        let data_dir = pg.data_dir();
        pg.pause()?;
        drop(pg);
        assert!(
            !is_alive(postmaster),
            "postmaster {postmaster} outlived drop"
        );
        assert!(!data_dir.exists(), "{} outlived drop", data_dir.display());
    }
    if let Some(nats) = TestNats::start()? {
        let pid = nats.pid().expect("running");
        nats.pause()?;
        drop(nats);
        assert!(!is_alive(pid), "nats-server {pid} outlived drop");
    }
    Ok(())
}

/// Asserts that a new connection reads the `INFO {` banner within 2 s.
fn assert_info(nats: &TestNats) -> anyhow::Result<()> {
    let line = nats.info_within(Duration::from_secs(2))?;
    assert!(
        line.as_deref().is_some_and(|l| l.starts_with("INFO {")),
        "no INFO banner: {line:?}\nlog:\n{}",
        nats.log()
    );
    Ok(())
}
