//! How the SDK reaches a server's bytes: [`Transport::dial`] gives a byte stream for a
//! server URL, on which [`crate::connection`] runs TLS (for `wss://`), the WebSocket
//! upgrade, `hello` and the login, the same code whatever the stream.
//!
//! By default the stream is TCP to the URL's host and port. The SDK's own unit tests
//! hand the engine an in-memory pipe per connection instead, whose other end a scripted
//! relay serves (`crate::scripted_relay`): the engine's decisions are then tested without a
//! socket. This module knows nothing of WebSockets, frames or logins.

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{Error, UrlError};

use crate::connection::Stream;

/// Where a connection's bytes go.
#[derive(Clone, Debug, Default)]
pub(crate) enum Transport {
    /// TCP to the URL's host and port (80 for `ws://`, 443 for `wss://` when none is
    /// given).
    #[default]
    Network,
    /// A new in-memory pipe per connection; its server end is handed to the scripted
    /// relay of a unit test.
    #[cfg(test)]
    Memory(tokio::sync::mpsc::Sender<tokio::io::DuplexStream>),
}

impl Transport {
    /// A byte stream to the server at `url`. Errors are the WebSocket library's, so that
    /// [`crate::connection`] explains them as it explains a failed upgrade.
    pub(crate) async fn dial(&self, url: &str) -> Result<Box<dyn Stream>, Error> {
        match self {
            Transport::Network => {
                let request = url.into_client_request()?;
                let uri = request.uri();
                let host = uri.host().ok_or(Error::Url(UrlError::NoHostName))?;
                // An IPv6 literal comes bracketed in a URL, and bare to the resolver.
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let port = uri
                    .port_u16()
                    .or_else(|| match uri.scheme_str() {
                        Some("wss") => Some(443),
                        Some("ws") => Some(80),
                        _ => None,
                    })
                    .ok_or(Error::Url(UrlError::UnsupportedUrlScheme))?;
                Ok(Box::new(TcpStream::connect((host, port)).await?))
            }
            #[cfg(test)]
            Transport::Memory(relay) => {
                let (client, server) = tokio::io::duplex(256 * 1024);
                relay.send(server).await.map_err(|_| {
                    Error::Io(std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        "the scripted relay is gone",
                    ))
                })?;
                Ok(Box::new(client))
            }
        }
    }
}
