//! `ductwork upsert` (Dataduct `upsert`): a staging table's rows into a production table by
//! primary key, in one transaction together with the run-ledger row (SPEC §7).
//!
//! Inside the transaction, in order: the ledger lookup (an applied run stops here and exits 0),
//! the catalog reads (destination and source columns, the key), the NULL-key check and, without
//! `--dedupe-order`, the duplicate-key check on the staging table (either fails with sample
//! keys before anything is written), then the statements of [`sql::upsert_statements`] (temp
//! table, dedupe, `DELETE … USING` + `INSERT`, or `MERGE`), the ledger row and `COMMIT`. Any
//! failure rolls everything back: the destination is exactly as before.
//!
//! The columns are the destination's, from the catalog; each must exist in the staging table.
//! The key is `--pk`, else the `--destination-def` PRIMARY KEY, else the catalog's.

use std::time::Instant;

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::json;
use tokio_postgres::Client;

use crate::cli::UpsertArgs;
use crate::ident::TableName;
use crate::sqltext;
use crate::step::txn::{self, Catalog, Done, TxnOutcome};
use crate::tabledef::{self, TableDef};
use crate::warehouse;
use crate::warehouse::sql::{self, Dialect, Upsert};
use crate::{Ctx, Outcome};

/// The step name in the error line, the ledger and `application_name`.
pub const STEP: &str = "upsert";

/// At most this many sample keys are shown by the key checks.
const SAMPLE_KEYS: u32 = 10;

/// The table named in the error line: the destination.
pub fn table_label(args: &UpsertArgs) -> Option<String> {
    Some(txn::table_label(&args.destination))
}

/// What the upsert works from, checked before any I/O.
struct Plan {
    dialect: Dialect,
    source: TableName,
    destination: TableName,
    def: Option<TableDef>,
    pk: Option<Vec<String>>,
    dedupe_order: Option<String>,
    merge: bool,
}

/// What the catalog (or the definition) says about the tables.
struct Shape {
    /// The destination's columns, in order.
    columns: Vec<String>,
    /// The key and where it came from.
    pk: Vec<String>,
    pk_from: &'static str,
    /// Statements creating the missing destination from its definition; empty when it exists.
    create: Vec<String>,
}

/// Runs the upsert.
pub async fn run(ctx: &Ctx, args: UpsertArgs) -> Result<Outcome> {
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let spec = ctx.config.warehouse(&args.warehouse)?;
    for w in &spec.warnings {
        tracing::warn!("{w}");
    }
    let dialect = warehouse::dialect(&spec)?;
    let source = TableName::parse(&args.source).context("--source")?;
    let destination = TableName::parse(&args.destination).context("--destination")?;
    let def = args
        .destination_def
        .as_deref()
        .map(tabledef::parse_file)
        .transpose()?;
    if let Some(d) = &def {
        let same =
            d.name == destination || (d.name.schema.is_none() && d.name.name == destination.name);
        if !same {
            bail!(
                "{} defines table {}, not the destination {}",
                d.origin,
                d.name.plain(),
                destination.plain()
            );
        }
    }
    let pk = args
        .pk
        .as_deref()
        .map(txn::parse_column_list)
        .transpose()
        .context("--pk")?;
    if let Some(order) = &args.dedupe_order {
        sql::dedupe_order_sql(order)?;
    }
    let ledger = txn::ledger_table(&args.ledger)?;
    let plan = Plan {
        dialect,
        source,
        destination,
        def,
        pk,
        dedupe_order: args.dedupe_order.clone(),
        merge: args.merge,
    };
    tracing::info!(
        source = %plan.source.plain(),
        destination = %plan.destination.plain(),
        merge = plan.merge,
        "Upsert started."
    );
    let app = format!("ductwork:{}:{STEP}", ctx.run_id);
    if ctx.global.dry_run {
        return dry_run(&plan, ledger.as_ref(), &spec, &app).await;
    }
    let client = warehouse::connect(&spec, &app).await?;
    let key = txn::table_ledger_key(&client, ledger, &ctx.run_id, STEP, &plan.destination).await?;
    let outcome =
        txn::in_transaction(&client, key.as_ref(), started_at, || apply(&client, &plan)).await?;
    let mut summary = match outcome {
        TxnOutcome::Committed(s) => {
            tracing::info!(
                destination = %plan.destination.plain(),
                rows = %s["rows"],
                "Upsert finished."
            );
            s
        }
        TxnOutcome::AlreadyApplied(before) => {
            let ledger = key.as_ref().map(|k| &k.table);
            tracing::info!(
                destination = %plan.destination.plain(),
                run_id = %ctx.run_id,
                "Already applied by this run id; nothing changed."
            );
            let mut s = ledger.map_or(json!({}), |l| before.summary(STEP, &ctx.run_id, l));
            s["source"] = json!(plan.source.plain());
            s["destination"] = json!(plan.destination.plain());
            s
        }
    };
    summary["run_id"] = json!(ctx.run_id);
    summary["ledger"] = json!(key.as_ref().map(|k| k.table.plain()));
    summary["duration_ms"] = json!(crate::elapsed_ms(started));
    Ok(Outcome {
        summary,
        checks_failed: false,
    })
}

