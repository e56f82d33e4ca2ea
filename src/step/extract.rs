//! `ductwork extract`: one query (or several sharded sources) to gzipped Redshift TSV parts,
//! `ductwork.json` and, last, `manifest.json` (SPEC §4).
//!
//! Order of events: every part is written as an uncommitted upload (or temp file); only after
//! every source reported a clean end of stream and rows written == rows read are the parts
//! committed, then `ductwork.json`, then the manifest; then stale parts of earlier attempts
//! are removed. Any failure before the manifest aborts every part, so the prefix never holds
//! a manifest for incomplete data.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use serde_json::json;

use crate::cli::{ExtractArgs, NulArg, Utf8Arg};
use crate::config::{ConnSpec, DbKind};
use crate::ident::TableName;
use crate::logging::Progress;
use crate::parts::{Block, PartResult, PartsConfig, Workers};
use crate::sink::{part_name, Dest};
use crate::source::{self, BlockWriter, ColumnInfo, SourceOpts, SourceStats};
use crate::split::{After, Bound, Planner, SplitPlan};
use crate::tsv;
use crate::{Ctx, Outcome};

/// S3's smallest multipart chunk (all but the last): 5 MiB.
/// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html>
const MIN_CHUNK: u64 = 5 << 20;

/// The table named in the error line: `--table`, else none.
pub fn table_label(args: &ExtractArgs) -> Option<String> {
    args.table.clone()
}

