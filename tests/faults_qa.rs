//! Fault suite, SQL-shape / data-QA half (RELIABILITY §3 F04, F22, F23, F24, F34).
//!
//! - F22: every transactional command's `--dry-run` SQL (load, upsert, upsert --merge, reload,
//!   sql; PostgreSQL and Redshift dialects) holds no statement between `BEGIN` and `COMMIT`
//!   that commits implicitly or cannot run in a transaction, and user scripts that hold one
//!   are refused (dry run and real run) before anything is applied.
//! - F23: colliding prefixes (`t_1/` beside `t_10/`), stale and planted garbage parts: loads
//!   read exactly the manifest's keys and load exactly the rows the extract wrote.
//! - F24: duplicate keys in a PK-less staging table: an upsert without `--dedupe-order` fails
//!   naming the keys and changes nothing; with it the result is deterministic.
//! - F34: seeded corruptions (5 % of rows dropped, one value flipped, duplicate keys) make the
//!   `check` commands exit 1 with expected, actual, tolerance and keys, and change nothing.
//! - F04: a private PostgreSQL 15 instance restarted (`pg_ctl restart -m fast`) mid-extract:
//!   exit 2 naming the termination (or a complete, exact re-extract), no manifest, no part and
//!   no open upload left; a clean re-run is exact.
//!
//! Each test prints one `fault-case:` line (see `common::faults::report`). Random timings come
//! from a seeded RNG (`fault-seed:` line; `DUCTWORK_FAULT_SEED` replaces the default seed).

#![allow(clippy::print_stdout)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::faults::{self, report, Losses};
use common::{args, pg_url, run, test_prefix, Run, TestDb};
use mysql_async::prelude::Queryable as _;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{json, Value};
use tokio_postgres::Client;

// ---- shared helpers -------------------------------------------------------------------------

fn rid(tag: &str) -> String {
    format!("{tag}-{:08x}", rand::random::<u32>())
}

