//! `chat <handle>`: an interactive conversation.

use tokio::io::{AsyncBufReadExt, BufReader};

use super::{on_event, parse_handle, start, Context};

/// `parley chat <handle>`.
pub async fn chat(ctx: &Context, handle: &str) -> anyhow::Result<()> {
    let peer = parse_handle(handle)?;
    let mut client = start(ctx).await?;
    ctx.out.show_unshown(&ctx.store)?;
    eprintln!("Chatting with {peer}. Type a message and press Enter; /quit to leave.");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let line = line.trim();
                if line == "/quit" {
                    break;
                }
                if line.is_empty() {
                    continue;
                }
                if let Err(e) = client.send_text(&peer, line).await {
                    eprintln!("error: not sent: {e}");
                }
                while let Some(event) = client.try_next_event() {
                    on_event(ctx, &event)?;
                }
            }
            event = client.next_event() => match event {
                Some(event) => { on_event(ctx, &event)?; }
                None => anyhow::bail!("the client stopped"),
            },
        }
    }
    client.stop().await;
    Ok(())
}
