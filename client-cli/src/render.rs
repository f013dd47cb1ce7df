//! How business things look in a terminal: cards (title, aligned fields, actions with
//! their ids, expiry, category), the verified badge (only for a certificate checked on
//! this machine), and dates (in local time, see [`crate::local_time`]).

use parley_protocol::business::{BusinessCertificate, Category};
use parley_protocol::e2e::content::Card;
use serde_json::{json, Value};

/// The badge after a sender's name: only for a verified business.
pub fn badge(business: Option<&BusinessCertificate>) -> String {
    match business {
        Some(c) => format!(" [verified business: {}, {}]", c.display_name, c.domain),
        None => String::new(),
    }
}

/// A card as lines of text, to print under the sender line.
/// `parley` is the command as the person runs it (with `--profile` when not the default).
pub fn card_text(
    card: &Card,
    category: Option<Category>,
    message_id: &str,
    parley: &str,
) -> String {
    let width = card
        .fields
        .iter()
        .map(|f| f.label.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = format!("  +-- {}\n", card.title);
    for field in &card.fields {
        let pad = width.saturating_sub(field.label.chars().count());
        out.push_str(&format!(
            "  |  {}{}  {}\n",
            field.label,
            " ".repeat(pad),
            field.value
        ));
    }
    if !card.actions.is_empty() {
        let actions: Vec<String> = card
            .actions
            .iter()
            .map(|a| format!("[{}] {}", a.id, a.label))
            .collect();
        out.push_str(&format!("  |  Actions: {}\n", actions.join("   ")));
    }
    if let Some(expiry) = card.expires_at_ms {
        out.push_str(&format!("  |  Expires: {}\n", date_time(expiry)));
    }
    if let Some(category) = category {
        out.push_str(&format!("  |  Category: {category}\n"));
    }
    let example = card
        .actions
        .first()
        .map(|a| a.id.as_str())
        .unwrap_or("ACTION");
    out.push_str(&format!(
        "  +-- answer with: {parley} answer {} {example}",
        &message_id[..message_id.len().min(12)]
    ));
    out
}

/// A card as JSON.
pub fn card_json(card: &Card) -> Value {
    json!({
        "id": card.id.to_hex(),
        "title": card.title,
        "fields": card.fields.iter().map(|f| json!({"label": f.label, "value": f.value})).collect::<Vec<_>>(),
        "actions": card.actions.iter().map(|a| json!({"id": a.id, "label": a.label})).collect::<Vec<_>>(),
        "expires_at_ms": card.expires_at_ms,
    })
}

/// `YYYY-MM-DD HH:MM ZONE` of a Unix time in milliseconds, in the person's time zone
/// (see [`crate::local_time`]).
pub fn date_time(ms: u64) -> String {
    crate::local_time::system().date_time(ms)
}

/// ` "Bob Smith"`: the display name a person set, quoted after their handle (the relay's
/// word, never in place of the handle); empty without one.
pub fn said_name(display_name: Option<&str>) -> String {
    display_name.map_or_else(String::new, |n| format!(" \"{n}\""))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

    use parley_protocol::e2e::content::{CardAction, CardField, CardId};

    use super::*;

    #[test]
    fn cards_align_fields_and_list_action_ids() {
        let card = Card {
            id: CardId([1; 16]),
            title: "Did you make this purchase?".into(),
            fields: vec![
                CardField {
                    label: "Amount".into(),
                    value: "42.00 EUR".into(),
                },
                CardField {
                    label: "Merchant".into(),
                    value: "Shop".into(),
                },
            ],
            actions: vec![
                CardAction {
                    id: "yes".into(),
                    label: "Yes, it was me".into(),
                },
                CardAction {
                    id: "no".into(),
                    label: "No".into(),
                },
            ],
            expires_at_ms: None,
            category: None,
        };
        let text = card_text(
            &card,
            Some(Category::SecurityAlert),
            "00112233445566778899",
            "parley --profile carol",
        );
        assert!(text.contains("|  Amount    42.00 EUR"), "{text}");
        assert!(text.contains("|  Merchant  Shop"), "{text}");
        assert!(text.contains("[yes] Yes, it was me   [no] No"), "{text}");
        assert!(text.contains("Category: security_alert"), "{text}");
        assert!(
            text.contains("answer with: parley --profile carol answer 001122334455 yes"),
            "{text}"
        );
    }
}
