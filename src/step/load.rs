//! `ductwork load` (Dataduct `create-load-redshift`): an extract's manifest into a table, in
//! one transaction (SPEC §6).
//!
//! The table is created from its definition when missing, or compared with it when present
//! (names, order, normalised types: a mismatch lists every difference and loads nothing).
//! Replace mode is `DELETE` + load in one transaction (never TRUNCATE, which commits on
//! Redshift); `--append` keeps the rows. Only the manifest's exact keys are read. Rows loaded
//! must equal `ductwork.json`'s row count, or everything rolls back.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context as _};
use serde_json::json;

use crate::cli::LoadArgs;
use crate::config::ConnSpec;
use crate::ident::TableName;
use crate::manifest::{self, Entry, Metadata};
use crate::step::txn::{self, TxnOutcome};
use crate::store::Store;
use crate::tabledef::{self, SqlType, TableDef};
use crate::warehouse::pgload::{self, LineMap, Target};
use crate::warehouse::sql::{self, Dialect};
use crate::warehouse::{self};
use crate::{tsv, Ctx, Outcome};

/// The step name in the ledger.
const STEP: &str = "load";

/// The table named in the error line: `--table`, else the table the definition creates (the
/// file name only when the definition cannot be read, e.g. a missing file).
pub fn table_label(args: &LoadArgs) -> Option<String> {
    args.table.clone().or_else(|| {
        let path = args.table_def.as_ref()?;
        match tabledef::parse_file(path) {
            Ok(def) => Some(def.name.plain()),
            Err(_) => path.file_stem().map(|s| s.to_string_lossy().into_owned()),
        }
    })
}

/// COPY loads fields by position. When the extract's columns are the table's under the same
/// names but in another order, a positional load would put values in the wrong columns,
/// silently wherever the types allow it: refuse it. (Different names are allowed: extracts
/// are often aliased differently from the warehouse.)
fn check_column_order(meta: &Metadata, table: &TableName, cols: &[&str]) -> anyhow::Result<()> {
    let extract: Vec<String> = meta.columns.iter().map(|c| c.name.to_lowercase()).collect();
    let target: Vec<String> = cols.iter().map(|c| c.to_lowercase()).collect();
    if extract == target {
        return Ok(());
    }
    let (mut a, mut b) = (extract.clone(), target.clone());
    a.sort_unstable();
    b.sort_unstable();
    if a == b {
        bail!(
            "the extract has the columns of table {} in another order ({}; the table has {}): \
             COPY loads by position, so values would land in the wrong columns",
            table.plain(),
            extract.join(", "),
            target.join(", ")
        );
    }
    Ok(())
}

/// What the load works from: the target and the extract.
struct Plan {
    spec: ConnSpec,
    dialect: Dialect,
    table: TableName,
    def: Option<TableDef>,
    entries: Vec<Entry>,
    meta: Option<Metadata>,
    /// The run ledger (None with `--no-ledger`).
    ledger: Option<TableName>,
}

