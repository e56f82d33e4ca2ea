//! An HTTP fault layer in front of the S3 emulator (RELIABILITY §2): a small HTTP/1.1
//! reverse proxy on `127.0.0.1:0`. Point ductwork at [`HttpFault::endpoint`]
//! (`DUCTWORK_S3_ENDPOINT`); requests go to the target emulator unchanged (SigV4 signatures
//! stay valid: the Host header is passed through) unless a rule matches.
//!
//! Rules match method, key substring, query substring, part number, and which matching hit
//! (`from`, `times`). Actions: 503 `SlowDown`, 500 `InternalError`, 403 `AccessDenied`,
//! 400 `BadDigest`, 200 with an `<Error>` body (on CompleteMultipartUpload: without or after
//! forwarding), a delayed answer, a stall (no answer until the layer is dropped or the
//! client gives up), a reset after part of the request body, a flipped request body byte, a
//! changed ETag in the answer.
//! Every request is logged with its SDK attempt number and the action taken.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

type BoxError = std::io::Error;

/// What to do with a matching request.
#[derive(Clone, Debug)]
pub enum HAction {
    /// 503 SlowDown, not forwarded.
    SlowDown,
    /// 500 InternalError, not forwarded.
    InternalError,
    /// 403 AccessDenied, not forwarded.
    AccessDenied,
    /// 400 BadDigest (what S3 answers when Content-MD5 does not match), not forwarded.
    BadDigest,
    /// 200 with an `<Error>` body (InternalError); with `forward` the request reaches the
    /// emulator first (its real answer is replaced).
    ErrorIn200 { forward: bool },
    /// Forwarded; the answer is held back this long.
    Delay(Duration),
    /// The request is read whole, not forwarded and never answered (until the layer is
    /// dropped or the client gives up).
    Stall,
    /// Reads this many body bytes, then resets the connection (RST).
    ResetMidBody(usize),
    /// Forwarded with body byte N (0-based) XOR 0xff.
    FlipBodyByte(usize),
    /// Forwarded; the answer's ETag gets one hex digit changed: what a store that checks no
    /// digest answers after receiving a changed byte (the ETag is the MD5 of what it stored).
    ChangeEtag,
}

/// When a rule applies.
#[derive(Clone, Debug, Default)]
pub struct HRule {
    /// `PUT`, `POST`, … (None: any).
    pub method: Option<&'static str>,
    /// A substring of the key (path after the bucket).
    pub key_contains: Option<String>,
    /// A substring of the raw query (e.g. `partNumber=`, `uploadId=`, `uploads`).
    pub query_contains: Option<String>,
    /// The `partNumber` query value.
    pub part: Option<i32>,
    /// The first matching hit (0-based) to act on.
    pub from: usize,
    /// How many matching hits to act on (None: all from `from` on).
    pub times: Option<usize>,
    /// What to do.
    pub action: Option<HAction>,
}

impl HRule {
    pub fn new(action: HAction) -> HRule {
        HRule {
            action: Some(action),
            ..HRule::default()
        }
    }
    pub fn method(mut self, m: &'static str) -> HRule {
        self.method = Some(m);
        self
    }
    pub fn key(mut self, k: &str) -> HRule {
        self.key_contains = Some(k.to_string());
        self
    }
    pub fn query(mut self, q: &str) -> HRule {
        self.query_contains = Some(q.to_string());
        self
    }
    pub fn part(mut self, n: i32) -> HRule {
        self.part = Some(n);
        self
    }
    pub fn from(mut self, n: usize) -> HRule {
        self.from = n;
        self
    }
    pub fn times(mut self, n: usize) -> HRule {
        self.times = Some(n);
        self
    }
    /// UploadPart requests (`PUT` with `partNumber=`).
    pub fn upload_part(self) -> HRule {
        self.method("PUT").query("partNumber=")
    }
    /// CompleteMultipartUpload requests (`POST` with `uploadId=`).
    pub fn complete(self) -> HRule {
        self.method("POST").query("uploadId=")
    }
}

/// One logged request.
#[derive(Clone, Debug)]
pub struct LogEntry {
    pub method: String,
    /// `/bucket/key`.
    pub path: String,
    pub query: String,
    /// The SDK's attempt number (`amz-sdk-request: attempt=N`), 0 when absent.
    pub attempt: u32,
    pub content_md5: Option<String>,
    /// The action taken, or None when forwarded unchanged.
    pub action: Option<String>,
    /// The status returned to the client (0: none yet, or none: reset or stalled).
    pub status: u16,
}

