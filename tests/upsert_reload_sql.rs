//! `ductwork upsert`, `reload` and `sql` end to end: the real binary on the local PostgreSQL
//! warehouse (SPEC §7, RELIABILITY invariants 4, 5 and 7, §5).
//!
//! Behaviour (composite keys, NULLs, dedupe, MERGE, guards, scripts with tricky quoting,
//! parameters, table definitions, the run ledger), a hostile-identifier corpus with a canary
//! table, and fault injection at every statement boundary of the upsert and reload
//! transactions: the statement is held (a table lock, or an advisory lock taken by a gate
//! function that a view, a trigger or a deferred constraint trigger calls), then the statement
//! is cancelled, its backend terminated, or the process sent SIGTERM. Production must equal its
//! checksum from before every time, and a clean re-run with the same run id must give the
//! expected table.

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use clap::Parser as _;
use common::{args, run, Run, TestDb};
use serde_json::Value;
use tokio_postgres::Client;

// ---- running the binary --------------------------------------------------------------------

/// The error line's cause with the renderer's `\"` and `\\` escapes undone.
fn unq(line: &str) -> String {
    line.replace("\\\"", "\"").replace("\\\\", "\\")
}

/// Starts the binary as a child process (so that a test can signal it), with the same
/// hermetic environment as [`common::ductwork`] minus S3 (these steps never touch it).
fn start(args: &[String]) -> Child {
    let dir = common::fresh_cwd();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ductwork"));
    cmd.current_dir(&dir)
        .env("HOME", &dir)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
        "DUCTWORK_CONFIG",
        "DUCTWORK_RUN_ID",
        "PGPASSWORD",
        "AWS_PROFILE",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args).spawn().expect("spawning ductwork")
}

/// Waits (at most a minute) for a child started by [`start`].
async fn finish(child: Child) -> Run {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("ductwork did not exit within 60 s")
    .expect("join")
    .expect("waiting for ductwork");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn sigterm(child: &Child) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(ok.success(), "kill -TERM failed");
}

// ---- SQL helpers ----------------------------------------------------------------------------

