//! A TCP fault proxy for the fault suite (RELIABILITY §2): listens on `127.0.0.1:0` and
//! forwards every connection to a target, applying per-connection, per-direction rules.
//!
//! Actions: forward, delay each chunk, stall after N bytes (stop reading and forwarding but
//! keep both sockets open), cut after N bytes (FIN to the client), reset after N bytes (RST via
//! `SO_LINGER 0`), flip byte N, reset when a byte pattern is seen (dropping the chunk that
//! holds it, or forwarding it first), and "signal after N bytes" (forward, but report the
//! event so that a test can inject a fault elsewhere, e.g. kill the backend, at that point).
//!
//! Tests await [`FaultProxy::wait_fired`] instead of sleeping.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

/// Which way the bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client (ductwork) to server.
    Up,
    /// Server to client.
    Down,
}

/// What to do with a direction's bytes.
#[derive(Clone, Debug)]
pub enum Action {
    /// Forward unchanged.
    Forward,
    /// Forward, waiting this long before each chunk.
    Delay(Duration),
    /// Forward N bytes, then stop reading and forwarding; both sockets stay open.
    StallAfter(u64),
    /// Forward N bytes, then close: FIN to both ends.
    CutAfter(u64),
    /// Forward N bytes, then reset both ends (RST).
    ResetAfter(u64),
    /// Forward, with byte N (0-based) XOR 0xff.
    FlipByte(u64),
    /// Forward until the pattern is seen; then reset both ends. With `forward_first` the
    /// bytes up to and including the pattern's chunk reach the peer first (and nothing more
    /// comes back in the other direction).
    ResetOnPattern {
        pattern: Vec<u8>,
        forward_first: bool,
    },
    /// Forward everything; fire the event once N bytes have passed.
    SignalAfter(u64),
    /// Forward everything; fire the event when the pattern is seen (once).
    SignalOnPattern(Vec<u8>),
    /// When the pattern is seen, fire the event and hold that chunk (and everything after
    /// it in this direction) until [`FaultProxy::release`]: the peer waits between two
    /// messages, e.g. a server idle in a transaction while the test kills its backend.
    HoldOnPattern(Vec<u8>),
}

/// A rule: on connection `conn` (0-based in accept order; None = every connection), in
/// direction `dir`, do `action`.
#[derive(Clone, Debug)]
pub struct Rule {
    pub conn: Option<usize>,
    pub dir: Dir,
    pub action: Action,
}

impl Rule {
    pub fn all(dir: Dir, action: Action) -> Rule {
        Rule {
            conn: None,
            dir,
            action,
        }
    }
}

#[derive(Default)]
struct Shared {
    rules: Mutex<Vec<Rule>>,
    fired: AtomicUsize,
    fired_notify: Notify,
    connections: AtomicUsize,
    /// Set when a rule fired "once" (signal actions fire at most once per proxy).
    signalled: AtomicBool,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    released: AtomicBool,
    release: Notify,
}