/// Runs the load.
pub async fn run(ctx: &Ctx, args: LoadArgs) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let spec = ctx.config.warehouse(&args.warehouse)?;
    for w in &spec.warnings {
        tracing::warn!("{w}");
    }
    let dialect = warehouse::dialect(&spec)?;
    let def = args
        .table_def
        .as_deref()
        .map(tabledef::parse_file)
        .transpose()?;
    let table = match (&def, &args.table) {
        (Some(d), _) => d.name.clone(),
        (None, Some(t)) => TableName::parse(t)?,
        (None, None) => bail!("--table-def or --table is required"),
    };
    if args.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    let store = Arc::new(Store::new(&ctx.config.s3));
    let manifest_bytes = store
        .get(&args.from)
        .await
        .with_context(|| format!("reading the manifest {}", args.from))?;
    let entries = manifest::parse_manifest(&manifest_bytes, &args.from)?;
    let meta_url = manifest::metadata_url(&args.from);
    let meta = match store.get(&meta_url).await {
        Ok(b) => Some(manifest::parse_metadata(&b, &meta_url)?),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "No ductwork.json beside the manifest; the row count is not checked.");
            None
        }
    };
    if let Some(m) = &meta {
        if m.null_marker.as_bytes() != tsv::NULL_MARKER {
            bail!(
                "{meta_url} was written with NULL marker {:?}; this ductwork reads {:?}",
                m.null_marker,
                String::from_utf8_lossy(tsv::NULL_MARKER)
            );
        }
    }
    let ledger = txn::ledger_table(&args.ledger)?;
    let plan = Plan {
        spec,
        dialect,
        table,
        def,
        entries,
        meta,
        ledger,
    };
    tracing::info!(table = %plan.table.plain(), parts = plan.entries.len(), from = %args.from, "Load started.");
    let summary = match plan.dialect {
        Dialect::Postgres => load_postgres(ctx, &args, &plan, store).await?,
        Dialect::Redshift => load_redshift(ctx, &args, &plan).await?,
    };
    let mut summary = summary;
    summary["duration_ms"] = json!(crate::elapsed_ms(started));
    tracing::info!(table = %plan.table.plain(), rows = %summary["rows"], "Load finished.");
    Ok(Outcome {
        summary,
        checks_failed: false,
    })
}

/// The columns to load into: checked against the definition and the extract.
fn check_columns(
    plan: &Plan,
    existing: Option<&Vec<(String, SqlType)>>,
) -> anyhow::Result<Vec<(String, SqlType)>> {
    let cols: Vec<(String, SqlType)> = match (existing, &plan.def) {
        (Some(cols), Some(def)) => {
            let diffs = tabledef::compare_columns(def, cols);
            if !diffs.is_empty() {
                bail!(
                    "table {} does not match {}: {}",
                    plan.table.plain(),
                    def.origin,
                    diffs.join("; ")
                );
            }
            cols.clone()
        }
        (Some(cols), None) => cols.clone(),
        (None, Some(def)) => def
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.data_type.clone()))
            .collect(),
        (None, None) => bail!(
            "table {} does not exist; pass --table-def to create it",
            plan.table.plain()
        ),
    };
    if let Some(m) = &plan.meta {
        if m.columns.len() != cols.len() {
            bail!(
                "the extract has {} columns ({}) but table {} has {} ({})",
                m.columns.len(),
                m.columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                plan.table.plain(),
                cols.len(),
                cols.iter()
                    .map(|c| c.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let names: Vec<&str> = cols.iter().map(|c| c.0.as_str()).collect();
        check_column_order(m, &plan.table, &names)?;
    }
    Ok(cols)
}

fn create_statements(plan: &Plan, dialect: Dialect) -> Vec<String> {
    let Some(def) = &plan.def else {
        return Vec::new();
    };
    let mut stmts = Vec::new();
    if let Some(schema) = &def.name.schema {
        stmts.push(format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            crate::ident::quote_ident(schema)
        ));
    }
    stmts.push(match dialect {
        Dialect::Postgres => def.create_sql_postgres(),
        Dialect::Redshift => def.create_sql_redshift(),
    });
    stmts
}

fn targets(cols: &[(String, SqlType)]) -> Vec<Target> {
    cols.iter()
        .map(|(_, t)| {
            if t.postgres_sql() == "bytea" {
                Target::HexToBytea
            } else {
                Target::Text
            }
        })
        .collect()
}

/// Adds the part and line of a rejected row, read from PostgreSQL's `COPY t, line N` context.
fn locate(err: anyhow::Error, lines: &Mutex<LineMap>) -> anyhow::Error {
    let place = err.chain().find_map(|c| {
        let db = c
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::as_db_error)?;
        let w = db.where_()?;
        let n: u64 = w
            .split("line ")
            .nth(1)?
            .split(|ch: char| !ch.is_ascii_digit())
            .next()?
            .parse()
            .ok()?;
        let map = lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.locate(n).map(|(url, l)| format!("part {url} line {l}"))
    });
    match place {
        Some(p) => err.context(format!("the warehouse rejected a row at {p}")),
        None => err,
    }
}

