//! The display names people set for themselves, as the relay last reported them when this
//! client resolved their handle (`resolved`'s `display_name`).
//!
//! A display name is a claim relayed by the server, not verified by anyone: it is shown
//! beside the handle (which this client resolved) and never instead of it, and a name
//! confusable with a verified business's is refused by the relay (protocol.md §14). What a
//! misbehaving relay might send is made printable here before it is kept: control and
//! bidirectional-override characters are dropped and the length is capped.

use parley_protocol::ids::AccountId;
use parley_protocol::limits::MAX_DISPLAY_NAME_BYTES;
use rusqlite::{params, OptionalExtension};

use super::{db, ClientStore};
use crate::error::SdkError;

impl ClientStore {
    /// Keeps (or, with `None` or nothing printable, forgets) `account`'s display name.
    pub fn remember_display_name(
        &self,
        account: &AccountId,
        name: Option<&str>,
    ) -> Result<(), SdkError> {
        let conn = self.lock();
        let account = account.as_bytes().as_slice();
        match name.and_then(printable) {
            Some(name) => conn.execute(
                "INSERT INTO display_names (account, name) VALUES (?1, ?2)
                 ON CONFLICT (account) DO UPDATE SET name = excluded.name",
                params![account, name],
            ),
            None => conn.execute(
                "DELETE FROM display_names WHERE account = ?1",
                params![account],
            ),
        }
        .map(|_| ())
        .map_err(db)
    }

    /// `account`'s display name, if the relay reported one.
    pub fn display_name(&self, account: &AccountId) -> Result<Option<String>, SdkError> {
        self.lock()
            .query_row(
                "SELECT name FROM display_names WHERE account = ?1",
                params![account.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)
    }
}

/// `name` without control or bidirectional-override characters, trimmed, at most
/// [`MAX_DISPLAY_NAME_BYTES`] (cut at a character boundary); `None` if nothing is left.
fn printable(name: &str) -> Option<String> {
    let mut kept = String::new();
    for c in name
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c))
    {
        if kept.len() + c.len_utf8() > MAX_DISPLAY_NAME_BYTES {
            break;
        }
        kept.push(c);
    }
    let kept = kept.trim();
    (!kept.is_empty()).then(|| kept.to_owned())
}

/// Characters that reorder the text around them (U+202A-U+202E, U+2066-U+2069, marks).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn names_are_kept_printable_and_forgotten_when_cleared() {
        let store = ClientStore::in_memory().unwrap();
        let bob = AccountId([2; 32]);
        assert_eq!(store.display_name(&bob).unwrap(), None);
        store
            .remember_display_name(&bob, Some("  Bob\u{1b}[2J \u{202e}Smith "))
            .unwrap();
        assert_eq!(
            store.display_name(&bob).unwrap().as_deref(),
            Some("Bob[2J Smith")
        );
        let long = "é".repeat(100);
        store.remember_display_name(&bob, Some(&long)).unwrap();
        assert_eq!(
            store.display_name(&bob).unwrap().map(|n| n.len()),
            Some(MAX_DISPLAY_NAME_BYTES)
        );
        store.remember_display_name(&bob, Some("\u{7}")).unwrap();
        assert_eq!(store.display_name(&bob).unwrap(), None);
        store.remember_display_name(&bob, Some("Bob")).unwrap();
        store.remember_display_name(&bob, None).unwrap();
        assert_eq!(store.display_name(&bob).unwrap(), None);
    }
}