impl LogEntry {
    /// The `partNumber` query value.
    pub fn part(&self) -> Option<i32> {
        query_value(&self.query, "partNumber").and_then(|v| v.parse().ok())
    }
    /// The `uploadId` query value.
    pub fn upload_id(&self) -> Option<String> {
        query_value(&self.query, "uploadId")
    }
    pub fn is_upload_part(&self) -> bool {
        self.method == "PUT" && self.part().is_some()
    }
    pub fn is_complete(&self) -> bool {
        self.method == "POST" && self.upload_id().is_some()
    }
    pub fn is_abort(&self) -> bool {
        self.method == "DELETE" && self.upload_id().is_some()
    }
}

fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| v.to_string())
    })
}

struct Shared {
    target: SocketAddr,
    rules: Mutex<Vec<(HRule, usize)>>,
    log: Mutex<Vec<LogEntry>>,
    fired: AtomicUsize,
    event: Notify,
    stop: watch::Receiver<bool>,
}

/// A running fault layer; dropping it stops it (stalled requests end, connections close).
pub struct HttpFault {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl HttpFault {
    /// Starts a layer forwarding to `target` (an emulator's address).
    pub async fn start(target: SocketAddr, rules: Vec<HRule>) -> HttpFault {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("http fault layer: bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            target,
            rules: Mutex::new(rules.into_iter().map(|r| (r, 0)).collect()),
            log: Mutex::new(Vec::new()),
            fired: AtomicUsize::new(0),
            event: Notify::new(),
            stop: stop_rx.clone(),
        });
        let sh = Arc::clone(&shared);
        let mut stop_rx2 = stop_rx;
        tokio::spawn(async move {
            loop {
                let socket = tokio::select! {
                    r = listener.accept() => match r {
                        Ok((s, _)) => s,
                        Err(_) => continue,
                    },
                    _ = stop_rx2.changed() => break,
                };
                let _ = socket.set_nodelay(true);
                let fd = socket.as_raw_fd();
                let sh = Arc::clone(&sh);
                let mut stop = sh.stop.clone();
                tokio::spawn(async move {
                    let svc_sh = Arc::clone(&sh);
                    let svc = hyper::service::service_fn(move |req| {
                        let sh = Arc::clone(&svc_sh);
                        async move { handle(sh, fd, req).await }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.changed() => {}
                    }
                });
            }
        });
        HttpFault {
            addr,
            endpoint: format!("http://{addr}"),
            shared,
            stop,
        }
    }

