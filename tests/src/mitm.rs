//! A misbehaving relay for tests: a WebSocket man-in-the-middle between real clients and
//! a real server.
//!
//! [`Mitm`] listens on `127.0.0.1:0`; every connection to it is forwarded to the server
//! it was started for (or, started across a cluster's nodes, to the node behind the
//! listener the client chose). It decodes each frame (`parley_protocol::wire`) and forwards the
//! original bytes unless the test told it to misbehave: rewrite a `deliver` (flip a byte,
//! change its sender or id), withhold it, serve another account's prekey bundle, resolve
//! a handle to another account, serve a device list of its choosing, or inject a
//! recorded `deliver` again later. The
//! authentication handshake passes through untouched: the server's challenge is bound
//! to the server's id, not to the socket, so the proxy can forward it and learn from the
//! server's `authenticated` reply which device each connection acts for.
//!
//! Every `deliver` the server sends is recorded as the server sent it (before any
//! rewriting), per recipient, for [`Mitm::deliveries_to`] and [`Mitm::inject`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use parley_protocol::devices::SignedDeviceList;
use parley_protocol::ids::{AccountId, DeviceAddress, Handle, RequestId};
use parley_protocol::wire::client::ClientBody;
use parley_protocol::wire::server::{Deliver, ServerBody};
use parley_protocol::wire::{self, ServerFrame};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_util::sync::CancellationToken;

/// What to do with a `deliver` on its way to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it on (as rewritten by the hook, if it changed it).
    Forward,
    /// Keep it (it stays recorded) and do not pass it on.
    Withhold,
}

/// A test's rule for deliveries: sees the recipient and the frame, may rewrite it.
type DeliverHook = Box<dyn FnMut(DeviceAddress, &mut Deliver) -> Verdict + Send>;

/// What the proxy has seen and what it was told to do.
#[derive(Default)]
struct State {
    deliver_hook: Option<DeliverHook>,
    /// `fetch_bundle` for this account is rewritten to fetch this device's bundle.
    bundle_redirects: HashMap<AccountId, DeviceAddress>,
    /// `resolved` for this handle is rewritten to name this account.
    handle_redirects: HashMap<Handle, AccountId>,
    /// The device list served for this account (in `devices` and in a `stale_devices`
    /// error) is replaced by this one (`None`: no list, the implicit one).
    device_lists: HashMap<AccountId, Option<SignedDeviceList>>,
    /// Every `deliver` the server sent, as it sent it, with its recipient.
    delivered: Vec<(DeviceAddress, Deliver)>,
    /// Live connections: the device each acts for (once authenticated) and its injector.
    connections: HashMap<u64, Connection>,
    next_connection: u64,
}

struct Connection {
    address: Option<DeviceAddress>,
    inject: mpsc::UnboundedSender<(Vec<u8>, oneshot::Sender<()>)>,
}

/// Shared between the test and the proxy's tasks.
struct Shared {
    state: Mutex<State>,
    /// Bumped whenever a `deliver` is recorded or a connection authenticates.
    changed: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking hook poisons the lock; the test has failed already, keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// A running man-in-the-middle relay.
pub struct Mitm {
    /// One listener per upstream server, in the order of the upstreams.
    addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Mitm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mitm").field("addrs", &self.addrs).finish()
    }
}

impl Mitm {
    /// Starts a proxy on `127.0.0.1:0` in front of the server at `upstream` (`ws://...`).
    pub async fn start(upstream: &str) -> anyhow::Result<Mitm> {
        Mitm::start_across(&[upstream.to_owned()]).await
    }

