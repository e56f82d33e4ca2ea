//! `ductwork manifest merge`: the manifests of a fan-out's chunk extracts (`extract
//! --split-by COL --chunks N --chunk K`) joined into one manifest, so one `load` COPYs the
//! whole table. Refused unless every chunk 0..N-1 is there exactly once and all were made by
//! the same run, query and split plan. The merged `ductwork.json` is written first and the
//! manifest last, as for an extract.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::manifest;
use crate::store::Store;
use crate::{Ctx, Outcome};

/// The step name in the error line.
pub const STEP: &str = "manifest-merge";

/// `ductwork manifest …`.
#[derive(Debug, Clone, Subcommand)]
pub enum ManifestCommand {
    /// Join the manifests of chunk extracts into one manifest (and ductwork.json) for one load.
    Merge(MergeArgs),
}

/// `ductwork manifest merge`.
#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// Chunk manifests: URLs, or patterns where `*` matches within one path segment
    /// (`s3://bucket/run/chunk-*/manifest.json`).
    #[arg(required = true, value_name = "MANIFEST")]
    pub inputs: Vec<String>,
    /// The merged manifest to write (`…/manifest.json`; ductwork.json goes beside it).
    #[arg(long, value_name = "URI")]
    pub to: String,
}

/// One chunk's manifest and metadata.
struct Chunk {
    url: String,
    entries: Vec<Value>,
    meta: Value,
    index: usize,
}

/// Runs `manifest merge`.
pub async fn run(ctx: &Ctx, cmd: ManifestCommand) -> anyhow::Result<Outcome> {
    let ManifestCommand::Merge(args) = cmd;
    if !args.to.ends_with(".json") {
        bail!(
            "--to {:?} must name the merged manifest (…/manifest.json)",
            args.to
        );
    }
    let store = Store::new(&ctx.config.s3);
    let mut urls = Vec::new();
    for pattern in &args.inputs {
        let found = store.glob(pattern).await?;
        if found.is_empty() {
            bail!("no manifest matches {pattern}");
        }
        urls.extend(found);
    }
    urls.sort();
    urls.dedup();
    if urls.contains(&args.to) {
        bail!("--to {} is also an input", args.to);
    }
    let mut chunks = Vec::new();
    for url in &urls {
        chunks.push(read_chunk(&store, url).await?);
    }
    let merged = merge(&chunks, &args.to)?;
    if ctx.global.dry_run {
        return Ok(Outcome {
            summary: json!({"step": STEP, "dry_run": true, "inputs": urls, "to": args.to,
                "rows": merged.meta["rows"], "parts": merged.entries.len()}),
            checks_failed: false,
        });
    }
    let meta_url = manifest::metadata_url(&args.to);
    store
        .put(
            &meta_url,
            Bytes::from(serde_json::to_vec_pretty(&merged.meta)?),
        )
        .await
        .with_context(|| format!("writing {meta_url}"))?;
    store
        .put(
            &args.to,
            Bytes::from(serde_json::to_vec_pretty(
                &json!({ "entries": merged.entries }),
            )?),
        )
        .await
        .with_context(|| format!("writing {}", args.to))?;
    tracing::info!(manifest = %args.to, chunks = chunks.len(), rows = %merged.meta["rows"], "Merged the chunk manifests.");
    Ok(Outcome {
        summary: json!({
            "step": STEP,
            "run_id": merged.meta["run_id"],
            "manifest": args.to,
            "metadata": meta_url,
            "chunks": chunks.len(),
            "rows": merged.meta["rows"],
            "parts": merged.entries.len(),
            "inputs": urls,
        }),
        checks_failed: false,
    })
}

async fn read_chunk(store: &Store, url: &str) -> anyhow::Result<Chunk> {
    let bytes = store
        .get(url)
        .await
        .with_context(|| format!("reading {url}"))?;
    // Validates the entries (s3:// or file:// URLs).
    manifest::parse_manifest(&bytes, url)?;
    let doc: Value = serde_json::from_slice(&bytes).with_context(|| format!("parsing {url}"))?;
    let entries = doc["entries"].as_array().cloned().unwrap_or_default();
    let meta_url = manifest::metadata_url(url);
    let meta: Value =
        serde_json::from_slice(&store.get(&meta_url).await.with_context(|| {
            format!("reading {meta_url} (every chunk needs its ductwork.json)")
        })?)
        .with_context(|| format!("parsing {meta_url}"))?;
    let index = meta["split"]["chunk"]
        .as_u64()
        .and_then(|k| usize::try_from(k).ok())
        .with_context(|| {
            format!("{meta_url} is not a chunk extract (no split.chunk: made without --chunk)")
        })?;
    Ok(Chunk {
        url: url.to_owned(),
        entries,
        meta,
        index,
    })
}

/// The merged manifest entries and metadata.
#[derive(Debug)]
struct Merged {
    entries: Vec<Value>,
    meta: Value,
}