/// Builds the query text for one source.
fn query_for(args: &ExtractArgs, kind: DbKind) -> anyhow::Result<String> {
    let params = args
        .params
        .iter()
        .map(|p| crate::sqltext::parse_param(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(t) = &args.table {
        let name = TableName::parse(t)?;
        return Ok(match kind {
            DbKind::Mysql => format!("SELECT * FROM {}", name.mysql()),
            _ => format!("SELECT * FROM {name}"),
        });
    }
    let text = match (&args.sql, &args.sql_file) {
        (Some(sql), _) => sql.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading --sql-file {}", f.display()))?,
        (None, None) => bail!("one of --sql, --sql-file or --table is required"),
    };
    crate::sqltext::substitute_params(&text, &params)
}

fn cell_policy(args: &ExtractArgs) -> tsv::CellPolicy {
    tsv::CellPolicy {
        nul: match args.nul {
            NulArg::Error => tsv::NulPolicy::Error,
            NulArg::Replace => tsv::NulPolicy::Replace,
            NulArg::Strip => tsv::NulPolicy::Strip,
        },
        utf8: match args.invalid_utf8 {
            Utf8Arg::Error => tsv::Utf8Policy::Error,
            Utf8Arg::Replace => tsv::Utf8Policy::Replace,
        },
    }
}

/// Runs the extract.
pub async fn run(ctx: &Ctx, args: ExtractArgs) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let specs: Vec<ConnSpec> = args
        .sources
        .iter()
        .map(|s| ctx.config.source(s))
        .collect::<anyhow::Result<_>>()?;
    for spec in &specs {
        for w in &spec.warnings {
            tracing::warn!("{w}");
        }
    }
    let mut names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    if names.len() != specs.len() {
        bail!("the same source is named twice");
    }
    if let Some(col) = &args.shard_column {
        crate::ident::validate_ident(col).context("--shard-column")?;
    }
    let is_s3 = args.to.starts_with("s3://");
    if is_s3 && !(MIN_CHUNK..=(5 << 30)).contains(&args.upload_chunk) {
        bail!("--upload-chunk must be between 5 MiB and 5 GiB (S3 multipart limits)");
    }
    if args.part_size == 0 || args.uploads_in_flight == 0 {
        bail!("--part-size and --uploads-in-flight must be positive");
    }
    let queries: Vec<String> = specs
        .iter()
        .map(|s| query_for(&args, s.kind))
        .collect::<anyhow::Result<_>>()?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
        .max(1);

    validate_big_table_flags(&args, &specs)?;
    if ctx.global.dry_run {
        return Ok(dry_run(ctx, &args, &specs, &queries));
    }

    tracing::info!(
        sources = specs.len(),
        to = %args.to,
        query_sha256 = %sha_hex(&queries[0]),
        run_id = %ctx.run_id,
        "Extract started."
    );
    let dest = Arc::new(Dest::open(&args.to, &ctx.config.s3).await?);
    let lease = crate::lease::Lease::acquire(&dest, &ctx.run_id, args.lease_ttl).await?;
    let result = async {
        let prepared = prepare(ctx, &args, &specs, &queries).await?;
        let r = write(
            ctx, &args, &specs, &queries, &prepared, threads, &dest, &lease, started,
        )
        .await;
        if let Some(p) = prepared.planner {
            p.close().await;
        }
        r
    }
    .await;
    lease.release().await;
    result
}

/// What [`prepare`] decided: the (source, query) pairs to read, the planning session to keep
/// open while they read (its exported snapshot), and the record for `ductwork.json`.
struct Prepared {
    readers: Vec<(ConnSpec, String)>,
    planner: Option<Planner>,
    snapshot: Option<String>,
    after: Option<After>,
    split: Option<(SplitPlan, Option<usize>)>,
}

fn validate_big_table_flags(args: &ExtractArgs, specs: &[ConnSpec]) -> anyhow::Result<()> {
    if let Some(c) = &args.where_after {
        crate::ident::validate_ident(c).context("--where-after")?;
        if args.after.is_none() && args.after_sql.is_none() {
            bail!("--where-after needs --after VALUE or --after-sql SQL");
        }
    }
    if let Some(c) = &args.split_by {
        crate::ident::validate_ident(c).context("--split-by")?;
        if specs.len() > 1 {
            bail!("--split-by reads one source in key ranges; it cannot be combined with several --source");
        }
        if args.chunks == 0 || args.chunks > 256 {
            bail!("--chunks must be between 1 and 256");
        }
        if let Some(k) = args.chunk {
            if k >= args.chunks {
                bail!(
                    "--chunk {k} is out of range: chunks are 0..={}",
                    args.chunks - 1
                );
            }
        }
    }
    if args.after_sql.is_some() && args.after_warehouse.is_none() && specs.len() > 1 {
        bail!("--after-sql without --after-warehouse runs on the source: name one source");
    }
    Ok(())
}

/// The split plan's default place: `split-plan.json` in the folder above `--to`.
fn default_plan_uri(to: &str) -> anyhow::Result<String> {
    let trimmed = to.trim_end_matches('/');
    let scheme_end = trimmed.find("://").map_or(0, |i| i + 3);
    match trimmed.rsplit_once('/') {
        Some((parent, _)) if parent.len() > scheme_end => Ok(format!("{parent}/split-plan.json")),
        _ => bail!("--to {to:?} has no parent folder for the shared split plan: pass --split-plan"),
    }
}

/// Resolves the incremental filter and the split plan, and builds the readers' queries.
async fn prepare(
    ctx: &Ctx,
    args: &ExtractArgs,
    specs: &[ConnSpec],
    queries: &[String],
) -> anyhow::Result<Prepared> {
    if args.where_after.is_none() && args.split_by.is_none() {
        return Ok(Prepared {
            readers: specs.iter().cloned().zip(queries.iter().cloned()).collect(),
            planner: None,
            snapshot: None,
            after: None,
            split: None,
        });
    }
    let spec = &specs[0];
    let base = &queries[0];
    let from_table = args.table.is_some();
    let query_sha = sha_hex(base);
    let store = crate::store::Store::new(&ctx.config.s3);

    // A fan-out worker whose plan already exists takes everything from it.
    let plan_uri = match (args.chunk, &args.split_plan) {
        (Some(_), Some(u)) => Some(u.clone()),
        (Some(_), None) => Some(default_plan_uri(&args.to)?),
        (None, _) => None,
    };
    let mut shared: Option<SplitPlan> = match &plan_uri {
        Some(u) if store.exists(u).await? => Some(read_plan(&store, u).await?),
        _ => None,
    };
    let app_name = format!("ductwork:{}:extract", ctx.run_id);
    let mut planner = if shared.is_none() || args.chunk.is_none() {
        Some(
            Planner::open(spec, &app_name)
                .await
                .context("opening the planning session")?,
        )
    } else {
        None
    };

    let mut after = match (&shared, &mut planner) {
        (Some(p), _) => p.after.clone(),
        (None, Some(pl)) => resolve_after(ctx, args, spec, base, pl).await?,
        (None, None) => None,
    };
    if let Some(p) = &shared {
        check_plan_after(p, args, plan_uri.as_deref().unwrap_or_default())?;
    }

    let mut split = None;
    if let Some(col) = &args.split_by {
        let plan = match shared.take() {
            Some(p) => p,
            None => {
                let pl = planner.as_mut().context("no planning session")?;
                let integer = pl.is_integer(base, col).await?;
                let preds: Vec<String> = after
                    .as_ref()
                    .and_then(|a| a.predicate(spec.kind))
                    .into_iter()
                    .collect();
                let restricted = crate::split::restrict(base, from_table, &preds);
                let (mode, bounds, keyed_rows) = pl
                    .bounds(&restricted, col, args.chunks, args.split_mode, integer)
                    .await
                    .with_context(|| format!("planning the split on {col:?}"))?;
                let made = SplitPlan {
                    column: col.clone(),
                    chunks: args.chunks,
                    mode,
                    integer,
                    bounds,
                    query_sha256: query_sha.clone(),
                    after: after.clone(),
                    keyed_rows,
                };
                match &plan_uri {
                    Some(u) => {
                        let body = Bytes::from(serde_json::to_vec_pretty(&made)?);
                        if store
                            .put_if_absent(u, body)
                            .await
                            .with_context(|| format!("writing the split plan {u}"))?
                        {
                            tracing::info!(plan = %u, "Wrote the shared split plan.");
                            made
                        } else {
                            // Another worker was first: use its plan (and its watermark).
                            let theirs = read_plan(&store, u).await?;
                            check_plan_after(&theirs, args, u)?;
                            after = theirs.after.clone();
                            theirs
                        }
                    }
                    None => made,
                }
            }
        };
        if plan.column != *col || plan.chunks != args.chunks || plan.query_sha256 != query_sha {
            bail!(
                "the shared split plan {} is for column {:?}, {} chunks and query sha256 {}; this worker has {col:?}, {} chunks and {query_sha}: every worker must run the same extract",
                plan_uri.as_deref().unwrap_or_default(),
                plan.column,
                plan.chunks,
                plan.query_sha256,
                args.chunks
            );
        }
        tracing::info!(column = %col, chunks = plan.chunks, mode = ?plan.mode, bounds = ?plan.bounds, keyed_rows = ?plan.keyed_rows, "Split plan.");
        split = Some((plan, args.chunk));
    }

    let readers: Vec<(ConnSpec, String)> = match &split {
        Some((plan, only)) => (0..plan.chunks)
            .filter(|k| only.is_none_or(|o| o == *k))
            .map(|k| {
                let mut preds: Vec<String> = after
                    .as_ref()
                    .and_then(|a| a.predicate(spec.kind))
                    .into_iter()
                    .collect();
                preds.push(plan.chunk_predicate(spec.kind, k));
                (
                    spec.clone(),
                    crate::split::restrict(base, from_table, &preds),
                )
            })
            .collect(),
        None => specs
            .iter()
            .zip(queries)
            .map(|(s, q)| {
                let preds: Vec<String> = after
                    .as_ref()
                    .and_then(|a| a.predicate(s.kind))
                    .into_iter()
                    .collect();
                (s.clone(), crate::split::restrict(q, from_table, &preds))
            })
            .collect(),
    };
    // The exported snapshot is only shared in-process; a lone reader needs none.
    let snapshot = planner
        .as_ref()
        .and_then(Planner::snapshot)
        .filter(|_| readers.len() > 1);
    if snapshot.is_none() {
        if let Some(p) = planner.take() {
            p.close().await;
        }
    }
    Ok(Prepared {
        readers,
        planner,
        snapshot,
        after,
        split,
    })
}

/// A worker's incremental flags must agree with the shared plan's.
fn check_plan_after(plan: &SplitPlan, args: &ExtractArgs, uri: &str) -> anyhow::Result<()> {
    match (&plan.after, &args.where_after) {
        (None, None) => Ok(()),
        (Some(a), Some(col)) if &a.column == col => {
            if let Some(given) = &args.after {
                let same = match &a.value {
                    Some(Bound::Int(i)) => given.trim().parse::<i128>().ok() == Some(*i),
                    Some(Bound::Text(t)) => t == given,
                    None => false,
                };
                if !same {
                    bail!(
                        "--after {given:?} differs from the watermark {:?} of the shared split plan {uri}",
                        a.value
                    );
                }
            }
            Ok(())
        }
        _ => bail!(
            "the shared split plan {uri} was made with other --where-after flags: every worker must pass the same"
        ),
    }
}

async fn read_plan(store: &crate::store::Store, uri: &str) -> anyhow::Result<SplitPlan> {
    let bytes = store
        .get(uri)
        .await
        .with_context(|| format!("reading the split plan {uri}"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing the split plan {uri}"))
}

/// The watermark: `--after`, or the first value of `--after-sql` on the warehouse (or the
/// source).
async fn resolve_after(
    ctx: &Ctx,
    args: &ExtractArgs,
    spec: &ConnSpec,
    base: &str,
    planner: &mut Planner,
) -> anyhow::Result<Option<After>> {
    let Some(col) = &args.where_after else {
        return Ok(None);
    };
    let integer = planner.is_integer(base, col).await?;
    let (text, source) = match (&args.after, &args.after_sql) {
        (Some(v), _) => (Some(v.clone()), "--after".to_owned()),
        (None, Some(sql)) => match &args.after_warehouse {
            Some(w) => {
                let wspec = ctx.config.warehouse(w)?;
                let client = crate::source::postgres::connect(
                    &wspec,
                    &format!("ductwork:{}:extract-watermark", ctx.run_id),
                )
                .await?;
                client
                    .batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'")
                    .await
                    .context("setting up the watermark session")?;
                let v = crate::split::scalar_pg(&client, sql)
                    .await
                    .with_context(|| format!("running --after-sql on warehouse {}", wspec.name))?;
                (
                    v,
                    format!(
                        "--after-sql sha256 {} on warehouse {}",
                        sha_hex(sql),
                        wspec.name
                    ),
                )
            }
            None => {
                let v = planner
                    .scalar(sql)
                    .await
                    .with_context(|| format!("running --after-sql on source {}", spec.name))?;
                (
                    v,
                    format!(
                        "--after-sql sha256 {} on source {}",
                        sha_hex(sql),
                        spec.name
                    ),
                )
            }
        },
        (None, None) => bail!("--where-after needs --after or --after-sql"),
    };
    let value = match text {
        Some(t) => {
            let t = crate::split::watermark_for(spec.kind, &t)?;
            Some(Bound::for_column(&t, integer, "the watermark")?)
        }
        None => {
            tracing::warn!(column = %col, "The watermark query found no value: extracting every row.");
            None
        }
    };
    tracing::info!(column = %col, watermark = ?value, "Incremental extract.");
    Ok(Some(After {
        column: col.clone(),
        value,
        inclusive: !args.after_exclusive,
        source,
    }))
}

/// Reads the sources into parts and commits them, under the lease.
#[allow(clippy::too_many_arguments)]
async fn write(
    ctx: &Ctx,
    args: &ExtractArgs,
    specs: &[ConnSpec],
    queries: &[String],
    prepared: &Prepared,
    threads: usize,
    dest: &Arc<Dest>,
    lease: &crate::lease::Lease,
    started: Instant,
) -> anyhow::Result<Outcome> {
    let started_at = SystemTime::now() - started.elapsed();
    let progress = Arc::new(Progress::default());
    let _reporter = progress.spawn_reporter("extract", ctx.global.log_format);
    let workers = Workers::new(
        PartsConfig {
            part_size: args.part_size,
            chunk_size: usize::try_from(args.upload_chunk).unwrap_or(usize::MAX),
            level: args.gzip_level,
            threads,
            in_flight: args.uploads_in_flight,
        },
        Arc::clone(dest),
        Arc::clone(&progress),
    );
    // Two blocks per worker in the channel: enough to keep both cores busy, small enough
    // that a slow upload stops the source read within a few MiB.
    let (tx, rx) = async_channel::bounded::<Block>(threads * 2);
    // And at most three blocks' worth of bytes per worker, however wide the rows.
    let budget = source::BlockBudget::new(threads * 3 * source::BLOCK_SIZE);
    let handles = workers.spawn(&rx)?;

    let mut tasks = Vec::new();
    for (spec, query) in prepared.readers.iter().cloned() {
        let opts = SourceOpts {
            cell: cell_policy(args),
            zero_dates: args.zero_dates,
            special: args.special_values,
            app_name: format!("ductwork:{}:extract", ctx.run_id),
            shard_value: args.shard_column.as_ref().map(|_| spec.name.clone()),
            read_timeout: args.read_timeout,
            snapshot: prepared.snapshot.clone(),
        };
        let mut writer = BlockWriter::new(tx.clone(), Arc::clone(&progress), budget.clone());
        let rx_close = rx.clone();
        tasks.push(tokio::spawn(async move {
            let r = source::extract(&spec, &query, &opts, &mut writer)
                .await
                .with_context(|| format!("reading source {}", spec.name));
            if r.is_err() {
                // Stop the other sources and the workers.
                rx_close.close();
            }
            r
        }));
    }
    drop(tx);
    let mut source_results = Vec::new();
    for t in tasks {
        source_results.push(t.await.context("a source task panicked")?);
    }
    let worker_outputs = tokio::task::spawn_blocking(move || {
        handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
    })
    .await
    .context("joining the compression threads")?;

    let mut parts: Vec<PartResult> = Vec::new();
    let mut worker_error = None;
    for out in worker_outputs {
        match out {
            Ok(o) => {
                parts.extend(o.parts);
                if let Some(e) = o.error {
                    worker_error.get_or_insert(e);
                }
            }
            Err(_) => {
                worker_error.get_or_insert(anyhow::anyhow!("a compression thread panicked"));
            }
        }
    }
    let mut source_error = None;
    let mut columns: Option<Vec<ColumnInfo>> = None;
    let mut stats = SourceStats::default();
    for (r, (spec, _)) in source_results.into_iter().zip(&prepared.readers) {
        match r {
            Ok((cols, st)) => {
                stats.add(&st);
                match &columns {
                    None => columns = Some(cols),
                    Some(first) if *first != cols => {
                        source_error.get_or_insert(anyhow::anyhow!(
                            "source {} returns different columns than {}: {:?} vs {:?}",
                            spec.name,
                            specs[0].name,
                            cols.iter().map(|c| &c.name).collect::<Vec<_>>(),
                            first.iter().map(|c| &c.name).collect::<Vec<_>>()
                        ));
                    }
                    Some(_) => {}
                }
            }
            Err(e) => {
                source_error.get_or_insert(e);
            }
        }
    }
    // A source that failed because the workers stopped reports only that; prefer the
    // workers' own error then.
    let failure = match (source_error, worker_error) {
        (Some(s), Some(w))
            if s.chain()
                .any(|c| c.to_string().contains("compression stage stopped")) =>
        {
            Some(w)
        }
        (Some(s), _) => Some(s),
        (None, Some(w)) => Some(w),
        (None, None) => None,
    };
    if let Some(err) = failure {
        return Err(abort_and_fail(parts, err).await);
    }
    let rows_written: u64 = parts.iter().map(|p| p.rows).sum();
    if rows_written != stats.rows {
        let err = anyhow::anyhow!(
            "rows written ({rows_written}) differ from rows read ({}); nothing was committed",
            stats.rows
        );
        return Err(abort_and_fail(parts, err).await);
    }
    let multiple = args.parts_multiple.unwrap_or(1).max(1);
    let wanted = parts.len().max(1).div_ceil(multiple) * multiple;
    if parts.len() < wanted {
        // An empty result still gets one (empty) part; --parts-multiple pads with empty parts.
        let w = workers.clone_shared();
        let extra = wanted - parts.len();
        let made = tokio::task::spawn_blocking(move || {
            (0..extra).map(|_| w.empty_part()).collect::<Vec<_>>()
        })
        .await
        .context("writing empty parts")?;
        let mut failed = None;
        for p in made {
            match p {
                Ok(p) => parts.push(p),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(abort_and_fail(parts, e.context("writing an empty part")).await);
        }
    }
    parts.sort_by_key(|p| p.index);

    let mut meta_parts = Vec::new();
    let mut entries = Vec::new();
    let mut pending = Vec::new();
    for p in parts {
        let name = part_name(p.index);
        let url = dest.url(&name);
        meta_parts.push(json!({
            "name": name, "url": url, "rows": p.rows, "raw_bytes": p.raw_bytes,
            "compressed_bytes": p.compressed_bytes, "sha256": p.sha256,
        }));
        entries.push(json!({
            "url": url, "mandatory": true, "meta": {"content_length": p.compressed_bytes},
        }));
        pending.push((name, p));
    }
    let names: Vec<String> = pending.iter().map(|(n, _)| n.clone()).collect();
    if let Err(e) = lease.check() {
        return Err(abort_and_fail(pending.into_iter().map(|(_, p)| p).collect(), e).await);
    }
    commit_all(dest, pending).await?;

    let columns = columns.unwrap_or_default();
    let mut column_meta: Vec<serde_json::Value> = columns
        .iter()
        .map(|c| json!({"name": c.name, "source_type": c.source_type}))
        .collect();
    if let Some(sc) = &args.shard_column {
        column_meta.push(json!({"name": sc, "source_type": "shard name"}));
    }
    let bytes_raw: u64 = meta_parts
        .iter()
        .filter_map(|p| p["raw_bytes"].as_u64())
        .sum();
    let bytes_compressed: u64 = meta_parts
        .iter()
        .filter_map(|p| p["compressed_bytes"].as_u64())
        .sum();
    let finished_at = SystemTime::now();
    let metadata = json!({
        "format_version": 1,
        "ductwork_version": env!("CARGO_PKG_VERSION"),
        "run_id": ctx.run_id,
        "rows": stats.rows,
        "bytes_raw": bytes_raw,
        "bytes_compressed": bytes_compressed,
        "parts": meta_parts,
        "columns": column_meta,
        "null_marker": String::from_utf8_lossy(tsv::NULL_MARKER),
        "null_as": tsv::NULL_AS_SQL,
        "format": {"delimiter": "\t", "escape": true, "gzip": true, "record_end": "\n"},
        "sources": specs.iter().map(|s| json!({"name": s.name, "url": s.display_url()})).collect::<Vec<_>>(),
        "query_sha256": sha_hex(&queries[0]),
        "incremental": prepared.after,
        "split": prepared.split.as_ref().map(|(plan, chunk)| json!({
            "column": plan.column, "chunks": plan.chunks, "chunk": chunk, "mode": plan.mode,
            "bounds": plan.bounds, "plan_sha256": plan.sha256(), "query_sha256": plan.query_sha256,
        })),
        "table": args.table,
        "counts": stats,
        "started": rfc3339(started_at),
        "finished": rfc3339(finished_at),
    });
    let manifest = json!({ "entries": entries });
    // The metadata, then the manifest (last: it makes the prefix loadable).
    for (name, body, is_manifest) in [
        ("ductwork.json", &metadata, false),
        ("manifest.json", &manifest, true),
    ] {
        let body = Bytes::from(serde_json::to_vec_pretty(body)?);
        if let Err(e) = dest.put_small(name, body, "application/json").await {
            let e = e.context(format!("writing {name}"));
            return Err(unwind_commit(dest, &names, is_manifest, e).await);
        }
    }
    let removed = match dest.remove_stale(&names, started_at).await {
        Ok(r) => r,
        Err(e) => {
            // The extract itself is complete: stale parts are outside the manifest and harmless.
            tracing::warn!(error = %format!("{e:#}"), "Could not remove stale parts; the next run retries.");
            Vec::new()
        }
    };
    let secs = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rows_per_s = (stats.rows as f64 / secs.max(1e-3)).round();
    tracing::info!(
        rows = stats.rows,
        parts = names.len(),
        bytes_raw,
        bytes_compressed,
        elapsed_ms = crate::elapsed_ms(started),
        "Extract finished."
    );
    Ok(Outcome {
        summary: json!({
            "step": "extract",
            "run_id": ctx.run_id,
            "rows": stats.rows,
            "parts": names.len(),
            "bytes_raw": bytes_raw,
            "bytes_compressed": bytes_compressed,
            "manifest": dest.url("manifest.json"),
            "metadata": dest.url("ductwork.json"),
            "columns": columns.len() + usize::from(args.shard_column.is_some()),
            "counts": stats,
            "stale_removed": removed,
            "duration_ms": crate::elapsed_ms(started),
            "rows_per_s": rows_per_s,
        }),
        checks_failed: false,
    })
}

/// After the parts were committed but the metadata or the manifest could not be written:
/// removes what this attempt committed, so the prefix holds nothing loadable and no parts
/// without a manifest. A manifest whose write failed may still have landed (an ambiguous S3
/// answer): it is deleted first, and the parts only once that delete succeeded.
async fn unwind_commit(
    dest: &crate::sink::Dest,
    parts: &[String],
    manifest_attempted: bool,
    err: anyhow::Error,
) -> anyhow::Error {
    if manifest_attempted {
        if let Err(e) = dest.remove_names(&["manifest.json".to_owned()]).await {
            return err.context(format!(
                "and removing the possibly written manifest.json failed too ({e:#}): the committed parts stay; rerun this step"
            ));
        }
    }
    let mut names = parts.to_vec();
    names.push("ductwork.json".to_owned());
    match dest.remove_names(&names).await {
        Ok(()) => err.context("no manifest was written; the committed parts were removed"),
        Err(e) => err.context(format!(
            "no manifest was written; removing the committed parts failed ({e:#}): the next run at this prefix removes them"
        )),
    }
}

/// Aborts every part (errors logged: the next run at this prefix cleans up). Returns the
/// parts (key and upload id) whose abort failed.
async fn abort_all(parts: Vec<PartResult>) -> Vec<String> {
    let aborts = parts.into_iter().map(|p| async move {
        let what = p.out.describe();
        match p.out.abort().await {
            Ok(()) => None,
            Err(e) => {
                tracing::error!(part = %what, error = %format!("{e:#}"), "Abort failed; the next run at this prefix cleans it up.");
                Some(what)
            }
        }
    });
    futures::future::join_all(aborts)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Aborts every part and returns `err`, naming the uploads whose abort failed too.
async fn abort_and_fail(parts: Vec<PartResult>, err: anyhow::Error) -> anyhow::Error {
    let failed = abort_all(parts).await;
    if failed.is_empty() {
        err
    } else {
        err.context(format!(
            "abort failed for {} (the next run at this prefix aborts them)",
            failed.join(", ")
        ))
    }
}

/// Commits every part, 8 at a time; on a failure, aborts the rest and removes the committed.
async fn commit_all(
    dest: &crate::sink::Dest,
    pending: Vec<(String, PartResult)>,
) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    let results: Vec<(String, anyhow::Result<()>)> = futures::stream::iter(pending)
        .map(|(name, p)| async move {
            let r = p
                .out
                .commit(p.compressed_bytes)
                .await
                .with_context(|| format!("committing {name}"));
            (name, r)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut first_err = None;
    let mut committed = Vec::new();
    for (name, r) in results {
        match r {
            Ok(()) => committed.push(name),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let Some(e) = first_err else { return Ok(()) };
    // No manifest will list the parts that did commit: remove them (S3 parts were deleted
    // already by the commit tracker; deleting again is harmless).
    match dest.remove_names(&committed).await {
        Ok(()) => Err(e.context(
            "a part could not be committed: no manifest was written and the parts committed so far were removed, so nothing at this prefix is loadable",
        )),
        Err(d) => Err(e.context(format!(
            "a part could not be committed: no manifest was written; removing the parts committed so far failed ({d:#}), the next run at this prefix removes them"
        ))),
    }
}

fn dry_run(ctx: &Ctx, args: &ExtractArgs, specs: &[ConnSpec], queries: &[String]) -> Outcome {
    let actions: Vec<serde_json::Value> = specs
        .iter()
        .zip(queries)
        .map(|(s, q)| {
            let sql = match s.kind {
                DbKind::Mysql => format!(
                    "{} (binary protocol, streamed)",
                    source::postgres::trim_query(q)
                ),
                _ => format!("COPY ({}) TO STDOUT", source::postgres::trim_query(q)),
            };
            json!({"source": s.display_url(), "sql": sql})
        })
        .collect();
    Outcome {
        summary: json!({
            "step": "extract",
            "dry_run": true,
            "run_id": ctx.run_id,
            "queries": actions,
            "s3": [
                format!("multipart uploads of part-NNNNN.tsv.gz under {} (committed after a clean end of stream)", args.to),
                format!("put {}ductwork.json", args.to),
                format!("put {}manifest.json (last)", args.to),
                format!("delete part-NNNNN.tsv.gz under {} not in the new manifest", args.to),
            ],
        }),
        checks_failed: false,
    }
}

fn sha_hex(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