    /// Starts one proxy in front of several servers (the nodes of a cluster): a listener
    /// on `127.0.0.1:0` per upstream ([`Mitm::url_for`]), all under one set of rules and
    /// one record, so a test steers and watches every node's clients alike.
    pub async fn start_across(upstreams: &[String]) -> anyhow::Result<Mitm> {
        if upstreams.is_empty() {
            bail!("a proxy needs an upstream server");
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
        });
        let stop = CancellationToken::new();
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        for upstream in upstreams {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            addrs.push(listener.local_addr()?);
            tasks.push(tokio::spawn(accept_loop(
                listener,
                upstream.clone(),
                shared.clone(),
                stop.clone(),
            )));
        }
        Ok(Mitm {
            addrs,
            shared,
            stop,
            tasks,
        })
    }

    /// The URL clients connect to (in front of the first upstream).
    pub fn url(&self) -> String {
        self.url_for(0)
    }

    /// The URL in front of upstream `index % upstreams` (see [`Mitm::start_across`]).
    pub fn url_for(&self, index: usize) -> String {
        format!("ws://{}", self.addrs[index % self.addrs.len()])
    }

    /// Every `deliver` from now on goes through `hook` (replacing any earlier hook).
    pub fn on_deliver(
        &self,
        hook: impl FnMut(DeviceAddress, &mut Deliver) -> Verdict + Send + 'static,
    ) {
        self.shared.lock().deliver_hook = Some(Box::new(hook));
    }

    /// Deliveries pass unchanged again.
    pub fn honest_deliveries(&self) {
        self.shared.lock().deliver_hook = None;
    }

    /// Answers `fetch_bundle` for `asked`'s account with `served`'s bundle (`None`: stop).
    pub fn redirect_bundles(&self, asked: AccountId, served: Option<DeviceAddress>) {
        let mut state = self.shared.lock();
        match served {
            Some(served) => state.bundle_redirects.insert(asked, served),
            None => state.bundle_redirects.remove(&asked),
        };
    }

    /// Resolves `handle` to `account` (`None`: answer honestly again).
    pub fn redirect_handle(&self, handle: Handle, account: Option<AccountId>) {
        let mut state = self.shared.lock();
        match account {
            Some(account) => state.handle_redirects.insert(handle, account),
            None => state.handle_redirects.remove(&handle),
        };
    }

    /// Serves `list` as `account`'s device list wherever the server sends one (`devices`,
    /// and the lists of a `stale_devices` error); `None` serves the server's own again.
    pub fn serve_device_list(&self, account: AccountId, list: Option<Option<SignedDeviceList>>) {
        let mut state = self.shared.lock();
        match list {
            Some(list) => state.device_lists.insert(account, list),
            None => state.device_lists.remove(&account),
        };
    }

    /// Every `deliver` the server sent to `to` so far, as the server sent it, in order.
    pub fn deliveries_to(&self, to: DeviceAddress) -> Vec<Deliver> {
        self.shared
            .lock()
            .delivered
            .iter()
            .filter(|(recipient, _)| *recipient == to)
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// Waits (at most `limit`) until the server sent at least `n` deliveries to `to`.
    pub async fn wait_deliveries(
        &self,
        to: DeviceAddress,
        n: usize,
        limit: Duration,
    ) -> anyhow::Result<Vec<Deliver>> {
        let mut changed = self.shared.changed.subscribe();
        let wait = async {
            loop {
                let seen = self.deliveries_to(to);
                if seen.len() >= n {
                    return seen;
                }
                if changed.changed().await.is_err() {
                    return seen;
                }
            }
        };
        let seen = tokio::time::timeout(limit, wait)
            .await
            .map_err(|_| anyhow!("fewer than {n} deliveries to {to:?} within {limit:?}"))?;
        if seen.len() < n {
            bail!("the proxy stopped with {} of {n} deliveries", seen.len());
        }
        Ok(seen)
    }

    /// Waits (at most `limit`) until a connection is authenticated as `address`.
    pub async fn wait_connected(
        &self,
        address: DeviceAddress,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let mut changed = self.shared.changed.subscribe();
        let wait = async {
            loop {
                if self.injector(address).is_some() {
                    return true;
                }
                if changed.changed().await.is_err() {
                    return false;
                }
            }
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(true) => Ok(()),
            _ => bail!("no connection authenticated as {address:?} within {limit:?}"),
        }
    }

    /// Sends `deliver` to the live connection authenticated as `to`, as if the server
    /// had pushed it, and returns once it was written to that client's socket.
    pub async fn inject(&self, to: DeviceAddress, deliver: Deliver) -> anyhow::Result<()> {
        let inject = self
            .injector(to)
            .ok_or_else(|| anyhow!("no connection authenticated as {to:?}"))?;
        let bytes = wire::encode_server(&ServerFrame::push(ServerBody::Deliver(deliver)))?;
        let (written, done) = oneshot::channel();
        inject
            .send((bytes, written))
            .map_err(|_| anyhow!("the connection of {to:?} ended"))?;
        tokio::time::timeout(Duration::from_secs(10), done)
            .await
            .context("injected frame not written within 10 s")?
            .map_err(|_| anyhow!("the connection of {to:?} ended before the write"))
    }

    fn injector(
        &self,
        to: DeviceAddress,
    ) -> Option<mpsc::UnboundedSender<(Vec<u8>, oneshot::Sender<()>)>> {
        let state = self.shared.lock();
        // The newest connection of that device (the server displaced the older ones).
        state
            .connections
            .iter()
            .filter(|(_, c)| c.address == Some(to))
            .max_by_key(|(id, _)| **id)
            .map(|(_, c)| c.inject.clone())
    }

    /// Stops accepting and closes every proxied connection.
    pub async fn stop(mut self) {
        self.stop.cancel();
        for task in &mut self.tasks {
            let _ = task.await;
        }
    }
}

