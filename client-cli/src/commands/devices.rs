//! `devices`, `devices remove N`: this account's devices, from the list the account signed,
//! each with its name, id and link time (local), which one this profile is, and the day
//! the relay last saw it log in (the relay's word, kept to the day).

use parley_protocol::devices::DeviceList;
use parley_protocol::ids::DeviceId;
use parley_protocol::wire::server::DeviceSeen;
use serde_json::json;

use super::{start_quiet, Context};
use crate::local_time;

/// `parley devices`.
pub async fn list(ctx: &Context) -> anyhow::Result<()> {
    let client = start_quiet(ctx).await?;
    let devices = client.devices_and_last_seen().await;
    let me = client.profile().device;
    client.stop().await;
    let (list, seen) = devices?;
    print(ctx, &list, &seen, me);
    Ok(())
}

/// `parley devices remove N`.
pub async fn remove(ctx: &Context, device: u32) -> anyhow::Result<()> {
    let client = start_quiet(ctx).await?;
    let outcome = client.remove_device(DeviceId(device)).await;
    client.stop().await;
    let list = outcome?;
    ctx.out.print(
        &format!(
            "Device {device} removed: the server deleted it and disconnected it (device list \
             version {}).",
            list.version
        ),
        json!({"type": "device_removed", "device": device, "version": list.version}),
    );
    Ok(())
}

fn print(ctx: &Context, list: &DeviceList, seen: &[DeviceSeen], me: DeviceId) {
    for entry in &list.devices {
        let this = entry.device == me;
        let last_seen = seen
            .iter()
            .find(|s| s.device == entry.device)
            .map(|s| s.day_ms);
        let seen_text = match last_seen {
            Some(day) => format!("  last seen {}", utc_day(day)),
            None => "  not seen yet".to_owned(),
        };
        let linked = if entry.linked_at_ms == 0 {
            "at registration".to_owned()
        } else {
            format!(
                "linked {}",
                local_time::system().date_time(entry.linked_at_ms)
            )
        };
        let name = if entry.name.is_empty() {
            String::new()
        } else {
            format!(" \"{}\"", entry.name)
        };
        ctx.out.print(
            &format!(
                "device {}{name}  {linked}{seen_text}{}",
                entry.device.0,
                if this { "  (this device)" } else { "" }
            ),
            json!({"type": "device", "device": entry.device.0, "name": entry.name,
                   "linked_at_ms": entry.linked_at_ms, "this_device": this,
                   "last_seen_day_ms": last_seen, "list_version": list.version}),
        );
    }
}

/// A day the relay keeps (UTC midnight) as the date it names: `2026-12-06`.
fn utc_day(day_ms: u64) -> String {
    i64::try_from(day_ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "?".to_owned())
}