async fn load_postgres(
    ctx: &Ctx,
    args: &LoadArgs,
    plan: &Plan,
    store: Arc<Store>,
) -> anyhow::Result<serde_json::Value> {
    let app = format!("ductwork:{}:load", ctx.run_id);
    if ctx.global.dry_run {
        let cols: Vec<String> = match &plan.def {
            Some(d) => d.columns.iter().map(|c| c.name.clone()).collect(),
            None => vec!["<columns from the catalog>".into()],
        };
        // PostgreSQL's TRUNCATE is transactional, so the Redshift guard does not apply here.
        let (ddl, first, last) = txn::ledger_dry_run(plan.ledger.as_ref());
        let mut stmts = ddl;
        stmts.push("BEGIN".to_owned());
        stmts.extend(first);
        stmts.extend(create_statements(plan, Dialect::Postgres));
        let truncate = !args.append && !args.keep_readers;
        if !args.append {
            stmts.push(if truncate {
                format!("TRUNCATE {}", plan.table)
            } else {
                sql::delete_all_sql(&plan.table)
            });
        }
        stmts.push(format!(
            "{}{} -- {} parts from {}",
            sql::copy_from_stdin_sql(&plan.table, &cols)?,
            if truncate { " WITH (FREEZE)" } else { "" },
            plan.entries.len(),
            args.from
        ));
        stmts.extend(last);
        stmts.push("COMMIT".to_owned());
        return Ok(json!({
            "step": "load", "dry_run": true, "table": plan.table.plain(),
            "statements": stmts,
            "s3": plan.entries.iter().map(|e| format!("get {}", e.url)).collect::<Vec<_>>(),
        }));
    }
    let client = warehouse::connect(&plan.spec, &app).await?;
    let existing = warehouse::table_columns(&client, &plan.table).await?;
    let created = existing.is_none();
    let cols = check_columns(plan, existing.as_ref())?;
    let names: Vec<String> = cols.iter().map(|c| c.0.clone()).collect();
    let copy_sql = sql::copy_from_stdin_sql(&plan.table, &names)?;
    let targets = Arc::new(targets(&cols));
    let expected = plan.meta.as_ref().map(|m| m.rows);
    let work = PgLoad {
        ctx,
        args,
        plan,
        created,
        copy_sql: &copy_sql,
        targets: &targets,
        store: &store,
        expected,
    };

    if args.parallel > 1 && created && plan.entries.len() > 1 {
        let key = ledger_key(&client, ctx, args, plan).await?;
        if let Some(k) = &key {
            // The table does not exist, but a run that created, loaded and then lost it
            // (dropped by a later step) is still applied.
            if let Some(before) = txn::lookup(&client, k).await? {
                let done = TxnOutcome::AlreadyApplied(before);
                return Ok(finish(done, ctx, args, plan, key.as_ref()));
            }
        }
        let summary = load_postgres_parallel(&work, &client, key.as_ref()).await?;
        return Ok(finish(
            TxnOutcome::Committed(summary),
            ctx,
            args,
            plan,
            key.as_ref(),
        ));
    }
    if args.parallel > 1 {
        tracing::warn!(
            "--parallel applies to a table this load creates; {} exists, so one session loads it atomically.",
            plan.table.plain()
        );
    }
    let key = ledger_key(&client, ctx, args, plan).await?;
    let started_at = chrono::Utc::now();
    let outcome =
        txn::in_transaction(&client, key.as_ref(), started_at, || work.run(&client)).await?;
    Ok(finish(outcome, ctx, args, plan, key.as_ref()))
}

/// One attempt of a single-session PostgreSQL load, inside the transaction.
struct PgLoad<'a> {
    ctx: &'a Ctx,
    args: &'a LoadArgs,
    plan: &'a Plan,
    created: bool,
    copy_sql: &'a str,
    targets: &'a Arc<Vec<Target>>,
    store: &'a Arc<Store>,
    expected: Option<u64>,
}