/// A running proxy; dropping it stops accepting and cuts every connection.
pub struct FaultProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl FaultProxy {
    /// Starts a proxy to `target` with `rules`.
    pub async fn start(target: SocketAddr, rules: Vec<Rule>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fault proxy: bind");
        let addr = listener.local_addr().expect("fault proxy: local addr");
        let shared = Arc::new(Shared::default());
        *shared.rules.lock().expect("rules") = rules;
        let (stop, stop_rx) = watch::channel(false);
        let sh = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut stop_rx2 = stop_rx.clone();
            loop {
                let (client, _) = tokio::select! {
                    r = listener.accept() => match r {
                        Ok(c) => c,
                        Err(_) => continue,
                    },
                    _ = stop_rx2.changed() => break,
                };
                let n = sh.connections.fetch_add(1, Ordering::SeqCst);
                let sh = Arc::clone(&sh);
                let stop_rx = stop_rx.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    serve(n, client, server, sh, stop_rx).await;
                });
            }
        });
        FaultProxy { addr, shared, stop }
    }

    /// Proxies `url`'s host:port: returns the proxy and `url` pointing at the proxy.
    pub async fn for_url(url: &str, rules: Vec<Rule>) -> (FaultProxy, String) {
        let mut u = url::Url::parse(url).expect("url");
        let host = u.host_str().expect("host").to_string();
        let port = u.port().expect("explicit port in the test URL");
        let target: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .expect("resolve")
            .next()
            .expect("an address");
        let proxy = FaultProxy::start(target, rules).await;
        u.set_host(Some("127.0.0.1")).expect("host");
        u.set_port(Some(proxy.addr.port())).expect("port");
        (proxy, u.to_string())
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Replaces the rules for connections accepted from now on.
    pub fn set_rules(&self, rules: Vec<Rule>) {
        *self.shared.rules.lock().expect("rules") = rules;
    }

    /// Lets held chunks ([`Action::HoldOnPattern`]) go on.
    pub fn release(&self) {
        self.shared.released.store(true, Ordering::SeqCst);
        self.shared.release.notify_waiters();
    }

    /// How many faults (or signals) fired so far.
    pub fn fired(&self) -> usize {
        self.shared.fired.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Bytes forwarded (up, down) over all connections.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.shared.bytes_up.load(Ordering::SeqCst),
            self.shared.bytes_down.load(Ordering::SeqCst),
        )
    }

    /// Waits until at least one fault fired, or `limit` passed; true when one fired.
    pub async fn wait_fired(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.shared.fired_notify.notified();
                if self.fired() > 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn fire(sh: &Shared) {
    sh.fired.fetch_add(1, Ordering::SeqCst);
    sh.fired_notify.notify_waiters();
}

/// State both pumps of one connection share.
struct Conn {
    /// Set when one pump ended the connection (reset or cut): serve() drops both.
    end: AtomicBool,
    /// Set when nothing more may be forwarded downstream (after a forwarded pattern).
    mute_down: AtomicBool,
    done: Notify,
}

async fn serve(
    n: usize,
    client: TcpStream,
    server: TcpStream,
    sh: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let (up_action, down_action) = {
        let rules = sh.rules.lock().expect("rules");
        let pick = |dir: Dir| {
            rules
                .iter()
                .find(|r| r.dir == dir && r.conn.is_none_or(|c| c == n))
                .map_or(Action::Forward, |r| r.action.clone())
        };
        (pick(Dir::Up), pick(Dir::Down))
    };
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let conn = Arc::new(Conn {
        end: AtomicBool::new(false),
        mute_down: AtomicBool::new(false),
        done: Notify::new(),
    });
    let up = pump(
        Dir::Up,
        cr,
        sw,
        up_action,
        Arc::clone(&sh),
        Arc::clone(&conn),
    );
    let down = pump(
        Dir::Down,
        sr,
        cw,
        down_action,
        Arc::clone(&sh),
        Arc::clone(&conn),
    );
    let mut up = tokio::spawn(up);
    let mut down = tokio::spawn(down);
    // A pump that ends on EOF leaves the other one running (half-close); a reset or a cut
    // ends both, and so does stopping the proxy.
    let mut up_done = false;
    let mut down_done = false;
    loop {
        tokio::select! {
            _ = &mut up, if !up_done => up_done = true,
            _ = &mut down, if !down_done => down_done = true,
            _ = conn.done.notified() => {}
            _ = stop.changed() => break,
        }
        if (up_done && down_done) || conn.end.load(Ordering::SeqCst) {
            break;
        }
    }
    up.abort();
    down.abort();
}

/// Ends a connection with RST on the client socket and, unless `client_only`, the server's.
/// (`SO_LINGER 0` never blocks on close: it discards and resets, which is the point here.)
#[allow(deprecated)]
fn reset(dir: Dir, from: &OwnedReadHalf, to: &OwnedWriteHalf, client_only: bool, conn: &Conn) {
    let (client, server) = match dir {
        Dir::Up => (from.as_ref(), to.as_ref()),
        Dir::Down => (to.as_ref(), from.as_ref()),
    };
    let _ = client.set_linger(Some(Duration::ZERO));
    if !client_only {
        let _ = server.set_linger(Some(Duration::ZERO));
    }
    conn.end.store(true, Ordering::SeqCst);
    conn.done.notify_waiters();
}

/// Copies `from` to `to` under `action`. Returns when the direction ends.
async fn pump(
    dir: Dir,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    action: Action,
    sh: Arc<Shared>,
    conn: Arc<Conn>,
) {
    let mut passed: u64 = 0;
    let mut buf = vec![0u8; 16 * 1024];
    // The last bytes seen, so that a pattern split across reads is still found.
    let mut tail: Vec<u8> = Vec::new();
    let counter = match dir {
        Dir::Up => &sh.bytes_up,
        Dir::Down => &sh.bytes_down,
    };
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        let chunk = &mut buf[..n];
        let start = passed;
        passed += n as u64;
        match &action {
            Action::Forward => {}
            Action::Delay(d) => tokio::time::sleep(*d).await,
            Action::StallAfter(limit) | Action::CutAfter(limit) | Action::ResetAfter(limit)
                if passed > *limit =>
            {
                let keep = usize::try_from(limit.saturating_sub(start)).unwrap_or(0);
                if keep > 0 && to.write_all(&chunk[..keep]).await.is_err() {
                    return;
                }
                let _ = to.flush().await;
                counter.fetch_add(keep as u64, Ordering::SeqCst);
                fire(&sh);
                match &action {
                    Action::StallAfter(_) => {
                        // Hold both halves open and read nothing more, until the proxy stops.
                        std::future::pending::<()>().await;
                    }
                    Action::CutAfter(_) => {
                        // FIN to this direction's peer; serve() then drops the other halves
                        // (FIN the other way too).
                        let _ = to.shutdown().await;
                        conn.end.store(true, Ordering::SeqCst);
                        conn.done.notify_waiters();
                    }
                    _ => reset(dir, &from, &to, false, &conn),
                }
                return;
            }
            Action::FlipByte(at) if (start..passed).contains(at) => {
                let i = usize::try_from(at - start).unwrap_or(0);
                chunk[i] ^= 0xff;
                fire(&sh);
            }
            Action::ResetOnPattern {
                pattern,
                forward_first,
            } => {
                let mut window = std::mem::take(&mut tail);
                window.extend_from_slice(chunk);
                if memchr::memmem::find(&window, pattern).is_some() {
                    if *forward_first {
                        // The peer gets the bytes (e.g. the server gets COMMIT and commits);
                        // only the client's socket is reset, so its answer is lost.
                        conn.mute_down.store(true, Ordering::SeqCst);
                        let _ = to.write_all(chunk).await;
                        let _ = to.flush().await;
                        counter.fetch_add(n as u64, Ordering::SeqCst);
                    }
                    fire(&sh);
                    reset(dir, &from, &to, *forward_first, &conn);
                    return;
                }
                let keep = pattern.len().saturating_sub(1).min(window.len());
                tail = window[window.len() - keep..].to_vec();
            }
            Action::SignalAfter(limit)
                if passed >= *limit
                    && start < *limit
                    && !sh.signalled.swap(true, Ordering::SeqCst) =>
            {
                fire(&sh);
            }
            Action::SignalOnPattern(pattern) => {
                let mut window = std::mem::take(&mut tail);
                window.extend_from_slice(chunk);
                if memchr::memmem::find(&window, pattern).is_some()
                    && !sh.signalled.swap(true, Ordering::SeqCst)
                {
                    fire(&sh);
                }
                let keep = pattern.len().saturating_sub(1).min(window.len());
                tail = window[window.len() - keep..].to_vec();
            }
            Action::HoldOnPattern(pattern) => {
                let mut window = std::mem::take(&mut tail);
                window.extend_from_slice(chunk);
                if memchr::memmem::find(&window, pattern).is_some() {
                    fire(&sh);
                    loop {
                        let released = sh.release.notified();
                        if sh.released.load(Ordering::SeqCst) {
                            break;
                        }
                        released.await;
                    }
                    window.clear();
                }
                let keep = pattern.len().saturating_sub(1).min(window.len());
                tail = window[window.len() - keep..].to_vec();
            }
            _ => {}
        }
        if dir == Dir::Down && conn.mute_down.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if to.write_all(chunk).await.is_err() {
            return;
        }
        counter.fetch_add(n as u64, Ordering::SeqCst);
    }
}