/// The seed of one fault kind: `$DUCTWORK_FAULT_SEED` when set, else `default`; printed.
fn seeded(kind: &str, default: u64) -> StdRng {
    let seed = std::env::var("DUCTWORK_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    println!("fault-seed: kind={kind} seed={seed}");
    StdRng::seed_from_u64(seed)
}

fn add(total: &mut Losses, l: Losses) {
    total.lost += l.lost;
    total.dup += l.dup;
    total.partial_objects += l.partial_objects;
    total.partial_txns += l.partial_txns;
    total.open_mpus += l.open_mpus;
    total.canary_hits += l.canary_hits;
}

fn finish(kind: &str, name: &str, injected: u32, total: &Losses) {
    report(kind, name, injected, total);
    assert!(total.is_zero(), "{kind} {name}: losses {total:?}");
}

/// Exit 2, nothing on stdout, and the invariant-7 error line for `step` holding one of `any`
/// (when given). Returns the line.
fn assert_fails(r: &Run, step: &str, any: &[&str]) -> String {
    let line = r.assert_error(step).to_string();
    eprintln!("fault error line: {line}");
    assert!(
        any.is_empty() || any.iter().any(|s| line.contains(s)),
        "expected one of {any:?} in: {line}\nstderr:\n{}",
        r.stderr
    );
    line
}

async fn checksum(pg: &Client, table: &str) -> (i64, String) {
    faults::pg_table_checksum(pg, table).await
}

async fn count(pg: &Client, table: &str) -> i64 {
    pg.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
        .get(0)
}

/// (rows of `expected` missing from `got`, rows of `got` not in `expected`), as multisets of
/// whole rows (the two must have the same column types in the same order).
async fn multiset_diff(pg: &Client, expected: &str, got: &str) -> (u64, u64) {
    let row = pg
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM (SELECT * FROM {expected} EXCEPT ALL SELECT * FROM {got}) x),
                        (SELECT count(*) FROM (SELECT * FROM {got} EXCEPT ALL SELECT * FROM {expected}) y)"
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("comparing {expected} and {got}: {e}"));
    let (lost, dup): (i64, i64) = (row.get(0), row.get(1));
    if lost != 0 || dup != 0 {
        eprintln!("{got} vs {expected}: {lost} rows missing, {dup} rows extra");
    }
    (
        u64::try_from(lost).unwrap_or(0),
        u64::try_from(dup).unwrap_or(0),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

/// Writes an S3 object.
async fn put(uri: &str, body: Vec<u8>) {
    let (bucket, key) = common::split_s3_uri(uri);
    common::s3_client()
        .await
        .put_object()
        .bucket(&bucket)
        .key(&key)
        .body(body.into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutObject {uri}: {e:?}"));
}

/// One gzip member holding `text`.
fn gzip(text: &str) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(text.as_bytes()).expect("gzip");
    enc.finish().expect("gzip")
}

async fn json_object(uri: &str) -> Value {
    serde_json::from_slice(&common::get_object(uri).await)
        .unwrap_or_else(|e| panic!("{uri} is not JSON: {e}"))
}

/// The part URLs a manifest lists.
async fn manifest_urls(manifest_uri: &str) -> Vec<String> {
    json_object(manifest_uri).await["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["url"].as_str().expect("url").to_owned())
        .collect()
}

/// Rows decoded from every part a manifest lists.
async fn manifest_rows(manifest_uri: &str) -> u64 {
    let mut n = 0u64;
    for url in manifest_urls(manifest_uri).await {
        let gz = common::get_object(&url).await;
        let rows = ductwork::tsv::decode_all(&common::gunzip(&gz))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        n += rows.len() as u64;
    }
    n
}

/// The extract's own row count (`ductwork.json` beside the manifest).
async fn written_rows(prefix: &str) -> u64 {
    json_object(&format!("{prefix}ductwork.json")).await["rows"]
        .as_u64()
        .expect("ductwork.json rows")
}

fn is_part_name(name: &str) -> bool {
    name.strip_prefix("part-")
        .and_then(|r| r.strip_suffix(".tsv.gz"))
        .is_some_and(|n| n.len() >= 5 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Part-named objects under `prefix` that no manifest lists (ductwork's leftovers). Other
/// unlisted objects (foreign files a test planted) are printed but not counted.
async fn unlisted_parts(prefix: &str) -> u64 {
    let (bucket, _) = common::split_s3_uri(prefix);
    let keys = common::list_keys(prefix).await;
    let mut listed = std::collections::HashSet::new();
    for key in keys.iter().filter(|k| k.ends_with("/manifest.json")) {
        listed.extend(manifest_urls(&format!("s3://{bucket}/{key}")).await);
    }
    let mut n = 0;
    for key in &keys {
        let name = key.rsplit('/').next().unwrap_or_default();
        if name == "manifest.json" || name == "ductwork.json" || name.starts_with('_') {
            continue;
        }
        if listed.contains(&format!("s3://{bucket}/{key}")) {
            continue;
        }
        if is_part_name(name) {
            eprintln!("unlisted part left under {prefix}: {key}");
            n += 1;
        } else {
            eprintln!("foreign object under {prefix} (planted by the test, kept): {key}");
        }
    }
    n
}

// =============================================================================================
// F22: no implicit commit inside a step's transaction
// =============================================================================================

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Postgres,
    Redshift,
}

/// The statements of one SQL text, each as its upper-case bare words: comments, quoted text
/// and quoted identifiers are skipped; `;` outside them ends a statement.
fn statements_words(sql: &str) -> Vec<Vec<String>> {
    let b = sql.as_bytes();
    let mut out: Vec<Vec<String>> = vec![Vec::new()];
    let mut word = String::new();
    let mut i = 0;
    let flush = |word: &mut String, out: &mut Vec<Vec<String>>| {
        if !word.is_empty() {
            out.last_mut()
                .expect("a statement")
                .push(word.to_ascii_uppercase());
            word.clear();
        }
    };
    while i < b.len() {
        let c = b[i];
        if c == b'-' && b.get(i + 1) == Some(&b'-') {
            flush(&mut word, &mut out);
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            flush(&mut word, &mut out);
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if c == b'\'' || c == b'"' {
            flush(&mut word, &mut out);
            i += 1;
            while i < b.len() {
                if b[i] == c {
                    if b.get(i + 1) == Some(&c) {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
        } else if c == b'$' && word.is_empty() {
            // A dollar quote: `$tag$ … $tag$`.
            let tag_end = b[i + 1..]
                .iter()
                .position(|&x| !(x.is_ascii_alphanumeric() || x == b'_'))
                .map(|p| i + 1 + p);
            match tag_end {
                Some(e) if b[e] == b'$' => {
                    let tag = &sql[i..=e];
                    let body = e + 1;
                    let close = sql[body..]
                        .find(tag)
                        .map_or(b.len(), |p| body + p + tag.len());
                    i = close;
                }
                _ => i += 1,
            }
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            word.push(char::from(c));
            i += 1;
        } else {
            flush(&mut word, &mut out);
            if c == b';' {
                out.push(Vec::new());
            }
            i += 1;
        }
    }
    flush(&mut word, &mut out);
    out.retain(|s| !s.is_empty());
    out
}

/// Why a statement must not run between `BEGIN` and `COMMIT` in `d`, if so.
fn forbidden_in_txn(w: &[String], d: Dialect) -> Option<&'static str> {
    let at = |n: usize| w.get(n).map_or("", String::as_str);
    let common = match (at(0), at(1)) {
        ("VACUUM", _) => Some("VACUUM"),
        ("CREATE" | "DROP", "DATABASE") => Some("CREATE/DROP DATABASE"),
        _ => None,
    };
    match d {
        Dialect::Postgres => common,
        Dialect::Redshift => common.or(match (at(0), at(1)) {
            ("TRUNCATE", _) => Some("TRUNCATE (commits on Redshift)"),
            ("ANALYZE" | "ANALYSE", _) => Some("ANALYZE"),
            ("ALTER", "TABLE") if w.iter().any(|x| x == "APPEND") => Some("ALTER TABLE APPEND"),
            _ => None,
        }),
    }
}

/// Statements that change table data: they belong inside the transaction.
fn is_data_change(w: &[String]) -> bool {
    matches!(
        w.first().map(String::as_str),
        Some("DELETE" | "INSERT" | "UPDATE" | "MERGE" | "COPY" | "TRUNCATE")
    )
}

/// The implicit-commit oracle over a dry run's statement list: exactly one `BEGIN … COMMIT`,
/// no forbidden statement inside it, no data change outside it. Returns the violations.
fn txn_violations(stmts: &[String], d: Dialect, what: &str) -> u64 {
    let mut bad = Vec::new();
    let (mut begins, mut commits, mut in_txn) = (0, 0, false);
    for text in stmts {
        for w in statements_words(text) {
            match w[0].as_str() {
                "BEGIN" | "START" => {
                    if in_txn {
                        bad.push(format!("nested BEGIN: {text}"));
                    }
                    begins += 1;
                    in_txn = true;
                }
                "COMMIT" | "END" => {
                    if !in_txn {
                        bad.push(format!("COMMIT outside a transaction: {text}"));
                    }
                    commits += 1;
                    in_txn = false;
                }
                _ if in_txn => {
                    if let Some(why) = forbidden_in_txn(&w, d) {
                        bad.push(format!("{why} inside the transaction: {text}"));
                    }
                }
                _ => {
                    if is_data_change(&w) {
                        bad.push(format!("data change outside the transaction: {text}"));
                    }
                }
            }
        }
    }
    if begins != 1 || commits != 1 || in_txn {
        bad.push(format!(
            "expected one BEGIN … COMMIT, got {begins} BEGIN and {commits} COMMIT"
        ));
    }
    for b in &bad {
        eprintln!("F22 {what} ({d:?}): {b}\nstatements: {stmts:#?}");
    }
    bad.len() as u64
}

/// The statement list of a dry-run summary (`statements`, or `sql` for `ductwork sql`).
fn dry_statements(summary: &Value) -> Vec<String> {
    assert_eq!(summary["dry_run"], true, "not a dry run: {summary}");
    summary
        .get("statements")
        .filter(|v| v.is_array())
        .or_else(|| summary.get("sql"))
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no statement list in {summary}"))
        .iter()
        .map(|v| v.as_str().expect("statement text").to_owned())
        .collect()
}

fn redshift_url() -> String {
    let mut u = url::Url::parse(&pg_url()).expect("pg url");
    u.set_scheme("redshift").expect("redshift scheme");
    u.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn f22_no_implicit_commit_inside_any_step_transaction() {
    let db = TestDb::new("f22").await;
    let pg = db.pg().await;
    let s = db.pg_schema.clone();
    pg.batch_execute(
        "CREATE TABLE src (id int PRIMARY KEY, v text, updated_at int);
         INSERT INTO src SELECT g, 'v' || g, g FROM generate_series(1, 300) g;
         CREATE TABLE stg (id int, v text, updated_at int);
         INSERT INTO stg SELECT g, 'new ' || g, 1000 + g FROM generate_series(250, 350) g;
         CREATE TABLE prod (id int PRIMARY KEY, v text, updated_at int);
         INSERT INTO prod SELECT * FROM src;
         CREATE TABLE loaded (id int NOT NULL, v varchar(200), updated_at int);",
    )
    .await
    .expect("seed");
    let prod = db.pg_table("prod");
    let before = checksum(&pg, &prod).await;
    let prefix = test_prefix("f22");
    run(args(&[
        "--run-id",
        &rid("f22-ex"),
        "extract",
        "--source",
        &pg_url(),
        "--table",
        &db.pg_table("src"),
        "--to",
        &prefix,
    ]))
    .await
    .assert_ok();
    let manifest = format!("{prefix}manifest.json");
    let dir = common::fresh_cwd();
    let def = write(
        &dir,
        "loaded.sql",
        &format!(
            "CREATE TABLE {s}.loaded (\n  id INTEGER NOT NULL DISTKEY,\n  v VARCHAR(200) ENCODE zstd,\n  updated_at INTEGER\n)\nSORTKEY (id);\n"
        ),
    );
    let prod_def = write(
        &dir,
        "prod.sql",
        &format!(
            "CREATE TABLE {s}.prod (\n  id INTEGER NOT NULL,\n  v VARCHAR(200),\n  updated_at INTEGER,\n  PRIMARY KEY (id)\n);\n"
        ),
    );
    let new_def = write(
        &dir,
        "fresh.sql",
        &format!("CREATE TABLE {s}.fresh (\n  id INTEGER NOT NULL,\n  v VARCHAR(200)\n);\n"),
    );
    let def = def.to_str().expect("utf8 path").to_owned();
    let prod_def = prod_def.to_str().expect("utf8 path").to_owned();
    let new_def = new_def.to_str().expect("utf8 path").to_owned();
    let script = write(
        &dir,
        "script.sql",
        &format!(
            "-- a TRUNCATE in a comment is no statement\n\
             DELETE FROM {s}.fresh WHERE v = 'TRUNCATE {s}.fresh';\n\
             INSERT INTO {s}.fresh SELECT id, v FROM {s}.src;\n"
        ),
    );
    let script = script.to_str().expect("utf8 path").to_owned();
    let ledger = db.pg_table("ledger");
    // The Redshift warehouse by name, with an IAM role for COPY (the emulator's keys are not
    // well-formed AWS keys).
    let config = write(
        &dir,
        "ductwork.toml",
        &format!(
            "[warehouses.rs]\nurl = \"{}\"\niam_role = \"arn:aws:iam::123456789012:role/ductwork-copy\"\n",
            redshift_url()
        ),
    );
    let config = config.to_str().expect("utf8 path").to_owned();
    let (pgw, rsw) = (pg_url(), "rs".to_owned());
    let (stg, loaded) = (db.pg_table("stg"), db.pg_table("loaded"));

    // (label, dialect, argv after `--dry-run`): every transactional command in both dialects.
    let cases: Vec<(&str, Dialect, Vec<String>)> = vec![
        (
            "load replace",
            Dialect::Postgres,
            args(&[
                "load",
                "--warehouse",
                &pgw,
                "--from",
                &manifest,
                "--table-def",
                &def,
            ]),
        ),
        (
            "load keep-readers",
            Dialect::Postgres,
            args(&[
                "load",
                "--warehouse",
                &pgw,
                "--from",
                &manifest,
                "--table",
                &loaded,
                "--keep-readers",
                "--ledger",
                &ledger,
            ]),
        ),
        (
            "load append",
            Dialect::Postgres,
            args(&[
                "load",
                "--warehouse",
                &pgw,
                "--from",
                &manifest,
                "--table",
                &loaded,
                "--append",
            ]),
        ),
        (
            "load replace",
            Dialect::Redshift,
            args(&[
                "load",
                "--warehouse",
                &rsw,
                "--from",
                &manifest,
                "--table-def",
                &def,
                "--ledger",
                &ledger,
            ]),
        ),
        (
            "load append",
            Dialect::Redshift,
            args(&[
                "load",
                "--warehouse",
                &rsw,
                "--from",
                &manifest,
                "--table-def",
                &def,
                "--append",
            ]),
        ),
        (
            "upsert",
            Dialect::Postgres,
            args(&[
                "upsert",
                "--warehouse",
                &pgw,
                "--source",
                &stg,
                "--destination",
                &prod,
                "--ledger",
                &ledger,
            ]),
        ),
        (
            "upsert merge dedupe",
            Dialect::Postgres,
            args(&[
                "upsert",
                "--warehouse",
                &pgw,
                "--source",
                &stg,
                "--destination",
                &prod,
                "--merge",
                "--dedupe-order",
                "updated_at DESC",
            ]),
        ),
        (
            "upsert",
            Dialect::Redshift,
            args(&[
                "upsert",
                "--warehouse",
                &rsw,
                "--source",
                &stg,
                "--destination",
                &prod,
                "--ledger",
                &ledger,
            ]),
        ),
        (
            "upsert merge offline",
            Dialect::Redshift,
            args(&[
                "upsert",
                "--warehouse",
                &rsw,
                "--source",
                &stg,
                "--destination",
                &prod,
                "--destination-def",
                &prod_def,
                "--merge",
                "--dedupe-order",
                "updated_at DESC",
                "--ledger",
                &ledger,
            ]),
        ),
        (
            "reload",
            Dialect::Postgres,
            args(&[
                "reload",
                "--warehouse",
                &pgw,
                "--source",
                &stg,
                "--destination",
                &prod,
                "--ledger",
                &ledger,
            ]),
        ),
        (
            "reload",
            Dialect::Redshift,
            args(&[
                "reload",
                "--warehouse",
                &rsw,
                "--source",
                &stg,
                "--destination",
                &prod,
            ]),
        ),
        (
            "sql script analyze",
            Dialect::Postgres,
            args(&[
                "sql",
                "--warehouse",
                &pgw,
                "--script",
                &script,
                "--table-def",
                &new_def,
                "--analyze",
                "--ledger",
                &ledger,
            ]),
        ),
        (
            "sql script analyze",
            Dialect::Redshift,
            args(&[
                "sql",
                "--warehouse",
                &rsw,
                "--script",
                &script,
                "--table-def",
                &new_def,
                "--analyze",
            ]),
        ),
    ];
    // The oracle itself sees through comments and quotes and catches what it must.
    let probe = |v: &[&str], d| {
        let stmts: Vec<String> = v.iter().map(|x| (*x).to_owned()).collect();
        txn_violations(&stmts, d, "oracle self-check")
    };
    assert_eq!(
        probe(&["BEGIN", "TRUNCATE t", "COMMIT"], Dialect::Postgres),
        0
    );
    assert_eq!(
        probe(
            &["BEGIN", "/* x */ truncate t", "COMMIT"],
            Dialect::Redshift
        ),
        1
    );
    assert_eq!(
        probe(
            &["BEGIN", "DELETE FROM t; VACUUM t", "COMMIT"],
            Dialect::Postgres
        ),
        1
    );
    assert_eq!(
        probe(
            &["BEGIN", "analyze t", "COMMIT", "ANALYZE t"],
            Dialect::Redshift
        ),
        1
    );
    assert_eq!(
        probe(
            &["BEGIN", "alter table a append from b", "END"],
            Dialect::Redshift
        ),
        1
    );
    assert_eq!(
        probe(
            &["BEGIN", "SELECT 'TRUNCATE t' -- VACUUM", "COMMIT"],
            Dialect::Redshift
        ),
        0
    );
    assert_eq!(
        probe(&["DELETE FROM t", "BEGIN", "COMMIT"], Dialect::Postgres),
        1
    );
    assert_eq!(
        probe(&["BEGIN", "INSERT INTO t VALUES (1)"], Dialect::Postgres),
        1
    );

    let mut total = Losses::default();
    let mut injected = 0u32;
    for (what, d, argv) in cases {
        let mut a = args(&["--dry-run", "--config", &config, "--run-id", &rid("f22")]);
        a.extend(argv);
        let r = run(a).await;
        let summary = r.assert_ok();
        let stmts = dry_statements(&summary);
        injected += 1;
        total.partial_txns += txn_violations(&stmts, d, what);
        if what.contains("analyze") {
            // The ANALYZE --analyze asks for runs, after COMMIT.
            let after_commit = stmts
                .iter()
                .skip_while(|x| x.as_str() != "COMMIT")
                .any(|x| x.to_ascii_uppercase().starts_with("ANALYZE"));
            assert!(
                after_commit,
                "{what} ({d:?}): no ANALYZE after COMMIT: {stmts:#?}"
            );
        }
        if d == Dialect::Redshift && what.starts_with("load replace") {
            assert!(
                stmts.iter().any(|x| x.starts_with("DELETE FROM")),
                "{what}: a Redshift replace empties the table with DELETE: {stmts:#?}"
            );
        }
    }

    // User scripts that would commit inside the step's transaction: refused, dry run or not,
    // and nothing applied.
    let hostile: Vec<(Dialect, String, &str)> = vec![
        (
            Dialect::Redshift,
            format!("DELETE FROM {prod} WHERE id = 1; TRUNCATE {prod}; INSERT INTO {prod} SELECT * FROM {s}.src"),
            "TRUNCATE",
        ),
        (
            Dialect::Redshift,
            format!("INSERT INTO {prod} VALUES (9001, 'x', 1);\n/* tidy up */ VACUUM {prod}"),
            "VACUUM",
        ),
        (
            Dialect::Redshift,
            format!("ALTER TABLE {prod} APPEND FROM {stg}"),
            "APPEND",
        ),
        (
            Dialect::Postgres,
            format!("INSERT INTO {prod} VALUES (9002, 'y', 2); VACUUM ANALYZE {prod}"),
            "VACUUM",
        ),
        (
            Dialect::Postgres,
            format!("DELETE FROM {prod}; CREATE DATABASE ductwork_f22_never"),
            "DATABASE",
        ),
    ];
    for (d, command, word) in &hostile {
        let wh = if *d == Dialect::Redshift { &rsw } else { &pgw };
        for dry in [true, false] {
            let mut a = Vec::new();
            if dry {
                a.push("--dry-run".to_owned());
            }
            a.extend(args(&[
                "--config",
                &config,
                "--run-id",
                &rid("f22-sql"),
                "sql",
                "--warehouse",
                wh,
                "--command",
                command,
                "--ledger",
                &ledger,
            ]));
            let r = run(a).await;
            injected += 1;
            if r.code == 0 {
                eprintln!(
                    "F22: sql ({d:?}, dry={dry}) accepted {command:?}:\n{}",
                    r.stdout
                );
                total.partial_txns += 1;
            } else {
                assert_fails(&r, "sql", &[word]);
            }
            if checksum(&pg, &prod).await != before {
                eprintln!("F22: sql ({d:?}, dry={dry}) {command:?} changed {prod}");
                total.partial_txns += 1;
            }
        }
    }
    // Nothing above touched production.
    assert_eq!(checksum(&pg, &prod).await, before);
    finish("F22", "implicit-commit", injected, &total);
    db.cleanup().await;
}

// =============================================================================================
// F23: stale and colliding objects
// =============================================================================================

async fn extract_to(db: &TestDb, table: &str, to: &str, extra: &[&str]) -> Value {
    let mut a = args(&[
        "--run-id",
        &rid("f23-ex"),
        "extract",
        "--source",
        &pg_url(),
        "--table",
        &db.pg_table(table),
        "--to",
        to,
    ]);
    a.extend(args(extra));
    run(a).await.assert_ok()
}

/// Loads `manifest` into `<schema>.<table>` (replace mode, created from a definition);
/// returns the summary's row count.
async fn load_into(db: &TestDb, manifest: &str, table: &str) -> u64 {
    let dir = common::fresh_cwd();
    let def = write(
        &dir,
        "def.sql",
        &format!(
            "CREATE TABLE {}.{table} (\n  id INTEGER NOT NULL,\n  v VARCHAR(300)\n);\n",
            db.pg_schema
        ),
    );
    let s = run(args(&[
        "--run-id",
        &rid("f23-load"),
        "load",
        "--warehouse",
        &pg_url(),
        "--from",
        manifest,
        "--table-def",
        def.to_str().expect("utf8 path"),
        "--no-ledger",
    ]))
    .await
    .assert_ok();
    s["rows"].as_u64().expect("rows loaded")
}

/// The oracle of one load of an extract at `prefix` into `table`, which must equal `source`:
/// the manifest lists only keys of that prefix, the load's count equals the rows written and
/// the source's count, and the table equals the source as a multiset.
async fn collision_oracle(
    db: &TestDb,
    pg: &Client,
    prefix: &str,
    loaded: u64,
    table: &str,
    source: &str,
) -> Losses {
    let mut l = Losses::default();
    for url in manifest_urls(&format!("{prefix}manifest.json")).await {
        let rest = url.strip_prefix(prefix).unwrap_or("");
        if !is_part_name(rest) {
            eprintln!("manifest of {prefix} lists a foreign key: {url}");
            l.dup += 1;
        }
    }
    let written = written_rows(prefix).await;
    let decoded = manifest_rows(&format!("{prefix}manifest.json")).await;
    let src = u64::try_from(count(pg, &db.pg_table(source)).await).expect("count");
    if loaded != written || written != src || decoded != src {
        eprintln!("{prefix}: loaded {loaded}, written {written}, decoded {decoded}, source {src}");
        l.lost += src.saturating_sub(loaded.min(written).min(decoded));
        l.dup += loaded.max(written).max(decoded).saturating_sub(src);
    }
    let (lost, dup) = multiset_diff(pg, &db.pg_table(source), &db.pg_table(table)).await;
    l.lost += lost;
    l.dup += dup;
    l
}

/// The keys and bytes under a prefix.
async fn snapshot(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let (bucket, _) = common::split_s3_uri(prefix);
    let mut out = Vec::new();
    for k in common::list_keys(prefix).await {
        let body = common::get_object(&format!("s3://{bucket}/{k}")).await;
        out.push((k, body));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn f23_colliding_prefixes_and_stale_parts_load_exact_keys_only() {
    let db = TestDb::new("f23").await;
    let pg = db.pg().await;
    // ~200 bytes a row: a gets several 64 KiB parts, b fewer.
    pg.batch_execute(
        "CREATE TABLE a AS SELECT g AS id,
                md5(g::text) || md5((g * 3)::text) || md5((g * 5)::text) || md5((g * 7)::text)
                || md5((g * 11)::text) || md5((g * 13)::text) AS v
             FROM generate_series(1, 16000) g;
         CREATE TABLE b AS SELECT g AS id, 'b row ' || g || ' ' || md5((-g)::text) AS v
             FROM generate_series(1, 3000) g;",
    )
    .await
    .expect("seed");
    let root = test_prefix("f23");
    let (t1, t10) = (format!("{root}t_1/"), format!("{root}t_10/"));
    // Junk that loads fine if anyone reads by prefix: valid gzip TSV of the same shape.
    let junk: String = (0..500)
        .map(|i| format!("{}\tjunk {i}\n", 900_000 + i))
        .collect();
    let mut total = Losses::default();
    let mut injected = 0u32;

    // 1. An old, bigger extract at t_1/, planted garbage (a high part number and a .bak copy),
    //    then a fresh extract there with fewer parts, and t_10/ beside it.
    let old = extract_to(&db, "a", &t1, &["--part-size", "64KiB"]).await;
    eprintln!("old t_1 extract: {old}");
    put(&format!("{t1}part-00007.tsv.gz"), gzip(&junk)).await;
    put(&format!("{t1}part-00000.tsv.gz.bak"), gzip(&junk)).await;
    let fresh = extract_to(&db, "a", &t1, &[]).await;
    eprintln!("fresh t_1 extract: {fresh}");
    extract_to(&db, "b", &t10, &["--part-size", "64KiB"]).await;
    let n = load_into(&db, &format!("{t1}manifest.json"), "ta").await;
    add(
        &mut total,
        collision_oracle(&db, &pg, &t1, n, "ta", "a").await,
    );
    let n = load_into(&db, &format!("{t10}manifest.json"), "tb").await;
    add(
        &mut total,
        collision_oracle(&db, &pg, &t10, n, "tb", "b").await,
    );
    total.partial_objects += unlisted_parts(&root).await;
    injected += 1;

    // 2. Garbage planted after the extract committed: a part the manifest does not list, and a
    //    stray manifest copy. The load reads the manifest's keys only.
    let listed = manifest_urls(&format!("{t1}manifest.json")).await;
    for n in ["part-00090.tsv.gz", "part-00099.tsv.gz"] {
        let uri = format!("{t1}{n}");
        assert!(!listed.contains(&uri), "the extract wrote {uri} itself");
        put(&uri, gzip(&junk)).await;
    }
    put(
        &format!("{t1}manifest.json.old"),
        serde_json::to_vec(&json!({"entries": [
            {"url": format!("{t1}part-00099.tsv.gz"), "mandatory": true}
        ]}))
        .expect("json"),
    )
    .await;
    let n = load_into(&db, &format!("{t1}manifest.json"), "ta").await;
    add(
        &mut total,
        collision_oracle(&db, &pg, &t1, n, "ta", "a").await,
    );
    injected += 1;

    // 3. t_1/ re-used for another, smaller table while those leftovers sit there: the load
    //    replaces ta with exactly b, and t_10/ is left byte-for-byte alone.
    let t10_before = snapshot(&t10).await;
    extract_to(&db, "b", &t1, &["--part-size", "64KiB"]).await;
    let n = load_into(&db, &format!("{t1}manifest.json"), "ta").await;
    add(
        &mut total,
        collision_oracle(&db, &pg, &t1, n, "ta", "b").await,
    );
    if snapshot(&t10).await != t10_before {
        eprintln!("an extract to {t1} changed objects under {t10}");
        total.partial_objects += 1;
    }
    total.partial_objects += unlisted_parts(&root).await;
    injected += 1;

    // 4. `--to` without the trailing slash: the same prefix t_1/, never t_10/ by name prefix.
    let t10_before = snapshot(&t10).await;
    extract_to(&db, "a", &format!("{root}t_1"), &["--part-size", "64KiB"]).await;
    let n = load_into(&db, &format!("{t1}manifest.json"), "ta").await;
    add(
        &mut total,
        collision_oracle(&db, &pg, &t1, n, "ta", "a").await,
    );
    if snapshot(&t10).await != t10_before {
        eprintln!("an extract to {root}t_1 changed objects under {t10}");
        total.partial_objects += 1;
    }
    let n = load_into(&db, &format!("{t10}manifest.json"), "tb").await;
    add(
        &mut total,
        collision_oracle(&db, &pg, &t10, n, "tb", "b").await,
    );
    total.partial_objects += unlisted_parts(&root).await;
    total.open_mpus += faults::open_mpus(&root).await;
    injected += 1;

    finish("F23", "stale-colliding-objects", injected, &total);
    db.cleanup().await;
}

// =============================================================================================
// F24: duplicate source keys
// =============================================================================================

#[tokio::test(flavor = "multi_thread")]
async fn f24_duplicate_staging_keys_fail_with_keys_or_dedupe_deterministically() {
    let db = TestDb::new("f24").await;
    let pg = db.pg().await;
    pg.batch_execute(
        "CREATE TABLE prod (id int PRIMARY KEY, v text, updated_at int);
         INSERT INTO prod SELECT g, 'old ' || g, g FROM generate_series(1, 200) g;
         CREATE TABLE stg (id int, v text, updated_at int);
         INSERT INTO stg SELECT g, 'new ' || g, 100 + g FROM generate_series(1, 50) g
                         WHERE g NOT IN (5, 17);
         INSERT INTO stg SELECT g, 'added ' || g, 100 + g FROM generate_series(201, 220) g;
         INSERT INTO stg VALUES (5, 'lose5a', 300), (5, 'win5', 301), (5, 'lose5b', 299),
                                (17, 'win17', 400), (17, 'lose17', 399),
                                (250, 'lose250', 499), (250, 'win250', 500);
         -- The same rows in another physical order.
         CREATE TABLE stg_rev AS SELECT * FROM stg ORDER BY id DESC, updated_at;
         -- Exact duplicate rows only.
         CREATE TABLE stg_same (id int, v text, updated_at int);
         INSERT INTO stg_same VALUES (3, 'same', 1), (3, 'same', 1), (4, 'four', 1);
         -- What a deterministic dedupe by updated_at DESC must give.
         CREATE TABLE expected AS
             SELECT * FROM prod WHERE id NOT IN (SELECT id FROM stg)
             UNION ALL
             (SELECT DISTINCT ON (id) id, v, updated_at FROM stg ORDER BY id, updated_at DESC);",
    )
    .await
    .expect("seed");
    let (prod, ledger) = (db.pg_table("prod"), db.pg_table("ledger"));
    let before = checksum(&pg, &prod).await;
    let upsert = |source: &str, dest: &str, extra: &[&str]| {
        let mut a = args(&[
            "--run-id",
            &rid("f24"),
            "upsert",
            "--warehouse",
            &pg_url(),
            "--source",
            &db.pg_table(source),
            "--destination",
            dest,
            "--ledger",
            &ledger,
        ]);
        a.extend(args(extra));
        a
    };
    let mut total = Losses::default();
    let mut injected = 0u32;

    // Without --dedupe-order: exit 2 naming every duplicate key with its count; prod as before.
    let cases: [(&str, &[&str], &[&str]); 3] = [
        ("stg", &[], &["(5) ×3", "(17) ×2", "(250) ×2"]),
        ("stg", &["--merge"], &["(5) ×3", "(17) ×2", "(250) ×2"]),
        ("stg_same", &[], &["(3) ×2"]),
    ];
    for (source, extra, keys) in cases {
        let r = run(upsert(source, &prod, extra)).await;
        injected += 1;
        if r.code == 0 {
            eprintln!(
                "F24: upsert from {source} {extra:?} with duplicate keys succeeded: {}",
                r.stdout
            );
            total.dup += 1;
        } else {
            let line = assert_fails(&r, "upsert", &["duplicate primary keys"]);
            for k in keys {
                assert!(line.contains(k), "{k} not named in: {line}");
            }
            assert!(
                !line.contains("(4)"),
                "a unique key named as duplicate: {line}"
            );
        }
        if checksum(&pg, &prod).await != before {
            eprintln!("F24: a failed upsert from {source} changed {prod}");
            total.partial_txns += 1;
        }
    }

    // With --dedupe-order: two fresh copies of prod, fed the same staging rows in two physical
    // orders, end identical and equal to the expected result.
    for extra in [&[][..], &["--merge"][..]] {
        let mut sums = Vec::new();
        for (copy, source) in [("prod_a", "stg"), ("prod_b", "stg_rev")] {
            pg.batch_execute(&format!(
                "DROP TABLE IF EXISTS {copy};
                 CREATE TABLE {copy} (LIKE prod INCLUDING ALL);
                 INSERT INTO {copy} SELECT * FROM prod;"
            ))
            .await
            .expect("copy prod");
            let mut e = extra.to_vec();
            e.extend(["--dedupe-order", "updated_at DESC"]);
            let s = run(upsert(source, &db.pg_table(copy), &e))
                .await
                .assert_ok();
            eprintln!("F24 dedupe {extra:?} {copy}: {s}");
            let (lost, dup) =
                multiset_diff(&pg, &db.pg_table("expected"), &db.pg_table(copy)).await;
            total.lost += lost;
            total.dup += dup;
            sums.push(checksum(&pg, &db.pg_table(copy)).await);
        }
        injected += 1;
        if sums[0] != sums[1] {
            eprintln!("F24: dedupe {extra:?} is not deterministic: {sums:?}");
            total.dup += 1;
        }
        let winner: String = pg
            .query_one("SELECT v FROM prod_a WHERE id = 5", &[])
            .await
            .expect("winner")
            .get(0);
        assert_eq!(winner, "win5", "dedupe {extra:?} kept the wrong row");
    }
    assert_eq!(checksum(&pg, &prod).await, before);
    finish("F24", "duplicate-source-keys", injected, &total);
    db.cleanup().await;
}

// =============================================================================================
// F34: QA failures
// =============================================================================================

/// Runs `ductwork check <argv>`; asserts exit 1 (counting a missed corruption of `rows` rows
/// as lost) and that `table` is unchanged by the check. Returns the JSON result.
async fn failing_check(
    pg: &Client,
    table: &str,
    argv: &[&str],
    rows: u64,
    total: &mut Losses,
) -> Value {
    let before = checksum(pg, table).await;
    let mut a = args(&["--run-id", &rid("f34"), "check"]);
    a.extend(args(argv));
    let r = run(a).await;
    if checksum(pg, table).await != before {
        eprintln!("F34: check {argv:?} changed {table}");
        total.partial_txns += 1;
    }
    match r.code {
        1 => {
            let j = r.summary();
            assert_eq!(j["passed"], false, "{j}");
            for f in ["expected", "actual", "tolerance"] {
                assert!(j.get(f).is_some(), "{f} missing: {j}");
            }
            j
        }
        0 => {
            eprintln!("F34: check {argv:?} missed the corruption: {}", r.stdout);
            total.lost += rows;
            r.summary()
        }
        _ => panic!(
            "check {argv:?}: exit {}\nstdout:\n{}\nstderr:\n{}",
            r.code, r.stdout, r.stderr
        ),
    }
}

fn sample_keys(j: &Value) -> Vec<Value> {
    j["samples"]
        .as_array()
        .map(|a| a.iter().map(|s| s["key"].clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn f34_seeded_corruptions_fail_the_checks_with_numbers_and_keys() {
    let db = TestDb::new("f34").await;
    let pg = db.pg().await;
    let s = db.pg_schema.clone();
    let mut rng = seeded("F34", 34);
    pg.batch_execute(
        "CREATE TABLE src (id int PRIMARY KEY, v text, n numeric(12,2));
         INSERT INTO src SELECT g, 'value ' || g, g * 1.25 FROM generate_series(1, 1000) g;",
    )
    .await
    .expect("seed");
    let mut my = db.my().await;
    my.query_drop(
        "CREATE TABLE msrc (id INT PRIMARY KEY, v VARCHAR(50), n DECIMAL(12,2));
         INSERT INTO msrc SELECT seq, CONCAT('value ', seq), seq * 1.25 FROM seq_1_to_1000;",
    )
    .await
    .expect("seed MariaDB");
    let _ = my.disconnect().await;
    let dir = common::fresh_cwd();
    // Stage both sources into the warehouse through the real extract and load.
    let stage = async |source: String, what: &str, table: &str| {
        let prefix = test_prefix("f34");
        run(args(&[
            "--run-id",
            &rid("f34-ex"),
            "extract",
            "--source",
            &source,
            "--table",
            what,
            "--to",
            &prefix,
        ]))
        .await
        .assert_ok();
        let def = write(
            &dir,
            &format!("{table}.sql"),
            &format!(
                "CREATE TABLE {s}.{table} (\n  id INTEGER NOT NULL,\n  v VARCHAR(50),\n  n DECIMAL(12,2)\n);\n"
            ),
        );
        let j = run(args(&[
            "--run-id",
            &rid("f34-load"),
            "load",
            "--warehouse",
            &pg_url(),
            "--from",
            &format!("{prefix}manifest.json"),
            "--table-def",
            def.to_str().expect("utf8 path"),
            "--no-ledger",
        ]))
        .await
        .assert_ok();
        assert_eq!(j["rows"], 1000, "{j}");
    };
    for t in ["wh", "wh_sample", "wh_pk"] {
        stage(pg_url(), &db.pg_table("src"), t).await;
    }
    stage(db.mysql_url_with_db(), "msrc", "wh_my").await;
    let (url, src) = (pg_url(), db.pg_table("src"));
    let mut total = Losses::default();
    let mut injected = 0u32;

    // 1. 5 % of the PostgreSQL-sourced rows dropped; tolerance 4.9 %: exit 1, 1000 vs 950.
    let wh = db.pg_table("wh");
    pg.batch_execute("DELETE FROM wh WHERE id % 20 = 7")
        .await
        .expect("drop 5 %");
    let j = failing_check(
        &pg,
        &wh,
        &[
            "count",
            "--source",
            &url,
            "--source-table",
            &src,
            "--warehouse",
            &url,
            "--destination-table",
            &wh,
            "--tolerance",
            "4.9",
        ],
        50,
        &mut total,
    )
    .await;
    assert_eq!(
        (j["expected"].clone(), j["actual"].clone()),
        (json!(1000), json!(950)),
        "{j}"
    );
    assert_eq!(j["tolerance"], 4.9, "{j}");
    assert_eq!(j["error_rate"], 5.0, "{j}");
    injected += 1;

    // 2. 5 % of the MariaDB-sourced rows dropped at seeded random keys; default tolerance.
    let wh_my = db.pg_table("wh_my");
    let mut victims: Vec<i32> = Vec::new();
    while victims.len() < 50 {
        let v = rng.random_range(1..=1000);
        if !victims.contains(&v) {
            victims.push(v);
        }
    }
    pg.execute("DELETE FROM wh_my WHERE id = ANY($1)", &[&victims])
        .await
        .expect("drop 5 %");
    let my_url = db.mysql_url_with_db();
    let j = failing_check(
        &pg,
        &wh_my,
        &[
            "count",
            "--source",
            &my_url,
            "--source-table",
            "msrc",
            "--warehouse",
            &url,
            "--destination-table",
            &wh_my,
            "--tolerance",
            "3",
        ],
        50,
        &mut total,
    )
    .await;
    assert_eq!(
        (j["expected"].clone(), j["actual"].clone()),
        (json!(1000), json!(950)),
        "{j}"
    );
    assert_eq!(j["tolerance"], 3.0, "{j}");
    injected += 1;

    // 3. The same dropped rows found by key: diff names missing keys.
    let j = failing_check(
        &pg,
        &wh_my,
        &[
            "diff",
            "--source",
            &my_url,
            "--source-table",
            "msrc",
            "--warehouse",
            &url,
            "--destination-table",
            &wh_my,
            "--pk",
            "id",
        ],
        50,
        &mut total,
    )
    .await;
    eprintln!("F34 diff: {j}");
    let keys = sample_keys(&j);
    assert!(!keys.is_empty(), "diff names no key: {j}");
    for k in &keys {
        let id = i32::try_from(k["id"].as_i64().expect("integer key")).expect("i32");
        assert!(
            victims.contains(&id),
            "diff named {k}, not a dropped key: {j}"
        );
    }
    injected += 1;

    // 4. One value flipped in a seeded row; the whole table sampled: exit 1 naming the key.
    let wh_sample = db.pg_table("wh_sample");
    let victim: i32 = rng.random_range(2..=1000);
    pg.execute(
        "UPDATE wh_sample SET v = v || '!' WHERE id = $1",
        &[&victim],
    )
    .await
    .expect("flip");
    let j = failing_check(
        &pg,
        &wh_sample,
        &[
            "sample",
            "--source",
            &url,
            "--source-table",
            &src,
            "--warehouse",
            &url,
            "--destination-table",
            &wh_sample,
            "--pk",
            "id",
            "--sample-size",
            "1000",
        ],
        1,
        &mut total,
    )
    .await;
    assert_eq!(sample_keys(&j), vec![json!({"id": victim})], "{j}");
    injected += 1;

    // 5. A numeric flipped in a second row, found by a --sample-sql sample holding it.
    let victim2 = if victim > 500 {
        victim - 250
    } else {
        victim + 250
    };
    pg.execute(
        "UPDATE wh_sample SET n = n + 0.01 WHERE id = $1",
        &[&victim2],
    )
    .await
    .expect("flip");
    let sample_sql = format!("SELECT * FROM {src} WHERE id IN (1, 2, {victim2}, 999)");
    let j = failing_check(
        &pg,
        &wh_sample,
        &[
            "sample",
            "--source",
            &url,
            "--sample-sql",
            &sample_sql,
            "--warehouse",
            &url,
            "--destination-table",
            &wh_sample,
            "--pk",
            "id",
        ],
        1,
        &mut total,
    )
    .await;
    assert_eq!(sample_keys(&j), vec![json!({"id": victim2})], "{j}");
    injected += 1;

    // 6. Duplicate keys in the warehouse copy: primary-key exits 1 listing them.
    let wh_pk = db.pg_table("wh_pk");
    let mut dups: Vec<i32> = (0..3).map(|_| rng.random_range(1..=1000)).collect();
    dups.sort_unstable();
    dups.dedup();
    pg.execute(
        "INSERT INTO wh_pk SELECT * FROM wh_pk WHERE id = ANY($1)",
        &[&dups],
    )
    .await
    .expect("duplicate");
    let j = failing_check(
        &pg,
        &wh_pk,
        &[
            "primary-key",
            "--warehouse",
            &url,
            "--table",
            &wh_pk,
            "--pk",
            "id",
        ],
        dups.len() as u64,
        &mut total,
    )
    .await;
    let want: Vec<Value> = dups.iter().map(|d| json!({"id": d})).collect();
    assert_eq!(sample_keys(&j), want, "{j}");
    assert_eq!(j["actual"], dups.len(), "{j}");
    injected += 1;

    // The source tables were never touched.
    assert_eq!(count(&pg, &src).await, 1000);
    finish("F34", "qa-failure", injected, &total);
    db.cleanup().await;
}

// =============================================================================================
// F04: PostgreSQL restart mid-run (a private instance)
// =============================================================================================

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL 15 instance of the test's own: initdb'd as `postgres` (initdb refuses root)
/// into a fresh directory, on a free port, stopped and removed on drop. The machine's shared
/// servers are never touched.
struct PrivatePg {
    dir: PathBuf,
    port: u16,
}

fn sh(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl PrivatePg {
    fn init(tag: &str) -> Result<PrivatePg, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ductwork-{tag}-pg-"))
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        let me = PrivatePg {
            dir,
            port: free_port(),
        };
        sh(
            Command::new("chown").arg("postgres:postgres").arg(&me.dir),
            "chown",
        )?;
        sh(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(format!("{PG_BIN}/initdb"))
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(me.dir.join("data")),
            "initdb",
        )?;
        Ok(me)
    }

    /// `pg_ctl <action>` (start or restart); see [`pg_ctl`].
    fn ctl(&self, action: &str) -> Result<(), String> {
        pg_ctl(&self.dir, self.port, action)
    }

    fn stop(&self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/pg_ctl"))
            .args(["-w", "-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .arg("stop")
            .stdin(Stdio::null())
            .output();
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    async fn admin(&self) -> Client {
        common::pg_connect(&self.url()).await
    }
}

/// `pg_ctl <action>` (start or restart, `-m fast`) of the instance in `dir` with its settings;
/// waits until it accepts connections.
fn pg_ctl(dir: &Path, port: u16, action: &str) -> Result<(), String> {
    let opts = format!(
        "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
        dir.display()
    );
    sh(
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/pg_ctl"))
            .args(["-w", "-t", "60", "-m", "fast", "-D"])
            .arg(dir.join("data"))
            .arg("-l")
            .arg(dir.join("server.log"))
            .args(["-o", &opts, action]),
        &format!("pg_ctl {action}"),
    )
    .map(drop)
    .map_err(|e| {
        let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        format!("{e}\nserver log:\n{log}")
    })
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The binary as a tokio child process with the hermetic environment of
/// `common::ductwork_in`, killed if dropped.
fn child_command(dir: &Path, argv: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::from(common::ductwork_std(dir));
    cmd.args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Waits until a session of `run_id` is active on the instance; false after 30 s.
async fn session_seen(pg: &PrivatePg, run_id: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    let like = format!("ductwork:{run_id}:%");
    let admin = pg.admin().await;
    while Instant::now() < deadline {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1 AND state = 'active'",
                &[&like],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if n > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn f04_pg_restart_mid_extract_fails_cleanly_and_a_rerun_is_exact() {
    let pg = PrivatePg::init("f04")
        .unwrap_or_else(|e| panic!("F04: cannot create a private PostgreSQL instance: {e}"));
    pg.ctl("start").unwrap_or_else(|e| panic!("F04: {e}"));
    let rows: i64 = 30_000;
    pg.admin()
        .await
        .batch_execute(&format!(
            "CREATE TABLE src AS SELECT g AS id,
                 md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS h
             FROM generate_series(1, {rows}) g;
             CREATE FUNCTION slow(id int) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $f$
             BEGIN
               IF id % 1000 = 0 THEN PERFORM pg_sleep(0.1); END IF;
               RETURN true;
             END $f$;"
        ))
        .await
        .expect("seed");
    // ~3 s of reading: 30 sleeps of 100 ms.
    let sql = "SELECT id, h FROM src WHERE slow(id)";
    let mut rng = seeded("F04", 4);
    let mut total = Losses::default();
    let mut injected = 0u32;
    for i in 0..3 {
        let delay = Duration::from_millis(rng.random_range(200..1800));
        let run_id = rid("f04");
        let prefix = test_prefix("f04");
        let argv = args(&[
            "--run-id",
            &run_id,
            "extract",
            "--source",
            &pg.url(),
            "--sql",
            sql,
            "--to",
            &prefix,
            "--part-size",
            "64KiB",
        ]);
        let dir = common::fresh_cwd();
        let started = Instant::now();
        let child = child_command(&dir, &argv).spawn().expect("spawn ductwork");
        let (output, restarted_at) = tokio::join!(
            async {
                let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
                    .await
                    .expect("extract ended within 120 s")
                    .expect("wait");
                (out, Instant::now())
            },
            async {
                assert!(session_seen(&pg, &run_id).await, "F04 #{i}: no session");
                tokio::time::sleep(delay).await;
                let at = Instant::now();
                let (dir, port) = (pg.dir.clone(), pg.port);
                let r = tokio::task::spawn_blocking(move || pg_ctl(&dir, port, "restart"))
                    .await
                    .expect("join");
                r.unwrap_or_else(|e| panic!("F04 #{i}: {e}"));
                at
            }
        );
        let (out, ended) = output;
        let r = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        let mid_run = restarted_at < ended;
        eprintln!(
            "F04 #{i}: delay {delay:?}, restart at {:?}, ended at {:?}, exit {}",
            restarted_at - started,
            ended - started,
            r.code
        );
        assert!(mid_run, "F04 #{i}: the extract ended before the restart");
        injected += 1;
        let keys = common::list_keys(&prefix).await;
        let has_manifest = keys.iter().any(|k| k.ends_with("/manifest.json"));
        if r.code == 0 {
            // A bounded re-extract after the restart: it must be exact.
            let got = manifest_rows(&format!("{prefix}manifest.json")).await;
            let want = u64::try_from(rows).expect("rows");
            total.lost += want.saturating_sub(got);
            total.dup += got.saturating_sub(want);
            eprintln!("F04 #{i}: the extract recovered by itself: {}", r.stdout);
        } else {
            assert_fails(
                &r,
                "extract",
                &[
                    "57P01",
                    "57P02",
                    "57P03",
                    "terminat",
                    "connection closed",
                    "closed",
                ],
            );
            if has_manifest {
                eprintln!("F04 #{i}: a failed extract left a manifest: {keys:?}");
                total.partial_objects += 1;
            }
        }
        total.partial_objects += faults::partial_objects(&prefix).await;
        total.open_mpus += faults::open_mpus(&prefix).await;

        // A clean re-run at the same prefix is exact and leaves nothing else behind.
        let rerun = child_command(&common::fresh_cwd(), &{
            let mut a = argv.clone();
            a[1] = rid("f04-rerun");
            a
        })
        .output()
        .await
        .expect("rerun");
        assert_eq!(
            rerun.status.code(),
            Some(0),
            "F04 #{i}: clean re-run failed:\n{}",
            String::from_utf8_lossy(&rerun.stderr)
        );
        let got = manifest_rows(&format!("{prefix}manifest.json")).await;
        let written = written_rows(&prefix).await;
        let want = u64::try_from(rows).expect("rows");
        total.lost += want.saturating_sub(got.min(written));
        total.dup += got.max(written).saturating_sub(want);
        total.partial_objects += faults::partial_objects(&prefix).await;
        total.open_mpus += faults::open_mpus(&prefix).await;
    }
    finish("F04", "pg-restart-mid-run", injected, &total);
}