impl PgLoad<'_> {
    async fn run(
        &self,
        client: &tokio_postgres::Client,
    ) -> anyhow::Result<txn::Done<serde_json::Value>> {
        for stmt in create_statements(self.plan, Dialect::Postgres)
            .iter()
            .filter(|_| self.created)
        {
            client
                .batch_execute(stmt)
                .await
                .with_context(|| format!("creating {}", self.plan.table.plain()))?;
        }
        let mut deleted = 0;
        // FREEZE needs the table created or truncated in this transaction; it spares the
        // backend the later hint-bit and vacuum work on every loaded row.
        let mut freeze = self.created;
        if !self.args.append && !self.created {
            if self.args.keep_readers {
                deleted = client
                    .execute(&sql::delete_all_sql(&self.plan.table), &[])
                    .await
                    .with_context(|| format!("emptying {}", self.plan.table.plain()))?;
            } else {
                deleted = client
                    .query_one(&sql::count_sql(&self.plan.table), &[])
                    .await
                    .with_context(|| format!("counting {}", self.plan.table.plain()))?
                    .get::<_, i64>(0)
                    .try_into()
                    .unwrap_or(0);
                // PostgreSQL's TRUNCATE is transactional: a failed load rolls it back.
                client
                    .batch_execute(&format!("TRUNCATE {}", self.plan.table))
                    .await
                    .with_context(|| format!("emptying {}", self.plan.table.plain()))?;
                freeze = true;
            }
        }
        let copy_sql = if freeze {
            format!("{} WITH (FREEZE)", self.copy_sql)
        } else {
            self.copy_sql.to_owned()
        };
        let lines = Arc::new(Mutex::new(LineMap::default()));
        let out = pgload::copy_parts(
            client,
            &copy_sql,
            Arc::clone(self.store),
            self.plan.entries.clone(),
            Arc::clone(self.targets),
            Arc::clone(&lines),
        )
        .await
        .map_err(|e| locate(e, &lines))?;
        check_rows(out.rows, self.expected)?;
        Ok(txn::Done {
            value: json!({
                "step": "load", "run_id": self.ctx.run_id, "table": self.plan.table.plain(), "dialect": "postgres",
                "rows": out.rows, "rows_deleted": deleted,
                "emptied_with": if self.args.append || self.created { "none" } else if self.args.keep_readers { "delete" } else { "truncate" }, "created": self.created, "append": self.args.append,
                "parts": self.plan.entries.len(), "bytes_read": out.bytes_read, "sessions": 1,
                "from": self.args.from,
            }),
            rows: out.rows,
        })
    }
}

/// The rows COPY loaded must be the rows the extract wrote (the transaction rolls back).
fn check_rows(rows: u64, expected: Option<u64>) -> anyhow::Result<()> {
    match expected {
        Some(n) if rows != n => {
            bail!("COPY loaded {rows} rows but the extract holds {n}; rolled back")
        }
        _ => Ok(()),
    }
}

/// The ledger key of a load: the table and the manifest it loads (one run may load two
/// manifests into one table); None with `--no-ledger`. Creates the ledger if missing.
async fn ledger_key(
    client: &tokio_postgres::Client,
    ctx: &Ctx,
    args: &LoadArgs,
    plan: &Plan,
) -> anyhow::Result<Option<txn::LedgerKey>> {
    let Some(mut key) =
        txn::table_ledger_key(client, plan.ledger.clone(), &ctx.run_id, STEP, &plan.table).await?
    else {
        return Ok(None);
    };
    key.target = txn::fit_target(format!("{} <- {}", key.target, args.from));
    Ok(Some(key))
}