/// Reads the destination's columns and key (read-only): from the catalog, or from the
/// definition when the destination does not exist yet.
async fn shape(c: &Client, plan: &Plan) -> Result<Shape> {
    let catalog = Catalog {
        dialect: plan.dialect,
    };
    let dest_oid = catalog.oid(c, &plan.destination).await?;
    let (columns, create) = match (dest_oid, &plan.def) {
        (Some(oid), def) => {
            let cols = catalog.columns(c, oid, &plan.destination).await?;
            if let Some(d) = def {
                let def_cols: Vec<String> = d
                    .columns
                    .iter()
                    .map(|x| catalog.stored_name(&x.name))
                    .collect();
                if def_cols != cols {
                    tracing::warn!(
                        destination = %plan.destination.plain(),
                        "The destination's columns ({}) differ from {} ({}); the catalog's are used.",
                        cols.join(", "),
                        d.origin,
                        def_cols.join(", ")
                    );
                }
            }
            (cols, Vec::new())
        }
        (None, Some(d)) => (
            d.columns
                .iter()
                .map(|x| catalog.stored_name(&x.name))
                .collect(),
            txn::create_table_statements(d, plan.dialect),
        ),
        (None, None) => bail!(
            "destination table {} does not exist (pass --destination-def to create it)",
            plan.destination.plain()
        ),
    };
    let (pk, pk_from) = match (&plan.pk, &plan.def, dest_oid) {
        (Some(pk), _, _) => (pk.clone(), "--pk"),
        (None, Some(d), _) if !d.pk().is_empty() => (d.pk().to_vec(), "--destination-def"),
        (None, _, Some(oid)) => (
            catalog.primary_key(c, oid, &plan.destination).await?,
            "catalog",
        ),
        (None, _, None) => (Vec::new(), "catalog"),
    };
    if pk.is_empty() {
        bail!(
            "no primary key for {}: pass --pk, a --destination-def with a PRIMARY KEY, or give \
             the table one",
            plan.destination.plain()
        );
    }
    let pk: Vec<String> = pk.iter().map(|k| catalog.stored_name(k)).collect();
    let missing: Vec<&String> = pk.iter().filter(|k| !columns.contains(k)).collect();
    if !missing.is_empty() {
        bail!(
            "primary key column(s) {} ({pk_from}) are not columns of {}",
            quoted_list(&missing),
            plan.destination.plain()
        );
    }
    Ok(Shape {
        columns,
        pk,
        pk_from,
        create,
    })
}

/// The source's columns must include every destination column.
async fn check_source(c: &Client, plan: &Plan, columns: &[String]) -> Result<()> {
    let catalog = Catalog {
        dialect: plan.dialect,
    };
    let oid = catalog
        .oid(c, &plan.source)
        .await?
        .ok_or_else(|| anyhow!("source table {} does not exist", plan.source.plain()))?;
    let src_cols = catalog.columns(c, oid, &plan.source).await?;
    let missing: Vec<&String> = columns.iter().filter(|x| !src_cols.contains(x)).collect();
    if !missing.is_empty() {
        bail!(
            "source table {} lacks column(s) {} of the destination {}",
            plan.source.plain(),
            quoted_list(&missing),
            plan.destination.plain()
        );
    }
    Ok(())
}