    /// Replaces the rules (hit counters restart).
    pub fn set_rules(&self, rules: Vec<HRule>) {
        *self.shared.rules.lock().expect("rules") = rules.into_iter().map(|r| (r, 0)).collect();
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<LogEntry> {
        self.shared.log.lock().expect("log").clone()
    }

    /// How many requests got a fault so far.
    pub fn fired(&self) -> usize {
        self.shared.fired.load(Ordering::SeqCst)
    }

    /// Waits until `pred(log)` holds or `limit` passes; true when it held.
    pub async fn wait_for(&self, limit: Duration, pred: impl Fn(&[LogEntry]) -> bool) -> bool {
        let wait = async {
            loop {
                let notified = self.shared.event.notified();
                if pred(&self.shared.log.lock().expect("log")) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

impl Drop for HttpFault {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn xml_error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>fault-layer</RequestId>\
         <HostId>fault-layer</HostId></Error>"
    );
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .header("x-amz-request-id", "fault-layer")
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

/// Sets `SO_LINGER {on, 0}` so that closing the socket sends RST.
fn linger_zero(fd: i32) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is the connection's socket, alive while its connection task runs (this
    // is called from inside that connection's service); the option value is a valid linger.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(l).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::linger>()).unwrap_or(8),
        );
    }
}

async fn handle(
    sh: Arc<Shared>,
    fd: i32,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let attempt = req
        .headers()
        .get("amz-sdk-request")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(';')
                .find_map(|kv| kv.trim().strip_prefix("attempt="))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0);
    let content_md5 = req
        .headers()
        .get("content-md5")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // The key: the path after `/bucket/`.
    let key = path
        .trim_start_matches('/')
        .split_once('/')
        .map_or(String::new(), |(_, k)| k.to_string());
    let action = {
        let mut rules = sh.rules.lock().expect("rules");
        let mut chosen = None;
        for (rule, hits) in rules.iter_mut() {
            let matches = rule.method.is_none_or(|m| m == method)
                && rule.key_contains.as_deref().is_none_or(|k| key.contains(k))
                && rule
                    .query_contains
                    .as_deref()
                    .is_none_or(|q| query.contains(q))
                && rule.part.is_none_or(|p| {
                    query_value(&query, "partNumber").is_some_and(|v| v == p.to_string())
                });
            if !matches {
                continue;
            }
            let hit = *hits;
            *hits += 1;
            let active = hit >= rule.from && rule.times.is_none_or(|t| hit < rule.from + t);
            if active && chosen.is_none() {
                chosen.clone_from(&rule.action);
            }
        }
        chosen
    };
    let mut entry = LogEntry {
        method,
        path,
        query,
        attempt,
        content_md5,
        action: action.as_ref().map(|a| format!("{a:?}")),
        status: 0,
    };
    if action.is_some() {
        sh.fired.fetch_add(1, Ordering::SeqCst);
    }
    // Logged on arrival (status 0), updated with the answer: a stalled request shows too.
    let at = {
        let mut log = sh.log.lock().expect("log");
        log.push(entry.clone());
        log.len() - 1
    };
    sh.event.notify_waiters();
    let result = respond(&sh, fd, req, action).await;
    if let Ok(resp) = &result {
        entry.status = resp.status().as_u16();
        sh.log.lock().expect("log")[at] = entry;
    }
    sh.event.notify_waiters();
    result
}

async fn respond(
    sh: &Shared,
    fd: i32,
    req: Request<Incoming>,
    action: Option<HAction>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let (parts, mut body) = req.into_parts();
    if let Some(HAction::ResetMidBody(n)) = action {
        let mut got = 0usize;
        while got < n {
            match body.frame().await {
                Some(Ok(f)) => got += f.data_ref().map_or(0, Bytes::len),
                _ => break,
            }
        }
        linger_zero(fd);
        return Err(std::io::Error::other(
            "fault layer: connection reset mid-body",
        ));
    }
    let mut data = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    if let Some(HAction::Stall) = action {
        // The whole request was read; no answer comes until the layer stops.
        let mut stop = sh.stop.clone();
        let _ = stop.changed().await;
        linger_zero(fd);
        return Err(std::io::Error::other("fault layer: stalled request ended"));
    }
    match action {
        Some(HAction::SlowDown) => {
            return Ok(xml_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "SlowDown",
                "Please reduce your request rate.",
            ))
        }
        Some(HAction::InternalError) => {
            return Ok(xml_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "We encountered an internal error. Please try again.",
            ))
        }
        Some(HAction::AccessDenied) => {
            return Ok(xml_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Access Denied",
            ))
        }
        Some(HAction::BadDigest) => {
            return Ok(xml_error(
                StatusCode::BAD_REQUEST,
                "BadDigest",
                "The Content-MD5 you specified did not match what we received.",
            ))
        }
        Some(HAction::ErrorIn200 { forward: false }) => {
            return Ok(xml_error(
                StatusCode::OK,
                "InternalError",
                "We encountered an internal error. Please try again.",
            ))
        }
        Some(HAction::FlipBodyByte(i)) if i < data.len() => {
            let mut v = data.to_vec();
            v[i] ^= 0xff;
            data = Bytes::from(v);
        }
        _ => {}
    }
    let resp = forward(sh.target, parts, data).await?;
    match action {
        Some(HAction::ErrorIn200 { forward: true }) => Ok(xml_error(
            StatusCode::OK,
            "InternalError",
            "We encountered an internal error. Please try again.",
        )),
        Some(HAction::Delay(d)) => {
            tokio::time::sleep(d).await;
            Ok(resp)
        }
        Some(HAction::ChangeEtag) => {
            let mut resp = resp;
            if let Some(tag) = resp.headers().get("etag").and_then(|v| v.to_str().ok()) {
                let mut t: Vec<u8> = tag.as_bytes().to_vec();
                if let Some(c) = t.iter_mut().find(|c| c.is_ascii_hexdigit()) {
                    *c = if *c == b'0' { b'1' } else { b'0' };
                }
                let v =
                    hyper::header::HeaderValue::from_bytes(&t).map_err(std::io::Error::other)?;
                resp.headers_mut().insert("etag", v);
            }
            Ok(resp)
        }
        _ => Ok(resp),
    }
}

/// Sends the request to the target on a fresh connection and reads the whole answer.
async fn forward(
    target: SocketAddr,
    parts: hyper::http::request::Parts,
    data: Bytes,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let stream = TcpStream::connect(target).await?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    let conn = tokio::spawn(conn);
    let req = Request::from_parts(parts, Full::new(data));
    let resp = sender
        .send_request(req)
        .await
        .map_err(std::io::Error::other)?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    drop(sender);
    conn.abort();
    Ok(Response::from_parts(parts, Full::new(body)))
}