impl Drop for Mitm {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let (upstream, shared, stop) = (upstream.clone(), shared.clone(), stop.clone());
        tokio::spawn(async move {
            let id = {
                let mut state = shared.lock();
                state.next_connection = state.next_connection.wrapping_add(1);
                state.next_connection
            };
            let result = proxy(stream, &upstream, id, &shared, &stop).await;
            if let Err(e) = result {
                debug_log(id, &e);
            }
            shared.lock().connections.remove(&id);
            shared.bump();
        });
    }
}

/// Failures of a proxied connection are expected (clients disconnect); keep a trace
/// for a failing test's output without a logging dependency.
fn debug_log(id: u64, error: &anyhow::Error) {
    if std::env::var_os("PARLEY_MITM_DEBUG").is_some() {
        eprintln!("mitm connection {id}: {error:#}");
    }
}

/// Forwards one client connection to the server, applying the test's rules.
async fn proxy(
    stream: TcpStream,
    upstream: &str,
    id: u64,
    shared: &Shared,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut client = tokio_tungstenite::accept_async(stream).await?;
    let (mut server, _) = tokio_tungstenite::connect_async(upstream)
        .await
        .context("connecting upstream")?;
    let (inject_tx, mut inject_rx) = mpsc::unbounded_channel();
    shared.lock().connections.insert(
        id,
        Connection {
            address: None,
            inject: inject_tx,
        },
    );
    // Request ids of this connection's `resolve_handle` requests, to find their replies.
    let mut resolving: HashMap<RequestId, Handle> = HashMap::new();
    let mut address: Option<DeviceAddress> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = client.close(None).await;
                let _ = server.close(None).await;
                return Ok(());
            }
            injected = inject_rx.recv() => {
                let Some((bytes, written)) = injected else { return Ok(()) };
                client.send(Message::Binary(Bytes::from(bytes))).await?;
                let _ = written.send(());
            }
            from_client = client.next() => match from_client {
                Some(Ok(Message::Binary(bytes))) => {
                    let out = from_client_frame(&bytes, shared, &mut resolving)?;
                    server.send(Message::Binary(out)).await?;
                }
                Some(Ok(Message::Close(frame))) => {
                    let _ = server.close(frame).await;
                    return Ok(());
                }
                // Pings are answered by tungstenite on each side.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(text))) => server.send(Message::Text(text)).await?,
                Some(Err(e)) => {
                    let _ = server.close(None).await;
                    return Err(e.into());
                }
                None => {
                    let _ = server.close(None).await;
                    return Ok(());
                }
            },
            from_server = server.next() => match from_server {
                Some(Ok(Message::Binary(bytes))) => {
                    let out = from_server_frame(bytes, id, &mut address, shared, &mut resolving)?;
                    if let Some(out) = out {
                        client.send(Message::Binary(out)).await?;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let _ = client.close(frame).await;
                    return Ok(());
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(text))) => client.send(Message::Text(text)).await?,
                Some(Err(e)) => {
                    let _ = client.close(None).await;
                    return Err(e.into());
                }
                None => {
                    let _ = client.close(None).await;
                    return Ok(());
                }
            },
        }
    }
}