/// The summary of a load, or of one that an earlier attempt of this run id already applied.
fn finish(
    outcome: TxnOutcome<serde_json::Value>,
    ctx: &Ctx,
    args: &LoadArgs,
    plan: &Plan,
    key: Option<&txn::LedgerKey>,
) -> serde_json::Value {
    let mut summary = match outcome {
        TxnOutcome::Committed(s) => s,
        TxnOutcome::AlreadyApplied(before) => {
            tracing::info!(
                table = %plan.table.plain(),
                run_id = %ctx.run_id,
                "Already loaded by this run id; nothing changed."
            );
            let mut s = key.map_or(json!({}), |k| before.summary(STEP, &ctx.run_id, &k.table));
            s["table"] = json!(plan.table.plain());
            s["from"] = json!(args.from);
            s
        }
    };
    summary["ledger"] = json!(key.map(|k| k.table.plain()));
    summary
}

/// Loads a table this load created over N sessions: every session COPYs its share in its own
/// transaction, and all commit only when every one succeeded and the rows add up; otherwise
/// every session rolls back and the new table is dropped. (A crash between the commits can
/// leave the new table partly loaded; it did not exist before, so production is untouched.)
async fn load_postgres_parallel(
    work: &PgLoad<'_>,
    admin: &tokio_postgres::Client,
    key: Option<&txn::LedgerKey>,
) -> anyhow::Result<serde_json::Value> {
    let PgLoad {
        ctx,
        args,
        plan,
        copy_sql,
        targets,
        store,
        ..
    } = *work;
    let started_at = chrono::Utc::now();
    for stmt in create_statements(plan, Dialect::Postgres) {
        admin
            .batch_execute(&stmt)
            .await
            .with_context(|| format!("creating {}", plan.table.plain()))?;
    }
    let n = args.parallel.min(plan.entries.len());
    let mut shares: Vec<Vec<Entry>> = vec![Vec::new(); n];
    for (i, e) in plan.entries.iter().enumerate() {
        shares[i % n].push(e.clone());
    }
    let app = format!("ductwork:{}:load", ctx.run_id);
    let mut tasks = Vec::new();
    for share in shares {
        let spec = plan.spec.clone();
        let app = app.clone();
        let store = Arc::clone(store);
        let targets = Arc::clone(targets);
        let copy_sql = copy_sql.to_owned();
        tasks.push(tokio::spawn(async move {
            let client = warehouse::connect(&spec, &app).await?;
            client.batch_execute("BEGIN").await.context("BEGIN")?;
            let lines = Arc::new(Mutex::new(LineMap::default()));
            let out = pgload::copy_parts(
                &client,
                &copy_sql,
                store,
                share,
                targets,
                Arc::clone(&lines),
            )
            .await
            .map_err(|e| locate(e, &lines))?;
            anyhow::Ok((client, out))
        }));
    }
    let mut sessions = Vec::new();
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(s)) => sessions.push(s),
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(e) => {
                failure.get_or_insert(anyhow::anyhow!("a load session failed: {e}"));
            }
        }
    }
    let rows: u64 = sessions.iter().map(|(_, o)| o.rows).sum();
    let bytes: u64 = sessions.iter().map(|(_, o)| o.bytes_read).sum();
    if failure.is_none() {
        if let Some(expected) = plan.meta.as_ref().map(|m| m.rows) {
            if rows != expected {
                failure = Some(anyhow::anyhow!(
                    "COPY loaded {rows} rows but the extract holds {expected}"
                ));
            }
        }
    }
    if failure.is_none() {
        // The ledger row goes with the session that commits last: when it is there, every
        // session committed. (A crash between the commits leaves a partly loaded new table
        // and no row; a replace-mode re-run reloads it whole.)
        if let (Some(k), Some((c, _))) = (key, sessions.last()) {
            if let Err(e) = txn::record(c, k, rows, started_at).await {
                failure = Some(e);
            }
        }
    }
    if let Some(e) = failure {
        for (c, _) in &sessions {
            let _ = c.batch_execute("ROLLBACK").await;
        }
        drop(sessions);
        let _ = admin
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", plan.table))
            .await;
        return Err(e.context(format!(
            "parallel load failed; the new table {} was dropped",
            plan.table.plain()
        )));
    }
    for (i, (c, _)) in sessions.iter().enumerate() {
        if let Err(e) = c.batch_execute("COMMIT").await {
            let _ = admin
                .batch_execute(&format!("DROP TABLE IF EXISTS {}", plan.table))
                .await;
            return Err(anyhow::Error::new(e).context(format!(
                "committing load session {i}; the new table {} was dropped",
                plan.table.plain()
            )));
        }
    }
    Ok(json!({
        "step": "load", "run_id": ctx.run_id, "table": plan.table.plain(), "dialect": "postgres",
        "rows": rows, "rows_deleted": 0, "created": true, "append": args.append,
        "parts": plan.entries.len(), "bytes_read": bytes, "sessions": n, "from": args.from,
    }))
}

