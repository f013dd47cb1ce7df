//! `business show`: an account's business certificate, checked on this machine.

use parley_sdk::{BusinessInfo, CertificateStatus, Peer};
use serde_json::json;

use super::{parse_handle, start_quiet, Context};
use crate::render::date_time;

/// `parley business show <handle>`.
pub async fn show(ctx: &Context, handle: &str) -> anyhow::Result<()> {
    let handle = parse_handle(handle)?;
    let client = start_quiet(ctx).await?;
    let info = client.business_info(Peer::Handle(handle.clone())).await;
    client.stop().await;
    let info = info?;
    pin_notice(&info);
    let (status, certificate, reason) = match &info.status {
        CertificateStatus::Verified(c) => ("verified", Some(c), None),
        CertificateStatus::NotABusiness => ("not a business", None, None),
        CertificateStatus::Invalid {
            certificate,
            reason,
        } => (
            "INVALID certificate",
            Some(certificate),
            Some(reason.to_string()),
        ),
    };
    let mut text = format!("{handle}: {status}");
    if let Some(why) = &reason {
        text.push_str(&format!(" ({why}): no badge"));
    }
    if let Some(c) = certificate {
        let categories: Vec<&str> = c.categories.iter().map(|c| c.as_str()).collect();
        text.push_str(&format!(
            "\n  Legal name:    {}\n  Display name:  {}\n  Domain:        {}\n  \
             Categories:    {}\n  Certificate:   serial {}, issued {}, expires {}",
            c.legal_name,
            c.display_name,
            c.domain,
            categories.join(", "),
            c.serial,
            date_time(c.issued_at_ms),
            date_time(c.expires_at_ms),
        ));
    }
    if info.suspended {
        text.push_str("\n  Suspended:     yes (the server refuses its messages)");
    }
    text.push_str(&format!(
        "\n  Authority:     {}",
        info.authority_fingerprint
    ));
    ctx.out.print(
        &text,
        json!({
            "type": "business",
            "handle": handle.as_str(),
            "account": info.account.to_hex(),
            "status": status,
            "reason": reason,
            "legal_name": certificate.map(|c| c.legal_name.clone()),
            "display_name": certificate.map(|c| c.display_name.clone()),
            "domain": certificate.map(|c| c.domain.clone()),
            "categories": certificate.map(|c| c.categories.iter().map(|c| c.as_str()).collect::<Vec<_>>()),
            "expires_at_ms": certificate.map(|c| c.expires_at_ms),
            "suspended": info.suspended,
            "authority_fingerprint": info.authority_fingerprint,
            "pinned_now": info.pinned_now,
        }),
    );
    Ok(())
}

/// Tells the person, on first contact, which authority key was just pinned.
pub fn pin_notice(info: &BusinessInfo) {
    if info.pinned_now {
        eprintln!(
            "First contact with this server's verification authority: its key is now pinned.\n\
             Fingerprint: {}\n\
             Compare it with the fingerprint your server's operator publishes; a different key \
             later will be refused.",
            info.authority_fingerprint
        );
    }
}