/// A client frame on its way to the server: redirected bundle fetches are rewritten,
/// everything else goes as it came.
fn from_client_frame(
    bytes: &Bytes,
    shared: &Shared,
    resolving: &mut HashMap<RequestId, Handle>,
) -> anyhow::Result<Bytes> {
    let Ok(mut frame) = wire::decode_client(bytes) else {
        return Ok(bytes.clone());
    };
    match &mut frame.body {
        ClientBody::ResolveHandle(r) => {
            resolving.insert(frame.rid, r.handle.clone());
            Ok(bytes.clone())
        }
        ClientBody::FetchBundle(f) => {
            let redirect = shared
                .lock()
                .bundle_redirects
                .get(&f.address.account)
                .copied();
            match redirect {
                Some(served) => {
                    f.address = served;
                    Ok(Bytes::from(wire::encode_client(&frame)?))
                }
                None => Ok(bytes.clone()),
            }
        }
        _ => Ok(bytes.clone()),
    }
}

/// A server frame on its way to the client: `None` when withheld.
fn from_server_frame(
    bytes: Bytes,
    id: u64,
    address: &mut Option<DeviceAddress>,
    shared: &Shared,
    resolving: &mut HashMap<RequestId, Handle>,
) -> anyhow::Result<Option<Bytes>> {
    let Ok(mut frame) = wire::decode_server(&bytes) else {
        return Ok(Some(bytes));
    };
    let rid = frame.rid;
    match &mut frame.body {
        ServerBody::Authenticated(a) => {
            *address = Some(a.address);
            if let Some(c) = shared.lock().connections.get_mut(&id) {
                c.address = Some(a.address);
            }
            shared.bump();
            Ok(Some(bytes))
        }
        ServerBody::Resolved(r) => {
            let asked = rid.and_then(|rid| resolving.remove(&rid));
            let redirect = asked.and_then(|h| shared.lock().handle_redirects.get(&h).copied());
            match redirect {
                Some(account) => {
                    r.account = account;
                    Ok(Some(Bytes::from(wire::encode_server(&frame)?)))
                }
                None => Ok(Some(bytes)),
            }
        }
        ServerBody::Deliver(d) => {
            let Some(to) = *address else {
                return Ok(Some(bytes));
            };
            let original = d.clone();
            let verdict = {
                let mut state = shared.lock();
                state.delivered.push((to, original.clone()));
                match state.deliver_hook.as_mut() {
                    Some(hook) => hook(to, d),
                    None => Verdict::Forward,
                }
            };
            shared.bump();
            match verdict {
                Verdict::Withhold => Ok(None),
                Verdict::Forward if *d == original => Ok(Some(bytes)),
                Verdict::Forward => Ok(Some(Bytes::from(wire::encode_server(&frame)?))),
            }
        }
        ServerBody::Devices(d) => {
            let served = shared.lock().device_lists.get(&d.account).cloned();
            match served {
                Some(list) => {
                    d.list = list;
                    Ok(Some(Bytes::from(wire::encode_server(&frame)?)))
                }
                None => Ok(Some(bytes)),
            }
        }
        ServerBody::Error(e) => {
            if let Some(rid) = rid {
                resolving.remove(&rid);
            }
            let mut rewritten = false;
            {
                let state = shared.lock();
                for d in &mut e.devices {
                    if let Some(list) = state.device_lists.get(&d.account) {
                        d.list = list.clone();
                        rewritten = true;
                    }
                }
            }
            if rewritten {
                return Ok(Some(Bytes::from(wire::encode_server(&frame)?)));
            }
            Ok(Some(bytes))
        }
        _ => Ok(Some(bytes)),
    }
}