async fn load_redshift(
    ctx: &Ctx,
    args: &LoadArgs,
    plan: &Plan,
) -> anyhow::Result<serde_json::Value> {
    let auth = match &plan.spec.iam_role {
        Some(role) => sql::CopyAuth::IamRole(role.clone()),
        None => match (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Ok(k), Ok(s)) => {
                crate::secret::register(&s);
                let token = std::env::var("AWS_SESSION_TOKEN").ok();
                if let Some(t) = &token {
                    crate::secret::register(t);
                }
                tracing::warn!("No iam_role for this warehouse; COPY uses the session's access keys (redacted everywhere).");
                sql::CopyAuth::Credentials {
                    access_key_id: k,
                    secret_access_key: s,
                    session_token: token,
                }
            }
            _ => bail!(
                "warehouse {} has no iam_role (and no AWS access keys in the environment) for COPY",
                plan.spec.name
            ),
        },
    };
    let columns: Vec<String> = match (&plan.def, &plan.meta) {
        (Some(d), _) => d.columns.iter().map(|c| c.name.clone()).collect(),
        (None, Some(m)) => m.columns.iter().map(|c| c.name.clone()).collect(),
        (None, None) => bail!("--table without ductwork.json: cannot tell the column list"),
    };
    if let Some(m) = &plan.meta {
        let names: Vec<&str> = columns.iter().map(String::as_str).collect();
        check_column_order(m, &plan.table, &names)?;
    }
    let mut copy = sql::RedshiftCopy::new(
        plan.table.clone(),
        columns,
        args.from.clone(),
        auth,
        tsv::NULL_AS_SQL,
    );
    copy.region = args.region.clone().or_else(|| plan.spec.region.clone());
    copy.explicit_ids = plan
        .def
        .as_ref()
        .is_some_and(|d| d.columns.iter().any(|c| c.identity.is_some()));
    let copy_sql = sql::copy_redshift(&copy)?;
    let copy_shown = sql::copy_redshift_redacted(&copy)?;
    if ctx.global.dry_run {
        let (ddl, first, last) = txn::ledger_dry_run(plan.ledger.as_ref());
        let mut body = first;
        body.extend(create_statements(plan, Dialect::Redshift));
        if !args.append {
            body.push(sql::delete_all_sql(&plan.table));
        }
        body.push(copy_shown);
        body.push(sql::LAST_COPY_COUNT_SQL.to_owned());
        body.extend(last);
        let mut statements = ddl;
        statements.extend(sql::transaction(body)?);
        return Ok(json!({
            "step": "load", "dry_run": true, "table": plan.table.plain(),
            "statements": statements,
        }));
    }
    let client = warehouse::connect(&plan.spec, &format!("ductwork:{}:load", ctx.run_id)).await?;
    let key = ledger_key(&client, ctx, args, plan).await?;
    let started_at = chrono::Utc::now();
    let outcome = txn::in_transaction(&client, key.as_ref(), started_at, || {
        redshift_attempt(&client, ctx, args, plan, &copy_sql)
    })
    .await?;
    Ok(finish(outcome, ctx, args, plan, key.as_ref()))
}

