//! `docs/protocol.md` against the code, beyond its hex vectors (`wire_vectors.rs`): the
//! things a developer writing a client from the document alone trips over when they
//! drift. Every section is in the contents list, every error code the encoder knows has
//! its row in §8, each client frame's reply column in §6 names only codes that exist,
//! every frame the server pushes is in the lifecycle diagram of §5, and no line outside
//! the code blocks is debris.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

const DOCUMENT: &str = include_str!("../../docs/protocol.md");

/// The codes `ErrorCode::as_str` writes, read from its source so that a new code cannot
/// be forgotten here.
const ERROR_CODE_SOURCE: &str = include_str!("../src/wire/error_code.rs");

fn error_codes() -> Vec<&'static str> {
    let codes: Vec<&str> = ERROR_CODE_SOURCE
        .lines()
        .filter(|l| l.trim_start().starts_with("ErrorCode::") && l.contains("=> \""))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert!(
        codes.len() > 20,
        "read the codes from error_code.rs: {codes:?}"
    );
    codes
}

/// The document's lines outside fenced code blocks, with their line numbers.
fn prose() -> Vec<(usize, &'static str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (n, line) in DOCUMENT.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((n + 1, line));
        }
    }
    out
}

/// The text of section `number` (from its `## number.` heading to the next `## `).
fn section(number: u32) -> &'static str {
    let heading = format!("\n## {number}. ");
    let start = DOCUMENT
        .find(&heading)
        .unwrap_or_else(|| panic!("no section {number}"));
    let rest = &DOCUMENT[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    &rest[..end]
}

/// A table's rows in `text` whose first cell is `` `name` ``: the other cells.
fn rows<'a>(text: &'a str, name: &str) -> Vec<Vec<&'a str>> {
    let first = format!("| `{name}` |");
    text.lines()
        .filter(|l| l.starts_with(&first))
        .map(|l| l.split('|').map(str::trim).skip(2).collect())
        .collect()
}

#[test]
fn every_section_is_in_the_contents_list() {
    let contents: String = DOCUMENT
        .lines()
        .skip_while(|l| !l.starts_with("Contents:"))
        .take_while(|l| !l.is_empty())
        .collect();
    let headings: Vec<&str> = DOCUMENT
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .collect();
    assert!(headings.len() >= 14, "{headings:?}");
    for heading in headings {
        // GitHub's anchor: lowercase, spaces to dashes, punctuation dropped.
        let anchor: String = heading
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        assert!(
            contents.contains(&format!("(#{anchor})")),
            "section \"{heading}\" is missing from the contents list"
        );
    }
}

#[test]
fn every_error_code_has_its_row_in_section_8() {
    let table = section(8);
    for code in error_codes() {
        let found = rows(table, code);
        assert_eq!(found.len(), 1, "§8 has one row for `{code}`");
        let connection = found[0].get(1).copied().unwrap_or_default();
        assert!(
            connection.starts_with("open") || connection.starts_with("closed"),
            "§8 says what happens to the connection after `{code}`: {connection:?}"
        );
    }
}

#[test]
fn the_reply_columns_of_section_6_name_only_real_codes_and_frames() {
    let table = section(6);
    let known: Vec<&str> = error_codes();
    let replies = [
        "authenticated",
        "prekeys_stored",
        "bundle",
        "resolved",
        "accepted",
        "account_deleted",
        "consent_updated",
        "business",
        "done",
        "devices",
        "link_opened",
        "link_joined",
        "link_sealed",
    ];
    let mut checked = 0;
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(reply) = cells.get(3) else { continue };
        for word in reply.split('`').skip(1).step_by(2) {
            // Also named: the limits behind `rate_limited`, and an ack's `error` `rid`.
            let other = word.ends_with("_per_minute")
                || word.ends_with("_per_hour")
                || word == "error"
                || word == "rid";
            assert!(
                known.contains(&word) || replies.contains(&word) || other,
                "§6 names `{word}` as a reply in {line}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 15, "read the §6 table ({checked} rows)");
    // The requests third-party clients found answered with codes the table did not list.
    let reply_of = |kind: &str| rows(table, kind)[0][1].to_owned();
    for (kind, code) in [
        ("register", "invalid_prekey"),
        ("upload_prekeys", "invalid_prekey"),
        ("fetch_bundle", "not_found"),
        ("fetch_bundle", "rate_limited"),
        ("send", "too_large"),
        ("send", "not_found"),
        ("send", "refused"),
        ("send", "id_reused"),
    ] {
        assert!(
            reply_of(kind).contains(&format!("`{code}`")),
            "§6: `{kind}` can be answered `{code}`"
        );
    }
}

#[test]
fn no_stray_line_outside_the_code_blocks() {
    for (n, line) in prose() {
        let token = line.trim();
        let lone_identifier = line.starts_with(' ')
            && !token.is_empty()
            && token
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        assert!(!lone_identifier, "line {n} is a stray identifier: {line:?}");
    }
}

#[test]
fn the_lifecycle_diagram_shows_every_pushed_frame() {
    let lifecycle = section(5);
    let diagram = &lifecycle[lifecycle.find("```text").expect("the diagram")..];
    let diagram = &diagram[..diagram[3..].find("```").expect("its end") + 3];
    let pushed: Vec<&str> = section(7)
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter(|l| l.split('|').nth(2).is_some_and(|rid| rid.trim() == "nil"))
        .filter_map(|l| l.split('`').nth(1))
        .collect();
    assert!(pushed.len() >= 4, "{pushed:?}");
    for kind in pushed {
        assert!(
            diagram.contains(kind),
            "§5's diagram does not show the pushed frame `{kind}`"
        );
    }
}