/// Checks that `chunks` are one complete fan-out and joins them.
fn merge(chunks: &[Chunk], to: &str) -> anyhow::Result<Merged> {
    let first = chunks.first().context("no chunk manifests")?;
    let want = first.meta["split"]["chunks"]
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .with_context(|| format!("{}: split.chunks is missing", first.url))?;
    for (field, label) in [
        (&["split", "plan_sha256"][..], "split plan"),
        (&["query_sha256"][..], "query"),
        (&["run_id"][..], "run id"),
        (&["columns"][..], "columns"),
        (&["null_marker"][..], "NULL marker"),
    ] {
        let get = |c: &Chunk| field.iter().fold(&c.meta, |v, k| &v[*k]).clone();
        let expected = get(first);
        for c in chunks {
            if get(c) != expected {
                bail!(
                    "{} (chunk {}) has another {label} than {} (chunk {}): {} vs {}; the chunks are not one extract",
                    c.url,
                    c.index,
                    first.url,
                    first.index,
                    get(c),
                    expected
                );
            }
        }
    }
    let mut by_index: BTreeMap<usize, &Chunk> = BTreeMap::new();
    for c in chunks {
        if let Some(other) = by_index.insert(c.index, c) {
            bail!(
                "chunk {} appears twice: {} and {}",
                c.index,
                other.url,
                c.url
            );
        }
    }
    let missing: Vec<usize> = (0..want).filter(|k| !by_index.contains_key(k)).collect();
    if !missing.is_empty() {
        bail!(
            "chunk(s) {missing:?} of {want} missing: no manifest for them among {} input(s); refusing to merge an incomplete extract",
            chunks.len()
        );
    }
    if let Some((&k, c)) = by_index.iter().find(|(&k, _)| k >= want) {
        bail!("{} is chunk {k}, but the plan has {want} chunks", c.url);
    }

    let mut entries = Vec::new();
    let mut parts = Vec::new();
    let mut rows = 0u64;
    let mut bytes_raw = 0u64;
    let mut bytes_compressed = 0u64;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut started: Option<String> = None;
    let mut finished: Option<String> = None;
    for c in by_index.values() {
        entries.extend(c.entries.iter().cloned());
        parts.extend(c.meta["parts"].as_array().cloned().unwrap_or_default());
        rows += c.meta["rows"].as_u64().unwrap_or(0);
        bytes_raw += c.meta["bytes_raw"].as_u64().unwrap_or(0);
        bytes_compressed += c.meta["bytes_compressed"].as_u64().unwrap_or(0);
        if let Some(obj) = c.meta["counts"].as_object() {
            for (k, v) in obj {
                *counts.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
        let s = c.meta["started"].as_str().map(str::to_owned);
        if started.is_none() || s < started {
            started = s;
        }
        let f = c.meta["finished"].as_str().map(str::to_owned);
        if f > finished {
            finished = f;
        }
    }
    if entries.len() != parts.len() {
        bail!(
            "the chunk manifests list {} parts but their ductwork.json files {}",
            entries.len(),
            parts.len()
        );
    }
    let mut meta = first.meta.clone();
    meta["rows"] = json!(rows);
    meta["bytes_raw"] = json!(bytes_raw);
    meta["bytes_compressed"] = json!(bytes_compressed);
    meta["parts"] = Value::Array(parts);
    meta["counts"] = json!(counts);
    meta["started"] = json!(started);
    meta["finished"] = json!(finished);
    meta["split"]["chunk"] = Value::Null;
    meta["split"]["merged_from"] = json!(by_index.values().map(|c| &c.url).collect::<Vec<_>>());
    meta["merged_to"] = json!(to);
    Ok(Merged { entries, meta })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(index: usize, of: usize, plan: &str, rows: u64) -> Chunk {
        let url = format!("s3://b/run/chunk-{index}/manifest.json");
        let part = format!("s3://b/run/chunk-{index}/part-00000.tsv.gz");
        Chunk {
            url,
            entries: vec![json!({"url": part, "mandatory": true, "meta": {"content_length": 10}})],
            meta: json!({
                "run_id": "r1", "query_sha256": "q", "columns": [{"name": "id"}], "null_marker": "\u{1}",
                "rows": rows, "bytes_raw": 5, "bytes_compressed": 10,
                "parts": [{"url": part, "rows": rows}],
                "counts": {"rows": rows, "nul_replaced": 0},
                "split": {"chunks": of, "chunk": index, "plan_sha256": plan},
                "started": format!("2026-01-01T00:00:0{index}Z"), "finished": format!("2026-01-01T00:01:0{index}Z"),
            }),
            index,
        }
    }

    #[test]
    fn merges_a_complete_fan_out_in_chunk_order() {
        let m = merge(
            &[chunk(1, 2, "p", 3), chunk(0, 2, "p", 4)],
            "s3://b/run/manifest.json",
        )
        .unwrap();
        assert_eq!(m.meta["rows"], 7);
        assert_eq!(m.meta["counts"]["rows"], 7);
        assert_eq!(m.entries.len(), 2);
        assert!(m.entries[0]["url"].as_str().unwrap().contains("chunk-0"));
        assert_eq!(m.meta["started"], "2026-01-01T00:00:00Z");
        assert_eq!(m.meta["finished"], "2026-01-01T00:01:01Z");
        assert!(m.meta["split"]["chunk"].is_null());
    }

    #[test]
    fn refuses_missing_duplicate_and_foreign_chunks() {
        let e = merge(&[chunk(0, 3, "p", 1), chunk(2, 3, "p", 1)], "t").unwrap_err();
        assert!(e.to_string().contains("[1] of 3 missing"), "{e}");
        let e = merge(&[chunk(0, 2, "p", 1), chunk(0, 2, "p", 1)], "t").unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
        let e = merge(&[chunk(0, 2, "p", 1), chunk(1, 2, "other", 1)], "t").unwrap_err();
        assert!(e.to_string().contains("split plan"), "{e}");
        let mut c = chunk(1, 2, "p", 1);
        c.meta["run_id"] = json!("r2");
        let e = merge(&[chunk(0, 2, "p", 1), c], "t").unwrap_err();
        assert!(e.to_string().contains("run id"), "{e}");
    }
}
