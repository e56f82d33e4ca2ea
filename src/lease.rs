//! The lease: one attempt at a time per output prefix (RELIABILITY §1.5, F30).
//!
//! An extract takes `_lease.json` under its `--to` prefix before writing anything: S3
//! `PutObject` with `If-None-Match: *` (a local `create_new` for `file://`). The object names
//! the holder (run id, host, pid and the pid's start time) and an expiry, renewed in the
//! background every third of the TTL with `If-Match` on the last ETag, so a lease is never
//! silently shared. A second attempt finds it and fails with "run in progress" unless the
//! lease has expired, or its holder ran on this host and that process is gone (a SIGKILLed
//! attempt), in which case it takes the lease over with `If-Match` on the stale ETag: of two
//! attempts racing for a stale lease exactly one wins. The lease is deleted at the end,
//! success or failure; one left by a killed process is taken over by the next attempt.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};

use crate::config::S3Uri;
use crate::s3::{s3_error, S3};

/// The lease object's name under the prefix.
pub const LEASE_NAME: &str = "_lease.json";

/// Default lease lifetime; renewed every third of it.
pub const DEFAULT_TTL: Duration = Duration::from_secs(120);

/// What the lease object holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    /// The holder's run id.
    pub run_id: String,
    /// Host name of the holder.
    pub host: String,
    /// Process id of the holder.
    pub pid: u32,
    /// The holder process's start time (clock ticks since boot; tells a reused pid apart).
    pub pid_start: Option<u64>,
    /// Unix seconds when taken.
    pub acquired: u64,
    /// Unix seconds when it lapses unless renewed.
    pub expires: u64,
}

impl Holder {
    fn me(run_id: &str, ttl: Duration) -> Self {
        let now = unix_now();
        Self {
            run_id: run_id.to_owned(),
            host: host_name(),
            pid: std::process::id(),
            pid_start: process_start(std::process::id()),
            acquired: now,
            expires: now + ttl.as_secs().max(1),
        }
    }

    /// Whether the holder can no longer be working: expired, or a process of this host that
    /// has ended (or whose pid now belongs to another process).
    pub fn is_stale(&self, now: u64) -> bool {
        if self.expires <= now {
            return true;
        }
        if self.host != host_name() {
            return false;
        }
        // Same host: stale when that process is gone or its pid now names another process.
        match process_start(self.pid) {
            None => true,
            Some(start) => self.pid_start.is_some_and(|s| s != start),
        }
    }

    fn describe(&self) -> String {
        format!(
            "run {} (host {}, pid {}) holds it until {}",
            self.run_id,
            self.host,
            self.pid,
            rfc3339(self.expires)
        )
    }
}

/// A held lease; release it with [`Lease::release`]. Dropping it stops the renewal only.
/// Until released it is also in the process-wide registry, which the signal handler
/// releases ([`release_held`]).
pub struct Lease {
    id: u64,
    place: Place,
    etag: Arc<tokio::sync::Mutex<Option<String>>>,
    lost: Arc<AtomicBool>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Clone)]
enum Place {
    S3 { s3: S3, uri: S3Uri },
    File { path: std::path::PathBuf },
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(h) = self.renewer.take() {
            h.abort();
        }
    }
}

enum PutResult {
    Written(Option<String>),
    Conflict,
}

async fn put(
    s3: &S3,
    uri: &S3Uri,
    body: Vec<u8>,
    if_match: Option<&str>,
) -> Result<PutResult, crate::error::S3Error> {
    let mut req = s3
        .client
        .put_object()
        .bucket(&uri.bucket)
        .key(&uri.key)
        .content_type("application/json")
        .body(ByteStream::from(body));
    req = match if_match {
        Some(tag) => req.if_match(tag),
        None => req.if_none_match("*"),
    };
    match req.send().await {
        Ok(out) => Ok(PutResult::Written(out.e_tag().map(str::to_owned))),
        Err(SdkError::ServiceError(se)) if matches!(se.raw().status().as_u16(), 409 | 412) => {
            Ok(PutResult::Conflict)
        }
        Err(e) => Err(s3_error("PutObject (lease)", uri, None, e)),
    }
}

impl Lease {
    /// Takes the lease at `prefix` (an `s3://` or `file://` output prefix) for `run_id`.
    pub async fn acquire(
        dest: &crate::sink::Dest,
        run_id: &str,
        ttl: Duration,
    ) -> anyhow::Result<Lease> {
        match dest {
            crate::sink::Dest::S3 { s3, prefix } => {
                let uri = prefix.join(LEASE_NAME);
                Self::acquire_s3(s3.clone(), uri, run_id, ttl).await
            }
            crate::sink::Dest::Local { dir } => {
                Self::acquire_file(dir.join(LEASE_NAME), run_id, ttl)
            }
        }
    }

