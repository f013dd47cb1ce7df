//! Printing for people or for machines (`--json`: one object per line on stdout).

use parley_protocol::business::{AuthorityKey, BusinessCertificate};
use parley_protocol::ids::{AccountId, DeviceId, Handle};
use parley_sdk::business_info::cached_verdict;
use parley_sdk::store::{ClientStore, InboxEntry};
use serde_json::{json, Value};

use crate::local_time::{self, DayChanges};
use crate::render;

/// How to print.
#[derive(Clone, Debug)]
pub struct Output {
    /// JSON lines instead of text.
    pub json: bool,
    /// The configured verification authority (else the pinned one) for badges.
    pub authority: Option<AuthorityKey>,
    /// `--profile`, when it is not the default one: hints name it.
    pub profile: Option<String>,
    /// The day of the last message printed (a heading goes where the day changes).
    pub days: std::sync::Arc<DayChanges>,
}

impl Output {
    /// `parley`, with `--profile NAME` when the profile in use is not the default: the
    /// start of every command a hint tells the person to run.
    pub fn parley(&self) -> String {
        match &self.profile {
            Some(profile) => format!("parley --profile {profile}"),
            None => "parley".to_owned(),
        }
    }

    /// Prints a result: `text` for people, `value` for machines.
    pub fn print(&self, text: &str, value: Value) {
        if self.json {
            println!("{value}");
        } else {
            println!("{text}");
        }
    }

    /// A loud warning that a contact's identity key changed.
    pub fn identity_changed(&self, account: &AccountId, handle: Option<&Handle>) {
        let who = name(handle, account);
        if self.json {
            println!(
                "{}",
                json!({"type": "identity_changed", "handle": handle.map(Handle::as_str),
                       "account": account.to_hex()})
            );
        }
        eprintln!(
            "\n!!! WARNING: the identity key of {who} has CHANGED.\n\
             !!! Either they re-registered (new phone, reinstall), or someone is impersonating them.\n\
             !!! Compare safety numbers before trusting new messages: {} safety-number {who}\n",
            self.parley()
        );
    }

    /// A message this account sent from another of its devices, shown as its own.
    pub fn sent_elsewhere(
        &self,
        device: DeviceId,
        to: &AccountId,
        to_handle: Option<&Handle>,
        sent_at_ms: u64,
        text: &str,
    ) {
        let stamp = local_time::system().stamp(sent_at_ms, now_ms());
        self.print(
            &format!(
                "[{stamp}] you (from device {}) to {}: {text}",
                device.0,
                name(to_handle, to)
            ),
            json!({"type": "sent_elsewhere", "device": device.0,
                   "to": to_handle.map(Handle::as_str), "account": to.to_hex(),
                   "sent_at_ms": sent_at_ms, "text": text}),
        );
    }

    /// A loud line: an account's devices changed (a contact's, or this account's own).
    pub fn devices_changed(
        &self,
        whose: &str,
        version: u64,
        added: &[DeviceId],
        removed: &[DeviceId],
    ) {
        let ids = |d: &[DeviceId]| d.iter().map(|d| d.0.to_string()).collect::<Vec<_>>();
        if self.json {
            println!(
                "{}",
                json!({"type": "devices_changed", "who": whose, "version": version,
                       "added": ids(added), "removed": ids(removed)})
            );
        }
        let mut change = Vec::new();
        if !added.is_empty() {
            change.push(format!("device {} added", ids(added).join(", ")));
        }
        if !removed.is_empty() {
            change.push(format!("device {} removed", ids(removed).join(", ")));
        }
        eprintln!(
            "\n!!! The devices of {whose} changed: {} (device list version {version}).\n\
             !!! Messages now go to every listed device. If this is not expected, someone may \
             be reading along: check with them in person.\n",
            change.join(", ")
        );
    }

    /// Prints stored messages not yet shown, and marks them shown.
    pub fn show_unshown(&self, store: &ClientStore) -> anyhow::Result<usize> {
        let messages = store.unshown()?;
        let Some(last) = messages.last().map(|m| m.n) else {
            return Ok(0);
        };
        for m in &messages {
            let handle = store.contact(&m.from.account)?.and_then(|c| c.handle);
            let business =
                cached_verdict(store, self.authority.as_ref(), &m.from.account, now_ms())?;
            self.message(m, handle.as_ref(), business.as_ref());
        }
        store.mark_shown(last)?;
        Ok(messages.len())
    }

    fn message(
        &self,
        m: &InboxEntry,
        handle: Option<&Handle>,
        business: Option<&BusinessCertificate>,
    ) {
        let who = format!(
            "{}{}",
            name(handle, &m.from.account),
            render::badge(business)
        );
        let category = m.category.map(|c| format!(" ({c})")).unwrap_or_default();
        let id = m.id.to_hex();
        let local = local_time::system();
        let now = now_ms();
        let stamp = local.stamp(m.sent_at_ms, now);
        let body = match &m.card {
            Some(card) => format!(
                "[{stamp}] {who} sent a card{category}:\n{}",
                render::card_text(card, m.category, &id, &self.parley())
            ),
            None => format!("[{stamp}] {who}{category}: {}", m.text),
        };
        let text = match self.days.heading(local, m.sent_at_ms, now) {
            Some(heading) => format!("{heading}\n{body}"),
            None => body,
        };
        self.print(
            &text,
            json!({
                "type": if m.card.is_some() { "card" } else { "message" },
                "from": handle.map(Handle::as_str),
                "account": m.from.account.to_hex(),
                "id": id,
                "sent_at_ms": m.sent_at_ms,
                "text": m.text,
                "category": m.category.map(|c| c.as_str()),
                "verified_business": business.map(|c| c.display_name.clone()),
                "card": m.card.as_ref().map(render::card_json),
            }),
        );
    }
}

/// `@handle`, or the first 16 hex digits of the account.
pub fn name(handle: Option<&Handle>, account: &AccountId) -> String {
    match handle {
        Some(h) => h.to_string(),
        None => format!("{}…", &account.to_hex()[..16]),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