/// Quotes an identifier for the test's own SQL (independent of the code under test).
fn qi(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `count(*)` and an md5 of the ordered row texts: equal checksums, equal tables.
async fn checksum(pg: &Client, table: &str) -> (i64, String) {
    let row = pg
        .query_one(
            &format!(
                "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) \
                 FROM {table} t"
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("checksum of {table}: {e}"));
    (row.get(0), row.get(1))
}

/// The rows of a query, each rendered as its row text.
async fn texts(pg: &Client, query: &str) -> Vec<String> {
    pg.query(&format!("SELECT t::text FROM ({query}) t"), &[])
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn count(pg: &Client, table: &str) -> i64 {
    pg.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
        .get(0)
}

// ---- upsert ---------------------------------------------------------------------------------

/// Staging with a composite key (id, region), NULLs in non-key columns, and a production table
/// with rows to replace and rows to keep.
async fn seed_users(pg: &Client, s: &str) {
    pg.batch_execute(&format!(
        "CREATE TABLE {s}.prod (id int, region text, email text, score numeric, note text,
             PRIMARY KEY (id, region));
         CREATE TABLE {s}.stg (note text, id int, region text, email text, score numeric, extra int);
         INSERT INTO {s}.prod VALUES
             (1, 'eu', 'old1@x', 1, 'keep?'), (1, 'us', 'keep1us@x', 2, NULL),
             (2, 'eu', 'old2@x', NULL, 'n'), (9, 'eu', 'keep9@x', 9, '');
         INSERT INTO {s}.stg (id, region, email, score, note, extra) VALUES
             (1, 'eu', 'new1@x', NULL, NULL, 7), (2, 'eu', NULL, 2.50, '', 7),
             (3, 'us', 'new3@x', 3, 'tab\there', NULL), (3, 'eu', 'new3eu@x', NULL, NULL, NULL);
         CREATE TABLE {s}.expected (LIKE {s}.prod);
         INSERT INTO {s}.expected VALUES
             (1, 'eu', 'new1@x', NULL, NULL), (1, 'us', 'keep1us@x', 2, NULL),
             (2, 'eu', NULL, 2.50, ''), (9, 'eu', 'keep9@x', 9, ''),
             (3, 'us', 'new3@x', 3, 'tab\there'), (3, 'eu', 'new3eu@x', NULL, NULL);"
    ))
    .await
    .expect("seed users");
}

#[tokio::test(flavor = "multi_thread")]
async fn upsert_composite_key_replaces_matches_keeps_others_and_nulls() {
    let db = TestDb::new("up_composite").await;
    let pg = db.pg().await;
    let s = qi(&db.pg_schema);
    seed_users(&pg, &s).await;
    let ledger = format!("{s}.ledger");
    let r = run(args(&[
        "--run-id",
        "up-composite-1",
        "upsert",
        "--warehouse",
        &common::pg_url(),
        "--source",
        &format!("{s}.stg"),
        "--destination",
        &format!("{s}.prod"),
        "--ledger",
        &ledger,
    ]))
    .await;
    let summary = r.assert_ok();
    assert_eq!(summary["status"], "applied");
    assert_eq!(summary["mode"], "delete-insert");
    assert_eq!(summary["pk"], serde_json::json!(["id", "region"]));
    assert_eq!(summary["pk_from"], "catalog");
    assert_eq!(summary["rows_staged"], 4);
    assert_eq!(summary["rows_deleted"], 2);
    assert_eq!(summary["rows_inserted"], 4);
    assert_eq!(summary["run_id"], "up-composite-1");
    assert_eq!(
        checksum(&pg, &format!("{s}.prod")).await,
        checksum(&pg, &format!("{s}.expected")).await
    );
    // NULL stays NULL and '' stays '' (not confused with each other).
    let nulls = texts(
        &pg,
        &format!("SELECT email IS NULL, note IS NULL, note FROM {s}.prod WHERE id = 2"),
    )
    .await;
    assert_eq!(nulls, ["(t,f,\"\")"]);
    let ledger_rows = texts(
        &pg,
        &format!("SELECT run_id, step, target, rows FROM {ledger}"),
    )
    .await;
    assert_eq!(ledger_rows.len(), 1, "{ledger_rows:?}");
    assert!(
        ledger_rows[0].starts_with("(up-composite-1,upsert,"),
        "{ledger_rows:?}"
    );
    assert!(ledger_rows[0].ends_with(",4)"), "{ledger_rows:?}");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upsert_refuses_duplicate_keys_listing_them_and_dedupe_order_picks_one() {
    let db = TestDb::new("up_dups").await;
    let pg = db.pg().await;
    let s = qi(&db.pg_schema);
    seed_users(&pg, &s).await;
    pg.batch_execute(&format!(
        "INSERT INTO {s}.stg (id, region, email, score) VALUES
             (1, 'eu', 'newer1@x', 5), (1, 'eu', 'newest1@x', 6), (3, 'us', 'dup3@x', 1);"
    ))
    .await
    .expect("dups");
    let before = checksum(&pg, &format!("{s}.prod")).await;
    let base = |extra: &[&str]| {
        let mut a = args(&[
            "upsert",
            "--warehouse",
            &common::pg_url(),
            "--source",
            &format!("{s}.stg"),
            "--destination",
            &format!("{s}.prod"),
            "--no-ledger",
        ]);
        a.extend(args(extra));
        a
    };
    let r = run(base(&[])).await;
    let line = r.assert_error("upsert");
    assert!(
        line.contains("duplicate primary keys (id, region)"),
        "{line}"
    );
    assert!(line.contains("(1, eu) ×3"), "{line}");
    assert!(line.contains("(3, us) ×2"), "{line}");
    assert!(line.contains("--dedupe-order"), "{line}");
    assert!(
        line.contains(&format!("table={}.prod", db.pg_schema)),
        "{line}"
    );
    assert_eq!(checksum(&pg, &format!("{s}.prod")).await, before);

    // With an order, the first row per key in that order survives.
    let r = run(base(&["--dedupe-order", "score DESC NULLS LAST, email"])).await;
    let summary = r.assert_ok();
    assert_eq!(summary["deduplicated"], true);
    assert_eq!(summary["rows_staged"], 4);
    let got = texts(
        &pg,
        &format!("SELECT id, region, email FROM {s}.prod WHERE id IN (1, 3) ORDER BY 1, 2"),
    )
    .await;
    assert_eq!(
        got,
        [
            "(1,eu,newest1@x)",
            "(1,us,keep1us@x)",
            "(3,eu,new3eu@x)",
            "(3,us,new3@x)"
        ]
    );
    // A fragment that tries to leave the ORDER BY is refused before anything runs.
    let r = run(base(&["--dedupe-order", "id) AS x; DROP TABLE prod; --"])).await;
    r.assert_error("upsert");
    assert_eq!(count(&pg, &format!("{s}.prod")).await, 6);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upsert_refuses_null_keys_listing_samples() {
    let db = TestDb::new("up_nullkeys").await;
    let pg = db.pg().await;
    let s = qi(&db.pg_schema);
    seed_users(&pg, &s).await;
    pg.batch_execute(&format!(
        "INSERT INTO {s}.stg (id, region) VALUES (NULL, 'eu'), (7, NULL);"
    ))
    .await
    .expect("null keys");
    let before = checksum(&pg, &format!("{s}.prod")).await;
    for extra in [&[][..], &["--dedupe-order", "email"][..]] {
        let mut a = args(&[
            "upsert",
            "--warehouse",
            &common::pg_url(),
            "--source",
            &format!("{s}.stg"),
            "--destination",
            &format!("{s}.prod"),
            "--no-ledger",
        ]);
        a.extend(args(extra));
        let r = run(a).await;
        let line = r.assert_error("upsert");
        assert!(
            line.contains("NULL in the primary key (id, region)"),
            "{line}"
        );
        assert!(line.contains("(NULL, eu)"), "{line}");
        assert!(line.contains("(7, NULL)"), "{line}");
        assert_eq!(checksum(&pg, &format!("{s}.prod")).await, before);
    }
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upsert_merge_gives_the_same_table_as_delete_insert() {
    let db = TestDb::new("up_merge").await;
    let pg = db.pg().await;
    let s = qi(&db.pg_schema);
    seed_users(&pg, &s).await;
    pg.batch_execute(&format!(
        "CREATE TABLE {s}.prod2 (LIKE {s}.prod INCLUDING ALL); INSERT INTO {s}.prod2 SELECT * FROM {s}.prod;
         INSERT INTO {s}.stg (id, region, email, score) VALUES (1, 'eu', 'newer1@x', 8);"
    ))
    .await
    .expect("copy");
    let upsert = |dest: &str, merge: bool| {
        let mut a = args(&[
            "upsert",
            "--warehouse",
            &common::pg_url(),
            "--source",
            &format!("{s}.stg"),
            "--destination",
            &format!("{s}.{dest}"),
            "--dedupe-order",
            "score DESC NULLS LAST",
            "--no-ledger",
        ]);
        if merge {
            a.push("--merge".into());
        }
        a
    };
    let plain = run(upsert("prod", false)).await.assert_ok();
    let merged = run(upsert("prod2", true)).await.assert_ok();
    assert_eq!(merged["mode"], "merge");
    assert_eq!(merged["rows_merged"], 4);
    assert_eq!(plain["rows_inserted"], 4);
    assert_eq!(
        checksum(&pg, &format!("{s}.prod")).await,
        checksum(&pg, &format!("{s}.prod2")).await
    );
    assert_eq!(
        texts(
            &pg,
            &format!("SELECT email FROM {s}.prod2 WHERE id = 1 AND region = 'eu'")
        )
        .await,
        ["(newer1@x)"]
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upsert_key_sources_missing_columns_and_definition_created_destination() {
    let db = TestDb::new("up_keys").await;
    let pg = db.pg().await;
    let s = qi(&db.pg_schema);
    pg.batch_execute(&format!(
        "CREATE TABLE {s}.nokey (id int, v text);
         INSERT INTO {s}.nokey VALUES (1, 'old'), (2, 'keep');
         CREATE TABLE {s}.stg (id int, v text);
         INSERT INTO {s}.stg VALUES (1, 'new'), (3, 'three');
         CREATE TABLE {s}.narrow (id int);"
    ))
    .await
    .expect("seed");
    let up = |src: &str, dest: &str, extra: &[&str]| {
        let mut a = args(&[
            "upsert",
            "--warehouse",
            &common::pg_url(),
            "--source",
            &format!("{s}.{src}"),
            "--destination",
            &format!("{s}.{dest}"),
            "--no-ledger",
        ]);
        a.extend(args(extra));
        a
    };
    // No key anywhere: a clear error.
    let line = run(up("stg", "nokey", &[]))
        .await
        .assert_error("upsert")
        .to_owned();
    assert!(line.contains("no primary key"), "{line}");
    // --pk supplies it (unquoted names fold to lower case, as in SQL).
    let summary = run(up("stg", "nokey", &["--pk", "ID"])).await.assert_ok();
    assert_eq!(summary["pk_from"], "--pk");
    assert_eq!(
        texts(&pg, &format!("SELECT * FROM {s}.nokey ORDER BY id")).await,
        ["(1,new)", "(2,keep)", "(3,three)"]
    );
    // A --pk column that the destination lacks.
    let line = run(up("stg", "nokey", &["--pk", "id,nope"]))
        .await
        .assert_error("upsert")
        .to_owned();
    assert!(unq(&line).contains("column(s) \"nope\" (--pk)"), "{line}");
    // The source lacks a destination column: listed.
    let line = run(up("narrow", "nokey", &["--pk", "id"]))
        .await
        .assert_error("upsert")
        .to_owned();
    assert!(unq(&line).contains("lacks column(s) \"v\""), "{line}");

    // A definition gives the key and creates the missing destination in the transaction.
    let dir = tempfile::tempdir().expect("tempdir");
    let def = dir.path().join("made.sql");
    std::fs::write(
        &def,
        format!(
            "CREATE TABLE {s}.made (\n  id INTEGER NOT NULL,\n  v VARCHAR(20),\n  PRIMARY KEY (id)\n)\nDISTKEY (id);\n"
        ),
    )
    .expect("write def");
    let def = def.display().to_string();
    let summary = run(up("stg", "made", &["--destination-def", &def]))
        .await
        .assert_ok();
    assert_eq!(summary["created"], true);
    assert_eq!(summary["pk_from"], "--destination-def");
    assert_eq!(
        texts(&pg, &format!("SELECT * FROM {s}.made ORDER BY id")).await,
        ["(1,new)", "(3,three)"]
    );
    // A definition of another table is refused.
    let line = run(up("stg", "nokey", &["--destination-def", &def]))
        .await
        .assert_error("upsert")
        .to_owned();
    assert!(line.contains("not the destination"), "{line}");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rerunning_an_applied_run_id_reports_already_applied_and_changes_nothing() {
    let db = TestDb::new("up_ledger").await;
    let pg = db.pg().await;
    let s = qi(&db.pg_schema);
    seed_users(&pg, &s).await;
    let ledger = format!("{s}.runs");
    let up = |run_id: &str| {
        args(&[
            "--run-id",
            run_id,
            "upsert",
            "--warehouse",
            &common::pg_url(),
            "--source",
            &format!("{s}.stg"),
            "--destination",
            &format!("{s}.prod"),
            "--ledger",
            &ledger,
        ])
    };
    run(up("2026-11-23T00:00:00Z")).await.assert_ok();
    let after = checksum(&pg, &format!("{s}.prod")).await;
    // The staging table changes; a retry of the same run must not apply it.
    pg.batch_execute(&format!("UPDATE {s}.stg SET email = 'changed'"))
        .await
        .expect("update");
    let again = run(up("2026-11-23T00:00:00Z")).await.assert_ok();
    assert_eq!(again["status"], "already applied");
    assert_eq!(again["rows"], 4);
    assert!(again["finished"].is_string(), "{again}");
    assert_eq!(checksum(&pg, &format!("{s}.prod")).await, after);
    assert_eq!(count(&pg, &ledger).await, 1);
    // Another run id applies.
    let next = run(up("2026-11-24T00:00:00Z")).await.assert_ok();
    assert_eq!(next["status"], "applied");
    assert_eq!(
        count(&pg, &format!("{s}.prod WHERE email = 'changed'")).await,
        4
    );
    // --no-ledger neither consults nor writes the ledger.
    let mut a = up("2026-11-24T00:00:00Z");
    a.retain(|x| x != "--ledger" && x != &ledger);
    a.push("--no-ledger".into());
    let forced = run(a).await.assert_ok();
    assert_eq!(forced["status"], "applied");
    assert_eq!(count(&pg, &ledger).await, 2);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_prints_the_transaction_and_touches_nothing() {
    let db = TestDb::new("up_dry").await;
    let pg = db.pg().await;
    let s = qi(&db.pg_schema);
    seed_users(&pg, &s).await;
    let before = checksum(&pg, &format!("{s}.prod")).await;
    let ledger = format!("{s}.ledger");
    let summary = run(args(&[
        "--dry-run",
        "upsert",
        "--warehouse",
        &common::pg_url(),
        "--source",
        &format!("{s}.stg"),
        "--destination",
        &format!("{s}.prod"),
        "--ledger",
        &ledger,
    ]))
    .await
    .assert_ok();
    assert_eq!(summary["dry_run"], true);
    let stmts: Vec<&str> = summary["statements"]
        .as_array()
        .expect("statements")
        .iter()
        .map(|v| v.as_str().expect("text"))
        .collect();
    let begin = stmts.iter().position(|x| *x == "BEGIN").expect("BEGIN");
    assert_eq!(stmts.last(), Some(&"COMMIT"));
    assert!(stmts[begin + 1].starts_with("SELECT \"rows\""), "{stmts:?}");
    assert!(stmts.iter().any(|x| x.starts_with("DELETE FROM")));
    assert!(stmts.iter().all(|x| !x.to_uppercase().contains("TRUNCATE")));
    assert_eq!(checksum(&pg, &format!("{s}.prod")).await, before);
    let exists: Option<String> = pg
        .query_one("SELECT to_regclass($1)::text", &[&ledger])
        .await
        .expect("regclass")
        .get(0);
    assert_eq!(exists, None, "dry run created the ledger");

    let summary = run(args(&[
        "--dry-run",
        "reload",
        "--warehouse",
        &common::pg_url(),
        "--source",
        &format!("{s}.stg"),
        "--destination",
        &format!("{s}.prod"),
    ]))
    .await
    .assert_ok();
    let text = summary["statements"].to_string();
    assert!(text.contains("DELETE FROM"), "{text}");
    assert!(!text.to_uppercase().contains("TRUNCATE"), "{text}");
    assert_eq!(checksum(&pg, &format!("{s}.prod")).await, before);
    db.cleanup().await;
}

// ---- reload ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn reload_replaces_rows_and_guards_against_empty_and_small_sources() {
    let db = TestDb::new("reload").await;
    let pg = db.pg().await;
    let s = qi(&db.pg_schema);
    pg.batch_execute(&format!(
        "CREATE TABLE {s}.prod (id int PRIMARY KEY, v text);
         INSERT INTO {s}.prod VALUES (1, 'a'), (2, 'b'), (3, 'c');
         CREATE TABLE {s}.stg (v text, id int, extra int);
         INSERT INTO {s}.stg (id, v) VALUES (10, 'x'), (11, NULL);
         CREATE TABLE {s}.empty (id int, v text);"
    ))
    .await
    .expect("seed");
    let ledger = format!("{s}.ledger");
    let reload = |run_id: &str, src: &str, extra: &[&str]| {
        let mut a = args(&[
            "--run-id",
            run_id,
            "reload",
            "--warehouse",
            &common::pg_url(),
            "--source",
            &format!("{s}.{src}"),
            "--destination",
            &format!("{s}.prod"),
            "--ledger",
            &ledger,
        ]);
        a.extend(args(extra));
        a
    };
    let before = checksum(&pg, &format!("{s}.prod")).await;
    let schema = &db.pg_schema;

    let r = run(reload("r-empty", "empty", &[])).await;
    let line = r.assert_error("reload");
    assert!(
        line.contains(&format!(
            "{schema}.prod (3 rows) from {schema}.empty (0 rows)"
        )),
        "{line}"
    );
    assert!(line.contains("--allow-empty"), "{line}");
    assert_eq!(checksum(&pg, &format!("{s}.prod")).await, before);

    let r = run(reload("r-min", "stg", &["--min-rows", "3"])).await;
    let line = r.assert_error("reload");
    assert!(line.contains("(2 rows): fewer than --min-rows 3"), "{line}");
    let r = run(reload(
        "r-min",
        "empty",
        &["--allow-empty", "--min-rows", "1"],
    ))
    .await;
    r.assert_error("reload");
    assert_eq!(checksum(&pg, &format!("{s}.prod")).await, before);

    let summary = run(reload("r-ok", "stg", &["--min-rows", "2"]))
        .await
        .assert_ok();
    assert_eq!(summary["status"], "applied");
    assert_eq!(summary["source_rows"], 2);
    assert_eq!(summary["rows_deleted"], 3);
    assert_eq!(summary["rows_inserted"], 2);
    assert_eq!(
        texts(&pg, &format!("SELECT * FROM {s}.prod ORDER BY id")).await,
        ["(10,x)", "(11,)"]
    );
    // A retry of the same run id changes nothing, even though the source changed.
    pg.batch_execute(&format!("INSERT INTO {s}.stg (id, v) VALUES (12, 'y')"))
        .await
        .expect("insert");
    let again = run(reload("r-ok", "stg", &[])).await.assert_ok();
    assert_eq!(again["status"], "already applied");
    assert_eq!(again["rows"], 2);
    assert_eq!(count(&pg, &format!("{s}.prod")).await, 2);

    let summary = run(reload("r-empty-ok", "empty", &["--allow-empty"]))
        .await
        .assert_ok();
    assert_eq!(summary["rows_inserted"], 0);
    assert_eq!(count(&pg, &format!("{s}.prod")).await, 0);
    db.cleanup().await;
}

// ---- sql ------------------------------------------------------------------------------------

fn sql_args(script: &[&str], extra: &[&str]) -> Vec<String> {
    let mut a = args(&["sql", "--warehouse", &common::pg_url()]);
    a.extend(args(script));
    a.extend(args(extra));
    a
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_script_with_quotes_dollar_quotes_comments_and_params_runs_in_one_transaction() {
    let db = TestDb::new("sql_tricky").await;
    let pg = db.pg().await;
    let s = qi(&db.pg_schema);
    let script = format!(
        r#"-- leading comment; with a semicolon
CREATE TABLE {s}.notes (id int, body text);
INSERT INTO {s}.notes VALUES (1, 'semi;colon'), (2, 'it''s -- not a comment');
/* block ; comment /* nested ; */ still ; */
INSERT INTO {s}.notes VALUES (3, $$dollar ; quoted 'x'$$), (4, $tag$ $$ ; $tag$);
INSERT INTO {s}.notes VALUES (5, E'back\\slash\'s ;');
CREATE FUNCTION {s}.f() RETURNS int LANGUAGE plpgsql AS $fn$
BEGIN
  RETURN 1; -- a semicolon inside the body
END;
$fn$;
INSERT INTO {s}."a;b" SELECT 6, {s}.f()::text || ';';
INSERT INTO {s}.notes VALUES (7, '{{{{ day }}}}'), (8, '{{{{1,2}},{{3,4}}}}')  -- no trailing semicolon
"#
    );
    pg.batch_execute(&format!("CREATE TABLE {s}.\"a;b\" (id int, body text)"))
        .await
        .expect("a;b");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("script.sql");
    std::fs::write(&path, &script).expect("write");
    let path = path.display().to_string();
    let summary = run(sql_args(
        &["--script", &path],
        &[
            "--param",
            "day=2026-11-23",
            "--ledger",
            &format!("{s}.ledger"),
        ],
    ))
    .await
    .assert_ok();
    assert_eq!(summary["statements"], 7, "{summary}");
    assert_eq!(summary["transaction"], true);
    assert_eq!(summary["params"], serde_json::json!(["day"]));
    assert_eq!(summary["script"], path.as_str());
    assert_eq!(summary["script_sha256"].as_str().map(str::len), Some(64));
    let lines: Vec<u64> = summary["per_statement"]
        .as_array()
        .expect("per statement")
        .iter()
        .map(|p| p["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(lines, [2, 3, 5, 6, 7, 12, 13]);
    assert_eq!(
        texts(&pg, &format!("SELECT id, body FROM {s}.notes ORDER BY id")).await,
        [
            "(1,semi;colon)",
            "(2,\"it's -- not a comment\")",
            "(3,\"dollar ; quoted 'x'\")",
            "(4,\" $$ ; \")",
            "(5,\"back\\\\slash's ;\")",
            "(7,2026-11-23)",
            "(8,\"{{1,2},{3,4}}\")",
        ]
    );
    assert_eq!(
        texts(&pg, &format!("SELECT * FROM {s}.\"a;b\"")).await,
        ["(6,1;)"]
    );
    // The script's text never reaches the logs, even at debug level.
    let r = run({
        let mut a = sql_args(
            &["--command", "SELECT 'secret-ish text' AS x"],
            &["--no-ledger"],
        );
        a.insert(0, "-vv".into());
        a
    })
    .await;
    r.assert_ok();
    assert!(!r.stderr.contains("secret-ish"), "{}", r.stderr);
    // A placeholder without a value is an error naming it.
    let line = run(sql_args(&["--script", &path], &["--no-ledger"]))
        .await
        .assert_error("sql")
        .to_owned();
    assert!(line.contains("--param day=VALUE"), "{line}");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_failing_third_statement_rolls_back_and_names_it_with_its_sqlstate() {
    let db = TestDb::new("sql_fail").await;
    let pg = db.pg().await;
    let s = qi(&db.pg_schema);
    pg.batch_execute(&format!(
        "CREATE TABLE {s}.users (id int, email text); INSERT INTO {s}.users VALUES (1, 'A@X');"
    ))
    .await
    .expect("seed");
    let script = format!(
        "INSERT INTO {s}.users VALUES (2, 'B@X');\n\
         UPDATE {s}.users SET email = lower(email);\n\
         UPDATE {s}.users SET\n  nope = 1;\n\
         INSERT INTO {s}.users VALUES (4, 'D@X');\n"
    );
    let before = checksum(&pg, &format!("{s}.users")).await;
    let r = run(sql_args(
        &["--command", &script],
        &["--ledger", &format!("{s}.ledger")],
    ))
    .await;
    let line = r.assert_error("sql");
    assert!(
        unq(line).contains(&format!("statement 3 (UPDATE {s}.users SET …) failed")),
        "{line}"
    );
    assert!(line.contains("script line 3"), "{line}");
    assert!(line.ends_with("[SQLSTATE 42703]"), "{line}");
    assert_eq!(line.matches("SQLSTATE").count(), 1, "{line}");
    assert_eq!(checksum(&pg, &format!("{s}.users")).await, before);
    assert_eq!(count(&pg, &format!("{s}.ledger")).await, 0);

    // --no-transaction: statements 1 and 2 stay applied, and the error says so.
    let r = run(sql_args(&["--command", &script], &["--no-transaction"])).await;
    let line = r.assert_error("sql");
    assert!(line.contains("statement 3 ("), "{line}");
    assert!(
        line.contains("statements 1-2 were already committed"),
        "{line}"
    );
    assert_eq!(
        texts(&pg, &format!("SELECT * FROM {s}.users ORDER BY id")).await,
        ["(1,a@x)", "(2,b@x)"]
    );
    // Statements that cannot run in a transaction are refused up front, naming them.
    let r = run(sql_args(
        &[
            "--command",
            &format!("DELETE FROM {s}.users; TRUNCATE {s}.users"),
        ],
        &["--no-ledger"],
    ))
    .await;
    let line = r.assert_error("sql");
    assert!(line.contains("statement 2 (TRUNCATE"), "{line}");
    assert!(line.contains("--no-transaction"), "{line}");
    assert_eq!(count(&pg, &format!("{s}.users")).await, 2);
    // ... and run with --no-transaction.
    let summary = run(sql_args(
        &["--command", &format!("VACUUM {s}.users; SELECT 1")],
        &["--no-transaction"],
    ))
    .await
    .assert_ok();
    assert_eq!(summary["transaction"], false);
    assert_eq!(summary["ledger"], Value::Null);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_table_def_creates_the_table_and_analyze_runs_after_commit() {
    let db = TestDb::new("sql_tabledef").await;
    let pg = db.pg().await;
    let schema = format!("{}_made", db.pg_schema);
    let s = qi(&schema);
    let dir = tempfile::tempdir().expect("tempdir");
    let def = dir.path().join("made.events.sql");
    std::fs::write(
        &def,
        format!(
            "CREATE TABLE {s}.events (\n  id BIGINT NOT NULL ENCODE az64,\n  kind VARCHAR(20),\n  PRIMARY KEY (id)\n)\nSORTKEY (id);\n"
        ),
    )
    .expect("write def");
    let def = def.display().to_string();
    let script = format!(
        "INSERT INTO {s}.events SELECT g, 'k' || (g % {{{{ kinds }}}}) FROM generate_series(1, 500) g"
    );
    let r = run(sql_args(
        &["--command", &script],
        &[
            "--table-def",
            &def,
            "--analyze",
            "--param",
            "kinds=3",
            "--ledger",
            &format!("{}.ledger", qi(&db.pg_schema)),
        ],
    ))
    .await;
    let summary = r.assert_ok();
    assert_eq!(summary["created"], true);
    assert_eq!(summary["analyzed"], true);
    assert_eq!(summary["rows"], 500);
    assert_eq!(summary["table"], format!("{schema}.events"));
    let reltuples: f32 = pg
        .query_one(
            "SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)",
            &[&format!("{s}.events")],
        )
        .await
        .expect("reltuples")
        .get(0);
    assert!(
        (reltuples - 500.0).abs() < 0.5,
        "ANALYZE did not run: {reltuples}"
    );
    // Second run: the table exists and is not created again.
    let summary = run(sql_args(
        &[
            "--command",
            &format!("DELETE FROM {s}.events WHERE id > 400"),
        ],
        &["--table-def", &def, "--no-ledger"],
    ))
    .await
    .assert_ok();
    assert_eq!(summary["created"], false);
    assert_eq!(summary["rows"], 100);
    // Flags that make no sense together are usage errors (exit 2).
    for bad in [
        &[
            "sql",
            "--warehouse",
            "w",
            "--command",
            "select 1",
            "--analyze",
        ][..],
        &["sql", "--warehouse", "w"][..],
        &["sql", "--warehouse", "w", "--command", "x", "--script", "f"][..],
        &[
            "sql",
            "--warehouse",
            "w",
            "--command",
            "x",
            "--no-transaction",
            "--ledger",
            "a.b",
        ][..],
        &[
            "upsert",
            "--warehouse",
            "w",
            "--source",
            "a",
            "--destination",
            "b",
            "--ledger",
            "l",
            "--no-ledger",
        ][..],
    ] {
        let mut argv = vec!["ductwork"];
        argv.extend(bad);
        assert!(
            ductwork::cli::Cli::try_parse_from(&argv).is_err(),
            "{bad:?}"
        );
        let r = run(args(bad)).await;
        assert_eq!(r.code, 2, "{bad:?}: {}", r.stderr);
    }
    pg.batch_execute(&format!("DROP SCHEMA {s} CASCADE"))
        .await
        .expect("drop");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_script_from_s3_and_ledger_makes_retries_idempotent() {
    let db = TestDb::new("sql_s3").await;
    let pg = db.pg().await;
    let s = qi(&db.pg_schema);
    pg.batch_execute(&format!("CREATE TABLE {s}.t (id int)"))
        .await
        .expect("create");
    let prefix = common::test_prefix("sql-s3");
    let url = format!("{prefix}scripts/insert.sql");
    let (bucket, key) = common::split_s3_uri(&url);
    common::s3_client()
        .await
        .put_object()
        .bucket(&bucket)
        .key(&key)
        .body(
            format!("INSERT INTO {s}.t VALUES (1), (2);\nINSERT INTO {s}.t VALUES (3);")
                .into_bytes()
                .into(),
        )
        .send()
        .await
        .expect("put script");
    let ledger = format!("{s}.ledger");
    let go = |run_id: &str| {
        let mut a = args(&["--run-id", run_id]);
        a.extend(sql_args(&["--script", &url], &["--ledger", &ledger]));
        a
    };
    let first = run(go("sql-run-1")).await.assert_ok();
    assert_eq!(first["status"], "applied");
    assert_eq!(first["rows"], 3);
    let again = run(go("sql-run-1")).await.assert_ok();
    assert_eq!(again["status"], "already applied");
    assert_eq!(again["rows"], 3);
    assert_eq!(count(&pg, &format!("{s}.t")).await, 3);
    run(go("sql-run-2")).await.assert_ok();
    assert_eq!(count(&pg, &format!("{s}.t")).await, 6);
    // A missing object names the key.
    let r = run(sql_args(
        &["--script", &format!("{prefix}nope.sql")],
        &["--no-ledger"],
    ))
    .await;
    let line = r.assert_error("sql");
    assert!(line.contains("nope.sql"), "{line}");
    db.cleanup().await;
}

// ---- hostile identifiers --------------------------------------------------------------------

/// Names that must be quoted, never pasted (RELIABILITY §5, D18): quotes, backticks, `;`, `--`,
/// comment openers, placeholders, case pairs, unicode, 127-byte names. `schema` is the test's
/// schema, named in the canary-targeting ones.
fn hostile_corpus(schema: &str) -> Vec<String> {
    let mut v: Vec<String> = [
        "a\"b",
        "a`b",
        "x; drop table canary; --",
        "x\"; drop table canary; --",
        "x'; drop table canary; --",
        "x) ; drop table canary; --",
        "Mixed",
        "mixed",
        "MIXED",
        "CamelCase",
        "camelcase",
        "--",
        "-- comment",
        "/* c */",
        "*/",
        "/*",
        ";",
        ";;",
        "\"",
        "\"\"",
        "'",
        "''",
        "`",
        "\\",
        "\\\\N",
        "\\N",
        "$1",
        "$$",
        "$tag$",
        "{x}",
        "{{ p }}",
        "%s",
        "%",
        "a.b",
        ".",
        " ",
        " lead",
        "trail ",
        "select",
        "table",
        "drop",
        "user",
        "ORDER",
        "null",
        "NULL",
        "1digit",
        "naïve ünïcode",
        "😀",
        "שלום",
        "e\u{301}",
        "a\u{200d}b",
        "\u{feff}bom",
        "＂fullwidth＂",
        "a'b\"c`d;e--f/*g",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.push(format!("a\"; drop table \"{schema}\".canary; --"));
    v.push(format!("'); drop table \"{schema}\".\"canary\"; --"));
    v.push("a".repeat(127));
    v.push(format!("{}x", "é".repeat(63)));
    v.push("\"".repeat(127));
    let mut long = "x; drop table canary; --".to_owned();
    while long.len() < 127 {
        long.push('-');
    }
    v.push(long);
    v
}

/// `name` cut to `max` bytes on a character boundary.
fn cut(name: &str, max: usize) -> &str {
    let mut end = name.len().min(max);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_identifiers_survive_upsert_and_reload_with_zero_injections() {
    let db = TestDb::new("hostile").await;
    let pg = db.pg().await;
    let schema = db.pg_schema.clone();
    let s = qi(&schema);
    pg.batch_execute(&format!(
        "CREATE TABLE {s}.canary (v text); INSERT INTO {s}.canary VALUES ('alive');"
    ))
    .await
    .expect("canary");
    let corpus = hostile_corpus(&schema);
    assert!(corpus.len() >= 50, "only {} names", corpus.len());
    // Every name is distinct as PostgreSQL stores it (63 bytes).
    let stored: std::collections::HashSet<&str> = corpus.iter().map(|n| cut(n, 63)).collect();
    assert_eq!(
        stored.len(),
        corpus.len(),
        "corpus names collide after truncation"
    );
    let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let ledger = format!("{s}.ledger");
    let mut schemas = Vec::new();
    let mut injections = 0;
    let mut runs = 0;
    let n = corpus.len();
    for (i, h) in corpus.iter().enumerate() {
        // The staging schema holds the hostile name too, behind a unique prefix.
        let src_schema = cut(&format!("h{tag}{i:02}{h}"), 127).to_owned();
        schemas.push(src_schema.clone());
        let key = h.as_str();
        let other = &corpus[(i + n / 2) % n];
        let val = if cut(other, 63).to_lowercase() == cut(key, 63).to_lowercase() {
            "v"
        } else {
            other.as_str()
        };
        let (ss, t, k, v) = (qi(&src_schema), qi(h), qi(key), qi(val));
        pg.batch_execute(&format!(
            "CREATE SCHEMA {ss};
             CREATE TABLE {ss}.{t} ({k} int PRIMARY KEY, {v} text);
             INSERT INTO {ss}.{t} VALUES (1, 'one'), (2, NULL), (3, 'it''s; drop table canary; --');
             CREATE TABLE {s}.{t} ({v} text, {k} int PRIMARY KEY);
             INSERT INTO {s}.{t} ({k}, {v}) VALUES (1, 'old'), (4, 'keep');"
        ))
        .await
        .unwrap_or_else(|e| panic!("seeding {h:?}: {e}"));
        let source = format!("{ss}.{t}");
        let dest = format!("{s}.{t}");
        let dest_rows = format!("SELECT {k}, {v} FROM {dest} ORDER BY 1");
        let mut up = args(&[
            "--run-id",
            &format!("hu-{tag}-{i}"),
            "upsert",
            "--warehouse",
            &common::pg_url(),
            "--source",
            &source,
            "--destination",
            &dest,
            "--ledger",
            &ledger,
        ]);
        if i % 2 == 1 {
            up.extend(args(&["--pk", &k]));
        }
        if i % 3 == 2 {
            up.extend(args(&["--dedupe-order", &format!("{v} DESC")]));
        }
        if i % 4 == 3 {
            up.push("--merge".into());
        }
        let r = run(up).await;
        runs += 1;
        assert_eq!(r.code, 0, "upsert {h:?}: {}", r.stderr);
        assert_eq!(
            texts(&pg, &dest_rows).await,
            [
                "(1,one)",
                "(2,)",
                "(3,\"it's; drop table canary; --\")",
                "(4,keep)"
            ],
            "upsert {h:?}"
        );
        let r = run(args(&[
            "--run-id",
            &format!("hr-{tag}-{i}"),
            "reload",
            "--warehouse",
            &common::pg_url(),
            "--source",
            &source,
            "--destination",
            &dest,
            "--ledger",
            &ledger,
        ]))
        .await;
        runs += 1;
        assert_eq!(r.code, 0, "reload {h:?}: {}", r.stderr);
        assert_eq!(
            texts(&pg, &dest_rows).await,
            ["(1,one)", "(2,)", "(3,\"it's; drop table canary; --\")"],
            "reload {h:?}"
        );
        if texts(&pg, &format!("SELECT v FROM {s}.canary")).await != ["(alive)"] {
            injections += 1;
        }
    }
    // Column names equal but for case are refused (Redshift folds them), before any change.
    pg.batch_execute(&format!(
        "CREATE TABLE {s}.casepair (id int PRIMARY KEY, \"Mixed\" text, \"mixed\" text);
         CREATE TABLE {s}.casepair_stg (LIKE {s}.casepair);
         INSERT INTO {s}.casepair_stg VALUES (1, 'a', 'b');"
    ))
    .await
    .expect("case pair");
    let r = run(args(&[
        "upsert",
        "--warehouse",
        &common::pg_url(),
        "--source",
        &format!("{s}.casepair_stg"),
        "--destination",
        &format!("{s}.casepair"),
        "--no-ledger",
    ]))
    .await;
    let line = r.assert_error("upsert");
    assert!(line.contains("twice"), "{line}");
    assert_eq!(count(&pg, &format!("{s}.casepair")).await, 0);
    // Names that cannot be identifiers are rejected before any I/O.
    for bad in ["a\u{1}b", "tab\there", "new\nline", &"b".repeat(128), ""] {
        let r = run(args(&[
            "reload",
            "--warehouse",
            &common::pg_url(),
            "--source",
            &format!("{s}.{}", qi(bad)),
            "--destination",
            &format!("{s}.canary"),
            "--no-ledger",
        ]))
        .await;
        runs += 1;
        r.assert_error("reload");
    }
    // The canary survived, and no relation appeared or vanished in the test schema.
    assert_eq!(
        texts(&pg, &format!("SELECT v FROM {s}.canary")).await,
        ["(alive)"]
    );
    let tables: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relnamespace = to_regnamespace($1) AND relkind = 'r'",
            &[&qi(&schema)],
        )
        .await
        .expect("tables")
        .get(0);
    let expected_tables = i64::try_from(n).expect("n") + 4; // canary, ledger, casepair pair
    if tables != expected_tables {
        injections += 1;
    }
    let ledger_rows = count(&pg, &ledger).await;
    assert_eq!(ledger_rows, i64::try_from(2 * n).expect("n"));
    println!(
        "hostile-identifiers: names={n} runs={runs} injections={injections} canary=alive ledger_rows={ledger_rows}"
    );
    assert_eq!(injections, 0);
    for sch in schemas {
        pg.batch_execute(&format!("DROP SCHEMA {} CASCADE", qi(&sch)))
            .await
            .unwrap_or_else(|e| panic!("dropping {sch:?}: {e}"));
    }
    db.cleanup().await;
}

// ---- failure at every statement boundary -----------------------------------------------------

/// How a statement is held so that a failure can be injected while it runs.
#[derive(Clone, Debug)]
enum Hold {
    /// The blocker session holds `LOCK TABLE <table> IN ACCESS EXCLUSIVE MODE`.
    Lock(String),
    /// A gate point: the gate function, called by the staging view (per query kind), by
    /// triggers on the destination and the ledger, or by the ledger's deferred constraint
    /// trigger at COMMIT, takes the advisory lock the blocker holds.
    Gate(&'static str),
}

/// How the failure is injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// `pg_cancel_backend`: the statement fails with 57014.
    Cancel,
    /// `pg_terminate_backend`: the session dies (57P01).
    Terminate,
    /// SIGTERM to the ductwork process: exit 143, the dropped connection rolls back.
    Sigterm,
}

/// The rig: staging is a view whose key column calls the gate, production and the ledger have
/// gate triggers, and an advisory lock unique to this test holds a gated statement.
struct Rig {
    s: String,
    lock_key: i64,
}

impl Rig {
    async fn new(pg: &Client, schema: &str) -> Rig {
        let s = qi(schema);
        let lock_key = i64::from(rand::random::<u32>()) + 7_000_000_000;
        let ledger = ductwork::ident::TableName::new(Some(schema), "ledger").expect("name");
        let mut ddl = ductwork::warehouse::sql::ledger_ddl(&ledger).join(";\n");
        ddl.push(';');
        pg.batch_execute(&format!(
            "CREATE TABLE {s}.fault (point text);
             CREATE FUNCTION {s}.gate(p text) RETURNS void LANGUAGE plpgsql AS $f$
             BEGIN
               IF EXISTS (SELECT 1 FROM {s}.fault WHERE point = p) THEN
                 PERFORM pg_advisory_xact_lock({lock_key});
               END IF;
             END $f$;
             CREATE FUNCTION {s}.gate_query(v int) RETURNS int LANGUAGE plpgsql VOLATILE AS $f$
             DECLARE q text := current_query();
             BEGIN
               PERFORM {s}.gate(CASE
                 WHEN q LIKE '%IS NULL%' THEN 'null-check'
                 WHEN q LIKE '%ductwork_rows%' THEN 'dup-check'
                 WHEN q LIKE 'INSERT INTO \"ductwork_upsert_tmp\"%' THEN 'insert-tmp'
                 WHEN q LIKE 'SELECT count(*) FROM%' THEN 'count'
                 ELSE 'other' END);
               RETURN v;
             END $f$;
             CREATE FUNCTION {s}.gate_trg() RETURNS trigger LANGUAGE plpgsql AS $f$
             BEGIN PERFORM {s}.gate(TG_ARGV[0]); RETURN NULL; END $f$;
             CREATE TABLE {s}.stg_base (id int, region text, email text, n int);
             INSERT INTO {s}.stg_base VALUES (1, 'eu', 'a1', 10), (2, 'eu', NULL, 20),
                 (3, 'us', 'c3', NULL), (5, 'eu', 'e5', 50);
             CREATE VIEW {s}.stg AS
                 SELECT {s}.gate_query(id) AS id, region, email, n FROM {s}.stg_base;
             CREATE TABLE {s}.prod (id int, region text, email text, n int, PRIMARY KEY (id, region));
             INSERT INTO {s}.prod VALUES (1, 'eu', 'old1', 1), (2, 'us', 'keep2', 2), (4, 'eu', 'keep4', 4);
             CREATE TABLE {s}.original AS SELECT * FROM {s}.prod;
             CREATE TABLE {s}.expected_upsert (LIKE {s}.prod);
             INSERT INTO {s}.expected_upsert VALUES (1, 'eu', 'a1', 10), (2, 'eu', NULL, 20),
                 (2, 'us', 'keep2', 2), (3, 'us', 'c3', NULL), (4, 'eu', 'keep4', 4), (5, 'eu', 'e5', 50);
             CREATE TABLE {s}.expected_reload AS SELECT * FROM {s}.stg_base;
             CREATE TRIGGER g_delete BEFORE DELETE ON {s}.prod
                 FOR EACH STATEMENT EXECUTE FUNCTION {s}.gate_trg('delete');
             CREATE TRIGGER g_insert BEFORE INSERT ON {s}.prod
                 FOR EACH STATEMENT EXECUTE FUNCTION {s}.gate_trg('insert');
             CREATE TRIGGER g_after_insert AFTER INSERT ON {s}.prod
                 FOR EACH STATEMENT EXECUTE FUNCTION {s}.gate_trg('after-insert');
             {ddl}
             CREATE TRIGGER g_ledger BEFORE INSERT ON {s}.ledger
                 FOR EACH STATEMENT EXECUTE FUNCTION {s}.gate_trg('ledger-insert');
             CREATE CONSTRAINT TRIGGER g_commit AFTER INSERT ON {s}.ledger
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {s}.gate_trg('commit');"
        ))
        .await
        .expect("rig");
        Rig { s, lock_key }
    }

    /// `"schema"."name"`: as the statements render it, and usable as a CLI argument.
    fn table(&self, name: &str) -> String {
        format!("{}.{}", self.s, qi(name))
    }

    /// Runs every (fault, point) pair; after each, production equals its checksum from before
    /// and the ledger holds no row for the run, except that a SIGTERM while COMMIT is in flight
    /// may have committed (the server already had the COMMIT), and then the ledger row is there
    /// with the expected table. Returns the number of injections.
    async fn suite(
        &self,
        pg: &Client,
        step: &str,
        extra: &[&str],
        points: &[(&str, Hold, String)],
        expected: &str,
    ) -> usize {
        let run_id = format!("b-{:08x}", rand::random::<u32>());
        let app = format!("ductwork:{run_id}:{step}");
        let mut argv = args(&[
            "--run-id",
            &run_id,
            step,
            "--warehouse",
            &common::pg_url(),
            "--source",
            &self.table("stg"),
            "--destination",
            &self.table("prod"),
            "--ledger",
            &self.table("ledger"),
        ]);
        argv.extend(args(extra));
        let before = checksum(pg, &self.table("prod")).await;
        let after = checksum(pg, &self.table(expected)).await;
        assert_ne!(before, after);
        let mut injected = 0;
        for fault in [Fault::Cancel, Fault::Terminate, Fault::Sigterm] {
            for (name, hold, prefix) in points {
                let what = format!("{step} {fault:?} at {name}");
                let blocker = common::pg_connect(&common::pg_url()).await;
                blocker.batch_execute("BEGIN").await.expect("BEGIN");
                match hold {
                    Hold::Lock(t) => blocker
                        .batch_execute(&format!("LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE"))
                        .await
                        .expect("LOCK"),
                    Hold::Gate(p) => {
                        pg.execute(
                            &format!("INSERT INTO {} VALUES ($1)", self.table("fault")),
                            &[p],
                        )
                        .await
                        .expect("fault row");
                        blocker
                            .batch_execute(&format!(
                                "SELECT pg_advisory_xact_lock({})",
                                self.lock_key
                            ))
                            .await
                            .expect("advisory lock");
                    }
                }
                let mut child = start(&argv);
                let wait_event = match hold {
                    Hold::Lock(_) => "relation",
                    Hold::Gate(_) => "advisory",
                };
                let (pid, _) = held_backend(pg, &app, wait_event, prefix, &mut child, &what).await;
                match fault {
                    Fault::Cancel => {
                        pg.execute("SELECT pg_cancel_backend($1)", &[&pid])
                            .await
                            .expect("cancel");
                    }
                    Fault::Terminate => {
                        pg.execute("SELECT pg_terminate_backend($1)", &[&pid])
                            .await
                            .expect("terminate");
                    }
                    Fault::Sigterm => sigterm(&child),
                }
                let r = finish(child).await;
                match fault {
                    Fault::Sigterm => {
                        assert_eq!(r.code, 143, "{what}: {}", r.stderr);
                        assert!(
                            r.last_stderr_line().contains("interrupted by SIGTERM"),
                            "{what}: {}",
                            r.stderr
                        );
                    }
                    Fault::Cancel => {
                        let line = r.assert_error(step);
                        assert!(line.contains("[SQLSTATE 57014]"), "{what}: {line}");
                    }
                    Fault::Terminate => {
                        r.assert_error(step);
                    }
                }
                blocker.batch_execute("ROLLBACK").await.expect("ROLLBACK");
                drop(blocker);
                pg.batch_execute(&format!("DELETE FROM {}", self.table("fault")))
                    .await
                    .expect("clear fault");
                backend_gone(pg, &app, &what).await;
                injected += 1;
                let now = checksum(pg, &self.table("prod")).await;
                let recorded = ledger_rows(pg, &self.table("ledger"), &run_id).await;
                if fault == Fault::Sigterm && *name == "commit" && now == after {
                    // The COMMIT was already on the server: applied, and the ledger says so.
                    assert_eq!(recorded, 1, "{what}: applied without a ledger row");
                    eprintln!("{what}: the in-flight COMMIT completed on the server; the ledger records it");
                } else {
                    assert_eq!(now, before, "{what}: production changed");
                    assert_eq!(recorded, 0, "{what}: ledger row without the change");
                }
            }
        }
        // A clean re-run with the same run id gives the expected table, applied once.
        let r = finish(start(&argv)).await;
        let summary = r.assert_ok();
        assert!(
            summary["status"] == "applied" || summary["status"] == "already applied",
            "{summary}"
        );
        assert_eq!(checksum(pg, &self.table("prod")).await, after);
        assert_eq!(ledger_rows(pg, &self.table("ledger"), &run_id).await, 1);
        let again = finish(start(&argv)).await.assert_ok();
        assert_eq!(again["status"], "already applied");
        assert_eq!(checksum(pg, &self.table("prod")).await, after);
        injected
    }
}

/// Waits until the step's backend waits on a lock of kind `wait_event` (`advisory` for a gate,
/// `relation` for a table lock) in a statement starting with `prefix`; returns its pid and
/// statement. A backend held anywhere else (a transient lock wait) is polled past; a backend
/// held in another statement fails the test with that statement after 15 s.
async fn held_backend(
    pg: &Client,
    app: &str,
    wait_event: &str,
    prefix: &str,
    child: &mut Child,
    what: &str,
) -> (i32, String) {
    let mut seen = None;
    for _ in 0..600 {
        let rows = pg
            .query(
                "SELECT pid, query FROM pg_stat_activity \
                 WHERE application_name = $1 AND wait_event_type = 'Lock' AND wait_event = $2",
                &[&app, &wait_event],
            )
            .await
            .expect("pg_stat_activity");
        if let Some(r) = rows.first() {
            let query: String = r.get(1);
            if query.starts_with(prefix) {
                return (r.get(0), query);
            }
            seen = Some(query);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read as _;
                let _ = e.read_to_string(&mut err);
            }
            panic!("{what}: ductwork exited ({status}) before reaching the held statement:\n{err}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    panic!("{what}: no statement starting with {prefix:?} was held; last held: {seen:?}");
}

/// Waits until no backend of the step's session is left (the server rolled it back).
async fn backend_gone(pg: &Client, app: &str, what: &str) {
    for _ in 0..600 {
        let n: i64 = pg
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if n == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: the step's backend did not end");
}

async fn ledger_rows(pg: &Client, ledger: &str, run_id: &str) -> i64 {
    pg.query_one(
        &format!("SELECT count(*) FROM {ledger} WHERE run_id = $1"),
        &[&run_id],
    )
    .await
    .expect("ledger rows")
    .get(0)
}

fn upsert_points(rig: &Rig, merge: bool) -> Vec<(&'static str, Hold, String)> {
    let dest = format!("INSERT INTO {}", rig.table("prod"));
    let (apply, after) = if merge {
        ("merge", "after merge (before DROP of the temp table)")
    } else {
        ("insert", "after insert (before DROP of the temp table)")
    };
    let apply_prefix = if merge {
        format!("MERGE INTO {}", rig.table("prod"))
    } else {
        dest
    };
    let mut points = vec![
        (
            "ledger lookup",
            Hold::Lock(rig.table("ledger")),
            "SELECT \"rows\"".to_owned(),
        ),
        (
            "null-key check",
            Hold::Gate("null-check"),
            "SELECT \"id\", \"region\"\nFROM".to_owned(),
        ),
        (
            "duplicate-key check",
            Hold::Gate("dup-check"),
            "SELECT \"id\", \"region\", count(*)".to_owned(),
        ),
        (
            "temp table",
            Hold::Lock(rig.table("prod")),
            "CREATE TEMP TABLE".to_owned(),
        ),
        (
            "staging into temp",
            Hold::Gate("insert-tmp"),
            "INSERT INTO \"ductwork_upsert_tmp\"".to_owned(),
        ),
    ];
    if !merge {
        points.push((
            "delete",
            Hold::Gate("delete"),
            format!("DELETE FROM {}", rig.table("prod")),
        ));
    }
    points.push((apply, Hold::Gate("insert"), apply_prefix.clone()));
    points.push((after, Hold::Gate("after-insert"), apply_prefix));
    points.push((
        "ledger insert",
        Hold::Gate("ledger-insert"),
        format!("INSERT INTO {}", rig.table("ledger")),
    ));
    points.push(("commit", Hold::Gate("commit"), "COMMIT".to_owned()));
    points
}

#[tokio::test(flavor = "multi_thread")]
async fn upsert_failure_at_every_statement_boundary_leaves_production_unchanged() {
    let db = TestDb::new("up_boundaries").await;
    let pg = db.pg().await;
    let rig = Rig::new(&pg, &db.pg_schema).await;
    let points = upsert_points(&rig, false);
    let n = rig
        .suite(&pg, "upsert", &[], &points, "expected_upsert")
        .await;
    println!(
        "upsert-boundaries: points={} injected={n} partial_txns=0",
        points.len()
    );
    assert_eq!(n, points.len() * 3);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upsert_merge_failure_at_every_statement_boundary_leaves_production_unchanged() {
    let db = TestDb::new("up_merge_boundaries").await;
    let pg = db.pg().await;
    let rig = Rig::new(&pg, &db.pg_schema).await;
    let points = upsert_points(&rig, true);
    let n = rig
        .suite(&pg, "upsert", &["--merge"], &points, "expected_upsert")
        .await;
    println!(
        "upsert-merge-boundaries: points={} injected={n} partial_txns=0",
        points.len()
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_failure_at_every_statement_boundary_leaves_production_unchanged() {
    let db = TestDb::new("reload_boundaries").await;
    let pg = db.pg().await;
    let rig = Rig::new(&pg, &db.pg_schema).await;
    let insert = format!("INSERT INTO {}", rig.table("prod"));
    let points = vec![
        (
            "ledger lookup",
            Hold::Lock(rig.table("ledger")),
            "SELECT \"rows\"".to_owned(),
        ),
        (
            "source count",
            Hold::Gate("count"),
            format!("SELECT count(*) FROM {}", rig.table("stg")),
        ),
        (
            "delete",
            Hold::Gate("delete"),
            format!("DELETE FROM {}", rig.table("prod")),
        ),
        ("insert", Hold::Gate("insert"), insert.clone()),
        ("after insert", Hold::Gate("after-insert"), insert),
        (
            "ledger insert",
            Hold::Gate("ledger-insert"),
            format!("INSERT INTO {}", rig.table("ledger")),
        ),
        ("commit", Hold::Gate("commit"), "COMMIT".to_owned()),
    ];
    let n = rig
        .suite(&pg, "reload", &[], &points, "expected_reload")
        .await;
    println!(
        "reload-boundaries: points={} injected={n} partial_txns=0",
        points.len()
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_the_transaction_exits_143_and_rolls_back() {
    let db = TestDb::new("sigterm").await;
    let pg = db.pg().await;
    let rig = Rig::new(&pg, &db.pg_schema).await;
    let before = checksum(&pg, &rig.table("prod")).await;
    // Hold the upsert right after its DELETE ran (inside the INSERT), then SIGTERM it.
    pg.batch_execute(&format!(
        "INSERT INTO {} VALUES ('insert')",
        rig.table("fault")
    ))
    .await
    .expect("fault");
    let blocker = common::pg_connect(&common::pg_url()).await;
    blocker
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({})",
            rig.lock_key
        ))
        .await
        .expect("lock");
    let run_id = "sigterm-1";
    let mut child = start(&args(&[
        "--run-id",
        run_id,
        "upsert",
        "--warehouse",
        &common::pg_url(),
        "--source",
        &rig.table("stg"),
        "--destination",
        &rig.table("prod"),
        "--no-ledger",
    ]));
    let app = format!("ductwork:{run_id}:upsert");
    let insert = format!("INSERT INTO {}", rig.table("prod"));
    held_backend(&pg, &app, "advisory", &insert, &mut child, "sigterm").await;
    // The DELETE already ran in the held transaction: its rows are gone for that session only.
    sigterm(&child);
    let started = std::time::Instant::now();
    let r = finish(child).await;
    assert_eq!(r.code, 143, "{}", r.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "slow exit: {:?}",
        started.elapsed()
    );
    // lib.rs drops the step future on a signal, so the line names no step (step=ductwork).
    let line = r.last_stderr_line();
    assert!(line.starts_with("ductwork: error: step="), "{}", r.stderr);
    assert!(line.contains("cause=\"interrupted by SIGTERM\""), "{line}");
    assert!(r.stdout.trim().is_empty());
    blocker.batch_execute("ROLLBACK").await.expect("ROLLBACK");
    backend_gone(&pg, &app, "sigterm").await;
    assert_eq!(checksum(&pg, &rig.table("prod")).await, before);
    db.cleanup().await;
}
