//! Fault-suite reporting and oracle helpers (RELIABILITY §2 "Shared oracle", §6 figures).
//!
//! Each fault test asserts its own losses are zero and prints one `fault-case:` line via
//! [`report`]; `scripts/test.sh` aggregates those lines into the suite figure.

#![allow(dead_code)]
#![allow(clippy::print_stdout)]

use super::{get_object, list_keys, open_uploads, split_s3_uri, Run};

/// What one fault case lost; every field must be zero.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Losses {
    pub lost: u64,
    pub dup: u64,
    pub partial_objects: u64,
    pub partial_txns: u64,
    pub open_mpus: u64,
    pub canary_hits: u64,
}

impl Losses {
    /// True when nothing was lost.
    pub fn is_zero(&self) -> bool {
        *self == Losses::default()
    }
}

/// Prints exactly one stdout line:
/// `fault-case: kind=F10 name=s3-503-part injected=5 lost=0 dup=0 partial_objects=0
/// partial_txns=0 open_mpus=0 canary_hits=0`.
pub fn report(kind: &str, name: &str, injected: u32, losses: &Losses) {
    println!(
        "fault-case: kind={kind} name={name} injected={injected} lost={} dup={} \
         partial_objects={} partial_txns={} open_mpus={} canary_hits={}",
        losses.lost,
        losses.dup,
        losses.partial_objects,
        losses.partial_txns,
        losses.open_mpus,
        losses.canary_hits
    );
}

/// The last path segment of a key.
fn basename(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Objects under `prefix_uri` that no `manifest.json` under it lists. `manifest.json` and
/// `ductwork.json` themselves and ductwork's `_`-prefixed control objects (lease, markers)
/// are not counted.
pub async fn partial_objects(prefix_uri: &str) -> u64 {
    let (bucket, _) = split_s3_uri(prefix_uri);
    let keys = list_keys(prefix_uri).await;
    let mut listed = std::collections::HashSet::new();
    for key in keys.iter().filter(|k| basename(k) == "manifest.json") {
        let bytes = get_object(&format!("s3://{bucket}/{key}")).await;
        let json: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("s3://{bucket}/{key} is not JSON: {e}"));
        for entry in json["entries"].as_array().into_iter().flatten() {
            if let Some(url) = entry["url"].as_str() {
                listed.insert(url.to_string());
            }
        }
    }
    let unlisted: Vec<&String> = keys
        .iter()
        .filter(|k| {
            let name = basename(k);
            name != "manifest.json" && name != "ductwork.json" && !name.starts_with('_')
        })
        .filter(|k| !listed.contains(&format!("s3://{bucket}/{k}")))
        .collect();
    if !unlisted.is_empty() {
        eprintln!("partial objects under {prefix_uri}: {unlisted:?}");
    }
    unlisted.len() as u64
}

/// Open multipart uploads under `prefix_uri`.
pub async fn open_mpus(prefix_uri: &str) -> u64 {
    let open = open_uploads(prefix_uri).await;
    if !open.is_empty() {
        eprintln!("open multipart uploads under {prefix_uri}: {open:?}");
    }
    open.len() as u64
}

/// `count(*)` and the md5 of the sorted row texts of `table` (order-independent).
pub async fn pg_table_checksum(client: &tokio_postgres::Client, table: &str) -> (i64, String) {
    let sql = format!(
        "SELECT count(*)::bigint, \
                coalesce(md5(string_agg(r, E'\\n' ORDER BY r)), md5('')) \
         FROM (SELECT t::text AS r FROM {table} t) s"
    );
    let row = client
        .query_one(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("checksum of {table}: {e}"));
    (row.get(0), row.get(1))
}

/// How often `canary` occurs in the run's stdout plus stderr.
pub fn canary_hits(run: &Run, canary: &str) -> u64 {
    if canary.is_empty() {
        return 0;
    }
    (run.stdout.matches(canary).count() + run.stderr.matches(canary).count()) as u64
}