fn quoted_list(names: &[&String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn upsert_of(plan: &Plan, shape: &Shape) -> Upsert {
    Upsert {
        source: plan.source.clone(),
        destination: plan.destination.clone(),
        columns: shape.columns.clone(),
        pk: shape.pk.clone(),
        dedupe_order: plan.dedupe_order.clone(),
        merge: plan.merge,
    }
}

/// The work inside the transaction: catalog, key checks, the upsert statements.
async fn apply(c: &Client, plan: &Plan) -> Result<Done<serde_json::Value>> {
    let shape = shape(c, plan).await?;
    for stmt in &shape.create {
        c.batch_execute(stmt)
            .await
            .with_context(|| format!("creating {}", plan.destination.plain()))?;
    }
    check_source(c, plan, &shape.columns).await?;
    let pk_text = shape.pk.join(", ");

    let nulls = txn::sample_rows(
        c,
        &sql::null_keys_sql(&plan.source, &shape.pk, SAMPLE_KEYS)?,
        false,
    )
    .await
    .with_context(|| format!("checking {} for NULL keys", plan.source.plain()))?;
    if !nulls.is_empty() {
        bail!(
            "staging table {} has rows with a NULL in the primary key ({pk_text}), e.g. {}; \
             NULL keys never match, so nothing was changed",
            plan.source.plain(),
            nulls.join(", ")
        );
    }
    if plan.dedupe_order.is_none() {
        let dups = txn::sample_rows(
            c,
            &sql::duplicate_keys_sql(&plan.source, &shape.pk, SAMPLE_KEYS)?,
            true,
        )
        .await
        .with_context(|| format!("checking {} for duplicate keys", plan.source.plain()))?;
        if !dups.is_empty() {
            bail!(
                "staging table {} has duplicate primary keys ({pk_text}), up to {SAMPLE_KEYS} \
                 shown: {}; pass --dedupe-order to keep one row per key. Nothing was changed",
                plan.source.plain(),
                dups.join(", ")
            );
        }
    }

    let upsert = upsert_of(plan, &shape);
    let stmts = sql::upsert_statements(&upsert, plan.dialect)?;
    sql::assert_no_implicit_commit(&stmts)?;
    let expected = if plan.merge { 4 } else { 5 };
    if stmts.len() != expected {
        bail!(
            "internal: the upsert has {} statements, expected {expected}",
            stmts.len()
        );
    }
    let mut counts = Vec::with_capacity(stmts.len());
    for (n, stmt) in stmts.iter().enumerate() {
        let t = Instant::now();
        let rows = c.execute(stmt.as_str(), &[]).await.with_context(|| {
            format!(
                "upsert statement {} ({}) failed",
                n + 1,
                sqltext::first_line(stmt)
            )
        })?;
        tracing::debug!(
            statement = n + 1,
            rows,
            elapsed_ms = crate::elapsed_ms(t),
            "Statement done."
        );
        counts.push(rows);
    }
    let staged = counts[1];
    let mut summary = json!({
        "step": STEP, "status": "applied",
        "source": plan.source.plain(), "destination": plan.destination.plain(),
        "dialect": dialect_name(plan.dialect),
        "mode": if plan.merge { "merge" } else { "delete-insert" },
        "pk": shape.pk, "pk_from": shape.pk_from, "columns": shape.columns,
        "created": !shape.create.is_empty(),
        "deduplicated": plan.dedupe_order.is_some(),
        "rows_staged": staged,
    });
    let rows = if plan.merge {
        summary["rows_merged"] = json!(counts[2]);
        counts[2]
    } else {
        summary["rows_deleted"] = json!(counts[2]);
        summary["rows_inserted"] = json!(counts[3]);
        counts[3]
    };
    summary["rows"] = json!(rows);
    Ok(Done {
        value: summary,
        rows,
    })
}

/// The dialect's name in summaries.
pub fn dialect_name(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres => "postgres",
        Dialect::Redshift => "redshift",
    }
}

/// `--dry-run`: every statement the upsert would send. The columns and key come from the
/// definition when it gives both; otherwise the catalog is read (read-only).
async fn dry_run(
    plan: &Plan,
    ledger: Option<&TableName>,
    spec: &crate::config::ConnSpec,
    app: &str,
) -> Result<Outcome> {
    let offline = plan.def.as_ref().and_then(|d| {
        let pk = plan
            .pk
            .clone()
            .or_else(|| (!d.pk().is_empty()).then(|| d.pk().to_vec()))?;
        Some(Shape {
            columns: d.columns.iter().map(|c| c.name.clone()).collect(),
            pk,
            pk_from: if plan.pk.is_some() {
                "--pk"
            } else {
                "--destination-def"
            },
            create: Vec::new(),
        })
    });
    let (shape, catalog_read) = match offline {
        Some(s) => (s, false),
        None => {
            let client = warehouse::connect(spec, app).await?;
            (shape(&client, plan).await?, true)
        }
    };
    let (ddl, first, last) = txn::ledger_dry_run(ledger);
    let mut body = first;
    body.extend(shape.create.iter().cloned());
    body.push(sql::null_keys_sql(&plan.source, &shape.pk, SAMPLE_KEYS)?);
    if plan.dedupe_order.is_none() {
        body.push(sql::duplicate_keys_sql(
            &plan.source,
            &shape.pk,
            SAMPLE_KEYS,
        )?);
    }
    body.extend(sql::upsert_statements(
        &upsert_of(plan, &shape),
        plan.dialect,
    )?);
    body.extend(last);
    let mut statements = ddl;
    statements.extend(sql::transaction(body)?);
    Ok(Outcome {
        summary: json!({
            "step": STEP, "dry_run": true,
            "source": plan.source.plain(), "destination": plan.destination.plain(),
            "dialect": dialect_name(plan.dialect),
            "pk": shape.pk, "pk_from": shape.pk_from, "columns": shape.columns,
            "catalog_read": catalog_read,
            "ledger": ledger.map(TableName::plain),
            "statements": statements,
        }),
        checks_failed: false,
    })
}
