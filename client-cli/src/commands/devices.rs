//! `devices`, `devices remove N`: this account's devices, from the list the account signed,
//! each with its name, id and link time (local), and which one this profile is. (When a
//! device was last seen needs the relay's help and is not shown.)

use parley_protocol::devices::DeviceList;
use parley_protocol::ids::DeviceId;
use serde_json::json;

use super::{start_quiet, Context};
use crate::local_time;

/// `parley devices`.
pub async fn list(ctx: &Context) -> anyhow::Result<()> {
    let client = start_quiet(ctx).await?;
    let devices = client.devices().await;
    let me = client.profile().device;
    client.stop().await;
    print(ctx, &devices?, me);
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

fn print(ctx: &Context, list: &DeviceList, me: DeviceId) {
    for entry in &list.devices {
        let this = entry.device == me;
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
                "device {}{name}  {linked}{}",
                entry.device.0,
                if this { "  (this device)" } else { "" }
            ),
            json!({"type": "device", "device": entry.device.0, "name": entry.name,
                   "linked_at_ms": entry.linked_at_ms, "this_device": this,
                   "list_version": list.version}),
        );
    }
}