    async fn acquire_s3(s3: S3, uri: S3Uri, run_id: &str, ttl: Duration) -> anyhow::Result<Lease> {
        let me = Holder::me(run_id, ttl);
        let body = serde_json::to_vec(&me)?;
        let etag = match put(&s3, &uri, body.clone(), None).await? {
            PutResult::Written(tag) => tag,
            PutResult::Conflict => {
                let out = s3
                    .client
                    .get_object()
                    .bucket(&uri.bucket)
                    .key(&uri.key)
                    .send()
                    .await;
                let out = match out {
                    Ok(o) => o,
                    Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                        // Released between our put and our read: try once more.
                        return match put(&s3, &uri, body, None).await? {
                            PutResult::Written(tag) => {
                                Ok(Self::held(Place::S3 { s3, uri }, run_id, tag, ttl))
                            }
                            PutResult::Conflict => bail!(
                                "run in progress: another attempt took the lease {uri} just now"
                            ),
                        };
                    }
                    Err(e) => return Err(s3_error("GetObject (lease)", &uri, None, e).into()),
                };
                let stale_tag = out.e_tag().map(str::to_owned).unwrap_or_default();
                let bytes = out
                    .body
                    .collect()
                    .await
                    .with_context(|| format!("reading the lease {uri}"))?
                    .into_bytes();
                let holder: Option<Holder> = serde_json::from_slice(&bytes).ok();
                match holder {
                    Some(h) if !h.is_stale(unix_now()) => bail!(
                        "run in progress: the lease {uri} is held: {}; a second attempt at this prefix must wait for it to end",
                        h.describe()
                    ),
                    h => {
                        tracing::warn!(lease = %uri, holder = ?h, "Taking over a stale lease (its holder ended or it expired).");
                        match put(&s3, &uri, body, Some(&stale_tag)).await? {
                            PutResult::Written(tag) => tag,
                            PutResult::Conflict => bail!(
                                "run in progress: another attempt took over the stale lease {uri} first"
                            ),
                        }
                    }
                }
            }
        };
        Ok(Self::held(Place::S3 { s3, uri }, run_id, etag, ttl))
    }

    fn acquire_file(
        path: std::path::PathBuf,
        run_id: &str,
        ttl: Duration,
    ) -> anyhow::Result<Lease> {
        use std::io::Write as _;
        let me = Holder::me(run_id, ttl);
        let body = serde_json::to_vec(&me)?;
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(&body)
                        .with_context(|| format!("writing the lease {}", path.display()))?;
                    return Ok(Self::held(Place::File { path }, run_id, None, ttl));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder: Option<Holder> = std::fs::read(&path)
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok());
                    match holder {
                        Some(h) if !h.is_stale(unix_now()) => bail!(
                            "run in progress: the lease {} is held: {}",
                            path.display(),
                            h.describe()
                        ),
                        _ => {
                            tracing::warn!(lease = %path.display(), "Removing a stale lease.");
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("creating the lease {}", path.display()))
                }
            }
        }
        bail!(
            "run in progress: another attempt took the lease {} first",
            path.display()
        )
    }

    fn held(place: Place, run_id: &str, etag: Option<String>, ttl: Duration) -> Lease {
        let etag = Arc::new(tokio::sync::Mutex::new(etag));
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = match &place {
            Place::S3 { s3, uri } => {
                let (s3, uri, etag, lost) = (
                    s3.clone(),
                    uri.clone(),
                    Arc::clone(&etag),
                    Arc::clone(&lost),
                );
                let period = (ttl / 3).max(Duration::from_secs(1));
                let run_id = run_id.to_owned();
                Some(tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(period).await;
                        let mut tag = etag.lock().await;
                        let Some(current) = tag.clone() else { break };
                        let Ok(body) = serde_json::to_vec(&Holder::me(&run_id, ttl)) else {
                            break;
                        };
                        match put(&s3, &uri, body, Some(&current)).await {
                            Ok(PutResult::Written(t)) => *tag = t,
                            Ok(PutResult::Conflict) => {
                                tracing::error!(lease = %uri, "Lost the lease: another attempt replaced it.");
                                lost.store(true, Ordering::SeqCst);
                                break;
                            }
                            Err(e) => {
                                // A failed renewal is retried next period; expiry is 3 periods away.
                                tracing::warn!(lease = %uri, error = %e, "Could not renew the lease.");
                            }
                        }
                    }
                }))
            }
            Place::File { .. } => None,
        };
        let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        registry().push((id, place.clone(), Arc::clone(&etag)));
        Lease {
            id,
            place,
            etag,
            lost,
            renewer,
        }
    }

    /// Fails if the lease was lost (call before committing anything).
    pub fn check(&self) -> anyhow::Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            bail!(
                "lost the lease {}: another attempt replaced it; nothing was committed",
                self.describe()
            );
        }
        Ok(())
    }

    fn describe(&self) -> String {
        match &self.place {
            Place::S3 { uri, .. } => uri.to_string(),
            Place::File { path } => path.display().to_string(),
        }
    }

    /// Stops the renewal and deletes the lease (errors are logged: an ended holder's lease
    /// is taken over by the next attempt anyway).
    pub async fn release(mut self) {
        if let Some(h) = self.renewer.take() {
            h.abort();
        }
        registry().retain(|(id, _, _)| *id != self.id);
        delete(&self.place, &self.etag).await;
    }
}

type Held = (u64, Place, Arc<tokio::sync::Mutex<Option<String>>>);

static HELD: std::sync::Mutex<Vec<Held>> = std::sync::Mutex::new(Vec::new());
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn registry() -> std::sync::MutexGuard<'static, Vec<Held>> {
    HELD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Deletes every lease this process holds and has not released (after a signal, when the
/// step that held it was cancelled); call after the open uploads were aborted.
pub async fn release_held() {
    let held = std::mem::take(&mut *registry());
    for (_, place, etag) in &held {
        delete(place, etag).await;
    }
}

/// Deletes the lease object, only if it is still ours (`If-Match` on our last ETag).
async fn delete(place: &Place, etag: &tokio::sync::Mutex<Option<String>>) {
    match place {
        Place::S3 { s3, uri } => {
            let tag = etag.lock().await.clone();
            let mut req = s3.client.delete_object().bucket(&uri.bucket).key(&uri.key);
            if let Some(t) = tag {
                req = req.if_match(t);
            }
            if let Err(e) = req.send().await {
                tracing::warn!(lease = %uri, error = %s3_error("DeleteObject (lease)", uri, None, e), "Could not release the lease.");
            }
        }
        Place::File { path } => {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(|| secs.to_string(), |t| t.to_rfc3339())
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// A process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None
/// when there is no such process.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}