/// One attempt of a Redshift load, inside the transaction.
async fn redshift_attempt(
    client: &tokio_postgres::Client,
    ctx: &Ctx,
    args: &LoadArgs,
    plan: &Plan,
    copy_sql: &str,
) -> anyhow::Result<txn::Done<serde_json::Value>> {
    let exists: bool = client
        .query_one(
            "SELECT count(*) > 0 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
            &[&plan.table.schema.clone().unwrap_or_else(|| "public".into()), &plan.table.name],
        )
        .await
        .context("looking up the table")?
        .get(0);
    if !exists {
        if plan.def.is_none() {
            bail!(
                "table {} does not exist; pass --table-def to create it",
                plan.table.plain()
            );
        }
        for stmt in create_statements(plan, Dialect::Redshift) {
            client
                .batch_execute(&stmt)
                .await
                .with_context(|| format!("creating {}", plan.table.plain()))?;
        }
    }
    if !args.append && exists {
        client
            .batch_execute(&sql::delete_all_sql(&plan.table))
            .await
            .with_context(|| format!("emptying {}", plan.table.plain()))?;
    }
    if let Err(e) = client.batch_execute(copy_sql).await {
        // The load errors stay readable after the rollback.
        let _ = client.batch_execute("ROLLBACK").await;
        let detail = redshift_load_errors(client).await;
        return Err(anyhow::Error::new(e).context(format!("COPY failed; load errors: {detail}")));
    }
    let rows: i64 = client
        .query_one(sql::LAST_COPY_COUNT_SQL, &[])
        .await
        .context("reading pg_last_copy_count()")?
        .get(0);
    let rows = u64::try_from(rows).unwrap_or(0);
    check_rows(rows, plan.meta.as_ref().map(|m| m.rows))?;
    Ok(txn::Done {
        value: json!({
            "step": "load", "run_id": ctx.run_id, "table": plan.table.plain(), "dialect": "redshift",
            "rows": rows, "created": !exists, "append": args.append, "parts": plan.entries.len(),
            "from": args.from,
        }),
        rows,
    })
}

/// The rows of `sys_load_error_detail` (or `stl_load_errors`) for the session's last COPY.
async fn redshift_load_errors(client: &tokio_postgres::Client) -> String {
    for q in [sql::load_errors_sql(), sql::stl_load_errors_sql()] {
        if let Ok(rows) = client.simple_query(&q).await {
            let lines: Vec<String> = rows
                .iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                        (0..r.len())
                            .map(|i| r.get(i).unwrap_or("").trim().to_owned())
                            .collect::<Vec<_>>()
                            .join(" | "),
                    ),
                    _ => None,
                })
                .collect();
            if !lines.is_empty() {
                return lines.join("; ");
            }
        }
    }
    "none found in sys_load_error_detail or stl_load_errors".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::MetaColumn;

    fn meta(names: &[&str]) -> Metadata {
        Metadata {
            rows: 0,
            columns: names
                .iter()
                .map(|n| MetaColumn {
                    name: (*n).to_owned(),
                    source_type: "text".to_owned(),
                })
                .collect(),
            null_marker: "\u{1}".to_owned(),
            run_id: None,
            parts: Vec::new(),
        }
    }

    #[test]
    fn refuses_only_the_table_columns_in_another_order() {
        let t = TableName::parse("s.t").unwrap();
        assert!(check_column_order(&meta(&["a", "b"]), &t, &["a", "b"]).is_ok());
        assert!(check_column_order(&meta(&["A", "b"]), &t, &["a", "B"]).is_ok());
        assert!(
            check_column_order(&meta(&["x", "y"]), &t, &["a", "b"]).is_ok(),
            "other names load by position"
        );
        let err = check_column_order(&meta(&["b", "a"]), &t, &["a", "b"]).unwrap_err();
        assert!(err
            .to_string()
            .contains("in another order (b, a; the table has a, b)"));
    }
}
