//! Fault suite, network and S3 half (RELIABILITY §3): every fault is produced by a real
//! component — a killed or cancelled backend, the TCP fault proxy between ductwork and
//! PostgreSQL/MariaDB, the HTTP fault layer in front of the S3 emulator — with several seeded
//! timings each, and every case ends in the shared oracle: exit code and error line, no
//! object outside a manifest, no open multipart upload (after the next run where the contract
//! says so), warehouse checksum equal to before or expected-after, no canary secret. Each test
//! prints one `fault-case:` line (see `common::faults::report`).

mod common;

use std::time::{Duration, Instant};

use common::faultproxy::{Action, Dir, FaultProxy, Rule};
use common::faults::{self, report, Losses};
use common::httpfault::{HAction, HRule, HttpFault, LogEntry};
use common::{args, run_with_env, test_prefix, Run, TestDb};
use mysql_async::prelude::Queryable as _;
use serde_json::Value;

// ---- helpers ---------------------------------------------------------------------------------

fn rid(tag: &str) -> String {
    format!("{tag}-{:08x}", rand::random::<u32>())
}

/// Runs the binary with extra env; returns the run and its wall time.
async fn dw(a: Vec<String>, env: Vec<(String, String)>) -> (Run, Duration) {
    let t = Instant::now();
    let r = run_with_env(a, env).await;
    (r, t.elapsed())
}

/// Extra environment for one run.
type Env = Vec<(String, String)>;

fn env_s3(endpoint: &str) -> Env {
    vec![("DUCTWORK_S3_ENDPOINT".into(), endpoint.into())]
}

/// Exit 2, nothing on stdout, the invariant-7 line for `step`, and (when given) one of
/// `any` in it. Returns the line.
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

/// Multiset difference: (rows of `expected` missing from `got`, extra rows in `got`).
fn diff(expected: &[String], got: &[String]) -> (u64, u64) {
    let mut e = expected.to_vec();
    let mut g = got.to_vec();
    e.sort();
    g.sort();
    let (mut i, mut j, mut lost, mut dup) = (0, 0, 0u64, 0u64);
    while i < e.len() || j < g.len() {
        match (e.get(i), g.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                lost += 1;
                i += 1;
            }
            (Some(_), None) => {
                lost += 1;
                i += 1;
            }
            _ => {
                dup += 1;
                j += 1;
            }
        }
    }
    (lost, dup)
}

/// Every record of the extract at `prefix`, as TAB-joined text (`\N` for NULL), read through
/// its manifest; checks each entry's content length on the way.
async fn extract_lines(prefix: &str) -> Vec<String> {
    let manifest: Value =
        serde_json::from_slice(&common::get_object(&format!("{prefix}manifest.json")).await)
            .expect("manifest");
    let mut out = Vec::new();
    for e in manifest["entries"].as_array().expect("entries") {
        let url = e["url"].as_str().expect("url");
        let gz = common::get_object(url).await;
        assert_eq!(
            e["meta"]["content_length"].as_u64(),
            Some(gz.len() as u64),
            "{url}"
        );
        let raw = common::gunzip(&gz);
        for rec in ductwork::tsv::decode_all(&raw).unwrap_or_else(|e| panic!("{url}: {e}")) {
            let cells: Vec<String> = rec
                .iter()
                .map(|c| {
                    c.as_ref().map_or("\\N".to_string(), |b| {
                        String::from_utf8(b.clone()).expect("utf8")
                    })
                })
                .collect();
            out.push(cells.join("\t"));
        }
    }
    out
}

/// Rows of a query whose columns are all text, TAB-joined (`\N` for NULL).
async fn pg_lines(pg: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    pg.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    r.get::<_, Option<String>>(i)
                        .unwrap_or_else(|| "\\N".into())
                })
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect()
}

/// The extract oracle after a run: if it succeeded, its rows equal `expected`; either way no
/// object outside a manifest and no open upload under the prefix.
async fn extract_oracle(r: &Run, prefix: &str, expected: &[String]) -> Losses {
    let mut l = Losses::default();
    let keys = common::list_keys(prefix).await;
    let has_manifest = keys.iter().any(|k| k.ends_with("/manifest.json"));
    if r.code == 0 {
        assert!(has_manifest, "exit 0 without a manifest: {keys:?}");
        let got = extract_lines(prefix).await;
        let (lost, dup) = diff(expected, &got);
        l.lost = lost;
        l.dup = dup;
    } else {
        assert!(!has_manifest, "a failed run left a manifest: {keys:?}");
    }
    l.partial_objects = faults::partial_objects(prefix).await;
    l.open_mpus = faults::open_mpus(prefix).await;
    l
}

/// A source table `src(id int, h text)` of `n` rows of md5 text (~130 bytes a row, ~70
/// gzipped) and a
/// function `slow(i int, secs float8)` that sleeps and returns `i`, in the test's schema.
/// Blocks are ~1 MiB, so parts of `--part-size 64KiB` rotate every ~7,500 rows.
async fn seed_src(db: &TestDb, n: u32) -> tokio_postgres::Client {
    let pg = db.pg().await;
    pg.batch_execute(&format!(
        "CREATE TABLE src AS SELECT g AS id,
                 md5(g::text) || md5((-g)::text) || md5((g * 7)::text) || md5((g * 13)::text) AS h
             FROM generate_series(1, {n}) g;
         CREATE FUNCTION slow(i int, secs float8) RETURNS int LANGUAGE plpgsql AS
             $$ BEGIN PERFORM pg_sleep(secs); RETURN i; END $$;"
    ))
    .await
    .expect("seed src");
    pg
}

async fn src_lines(pg: &tokio_postgres::Client, db: &TestDb) -> Vec<String> {
    pg_lines(
        pg,
        &format!("SELECT id::text, h FROM {}", db.pg_table("src")),
    )
    .await
}

/// Sleeps 0.3 ms a row.
fn slow_sql(db: &TestDb) -> String {
    format!(
        "SELECT {}(id, 0.0003) AS id, h FROM {}",
        db.pg_table("slow"),
        db.pg_table("src")
    )
}

fn extract_args(
    source: &str,
    sql: &str,
    prefix: &str,
    run_id: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut a = args(&[
        "extract", "--source", source, "--sql", sql, "--to", prefix, "--run-id", run_id,
    ]);
    a.extend(args(extra));
    a
}

/// Terminates (or cancels) every backend of `run_id`; returns how many.
async fn signal_backends(pg: &tokio_postgres::Client, run_id: &str, terminate: bool) -> i64 {
    let f = if terminate {
        "pg_terminate_backend"
    } else {
        "pg_cancel_backend"
    };
    pg.query_one(
        &format!(
            "SELECT count({f}(pid))::bigint FROM pg_stat_activity
             WHERE application_name LIKE $1 AND pid <> pg_backend_pid()"
        ),
        &[&format!("ductwork:{run_id}:%")],
    )
    .await
    .expect("signal backends")
    .get(0)
}

// ---- F01: PostgreSQL backend terminated mid-COPY ----------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn f01_pg_backend_terminated_mid_copy() {
    let db = TestDb::new("f01").await;
    let pg = seed_src(&db, 4000).await;
    let expected = src_lines(&pg, &db).await;
    let sql = slow_sql(&db);
    let mut total = Losses::default();
    let mut injected = 0;
    for k in [6_000u64, 40_000, 120_000, 250_000, 400_000] {
        let (proxy, url) = FaultProxy::for_url(
            &common::pg_url(),
            vec![Rule::all(Dir::Down, Action::SignalAfter(k))],
        )
        .await;
        let run_id = rid("f01");
        let prefix = test_prefix("f01");
        let a = extract_args(&url, &sql, &prefix, &run_id, &["--part-size", "64KiB"]);
        let killer = async {
            assert!(proxy.wait_fired(Duration::from_secs(60)).await, "k={k}");
            signal_backends(&pg, &run_id, true).await
        };
        let ((r, took), killed) = tokio::join!(dw(a, vec![]), killer);
        assert!(killed > 0, "k={k}: no backend to kill");
        injected += 1;
        if r.code != 0 {
            assert_fails(&r, "extract", &["[SQLSTATE 57P01]"]);
        }
        assert!(took < Duration::from_secs(60), "k={k}: took {took:?}");
        add(&mut total, extract_oracle(&r, &prefix, &expected).await);
    }
    finish("F01", "pg-terminate-mid-copy", injected, &total);
    db.cleanup().await;
}

// ---- F02: PostgreSQL connection reset or stalled ----------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn f02_pg_connection_reset_mid_copy() {
    let db = TestDb::new("f02r").await;
    let pg = seed_src(&db, 4000).await;
    let expected = src_lines(&pg, &db).await;
    let sql = format!("SELECT id, h FROM {}", db.pg_table("src"));
    let mut total = Losses::default();
    let mut injected = 0;
    for k in [3_001u64, 50_000, 150_007, 300_000, 450_011] {
        let (proxy, url) = FaultProxy::for_url(
            &common::pg_url(),
            vec![Rule::all(Dir::Down, Action::ResetAfter(k))],
        )
        .await;
        let prefix = test_prefix("f02r");
        let a = extract_args(&url, &sql, &prefix, &rid("f02r"), &["--part-size", "64KiB"]);
        let (r, _) = dw(a, vec![]).await;
        assert!(proxy.fired() > 0, "k={k}: the reset never fired");
        injected += 1;
        if r.code != 0 {
            assert_fails(&r, "extract", &[]);
        }
        add(&mut total, extract_oracle(&r, &prefix, &expected).await);
    }
    finish("F02", "pg-rst-mid-copy", injected, &total);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn f02b_pg_half_open_stall_ends_by_read_timeout() {
    let db = TestDb::new("f02s").await;
    let pg = seed_src(&db, 4000).await;
    let expected = src_lines(&pg, &db).await;
    let sql = format!("SELECT id, h FROM {}", db.pg_table("src"));
    // Five stalls at once: each takes the 2 s read timeout.
    let cases = [20_000u64, 90_001, 170_000, 260_003, 380_000].map(|k| {
        let sql = sql.clone();
        async move {
            let (proxy, url) = FaultProxy::for_url(
                &common::pg_url(),
                vec![Rule::all(Dir::Down, Action::StallAfter(k))],
            )
            .await;
            let prefix = test_prefix("f02s");
            let a = extract_args(
                &url,
                &sql,
                &prefix,
                &rid("f02s"),
                &["--part-size", "64KiB", "--read-timeout", "2s"],
            );
            let (r, took) = dw(a, vec![]).await;
            assert!(proxy.fired() > 0, "k={k}: the stall never fired");
            (k, prefix, r, took, proxy)
        }
    });
    let mut total = Losses::default();
    let mut injected = 0;
    for (k, prefix, r, took, proxy) in futures::future::join_all(cases).await {
        injected += 1;
        assert_fails(&r, "extract", &["timed out", "timeout", "no row"]);
        assert!(took < Duration::from_secs(30), "k={k}: took {took:?}");
        add(&mut total, extract_oracle(&r, &prefix, &expected).await);
        drop(proxy);
    }
    finish("F02b", "pg-stall-read-timeout", injected, &total);
    db.cleanup().await;
}

// ---- F03: PostgreSQL cancel and statement timeout ---------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn f03_pg_cancel_and_statement_timeout() {
    let db = TestDb::new("f03").await;
    let pg = seed_src(&db, 4000).await;
    let expected = src_lines(&pg, &db).await;
    let sql = slow_sql(&db);
    let mut total = Losses::default();
    let mut injected = 0;
    // pg_cancel_backend once k bytes have passed.
    for k in [10_000u64, 100_000, 200_000] {
        let (proxy, url) = FaultProxy::for_url(
            &common::pg_url(),
            vec![Rule::all(Dir::Down, Action::SignalAfter(k))],
        )
        .await;
        let run_id = rid("f03c");
        let prefix = test_prefix("f03c");
        let a = extract_args(&url, &sql, &prefix, &run_id, &["--part-size", "64KiB"]);
        let canceller = async {
            assert!(proxy.wait_fired(Duration::from_secs(60)).await, "k={k}");
            signal_backends(&pg, &run_id, false).await
        };
        let ((r, _), n) = tokio::join!(dw(a, vec![]), canceller);
        assert!(n > 0, "k={k}: no backend to cancel");
        injected += 1;
        if r.code != 0 {
            assert_fails(&r, "extract", &["[SQLSTATE 57014]"]);
        }
        add(&mut total, extract_oracle(&r, &prefix, &expected).await);
    }
    // statement_timeout, set on a role of the test's own.
    let role = format!("f03_{:08x}", rand::random::<u32>());
    pg.batch_execute(&format!("CREATE ROLE {role} LOGIN SUPERUSER"))
        .await
        .expect("role");
    let url = format!("postgres://{role}@127.0.0.1:5432/test");
    for ms in [300u32, 700, 1100] {
        pg.batch_execute(&format!(
            "ALTER ROLE {role} SET statement_timeout = '{ms}ms'"
        ))
        .await
        .expect("statement_timeout");
        let prefix = test_prefix("f03t");
        let a = extract_args(&url, &sql, &prefix, &rid("f03t"), &["--part-size", "64KiB"]);
        let (r, _) = dw(a, vec![]).await;
        injected += 1;
        let line = assert_fails(&r, "extract", &["[SQLSTATE 57014]"]);
        assert!(line.contains("statement timeout"), "{line}");
        add(&mut total, extract_oracle(&r, &prefix, &expected).await);
    }
    pg.batch_execute(&format!("DROP ROLE {role}"))
        .await
        .expect("drop role");
    finish("F03", "pg-cancel-statement-timeout", injected, &total);
    db.cleanup().await;
}

// ---- F05: source down, bad password ------------------------------------------------------------

fn write_config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ductwork.toml");
    std::fs::write(&path, text).expect("config");
    let p = path.to_str().expect("utf8").to_string();
    (dir, p)
}

#[tokio::test(flavor = "multi_thread")]
async fn f05_source_down_and_bad_password() {
    let canary = format!("canary-Pw-{:08x}", rand::random::<u32>());
    let user = format!("f05_{:08x}", rand::random::<u32>());
    let mut my = common::my_connect(&common::mysql_url()).await;
    for host in ["%", "localhost", "127.0.0.1"] {
        my.query_drop(format!(
            "CREATE USER '{user}'@'{host}' IDENTIFIED BY 'the-right-one'"
        ))
        .await
        .expect("create user");
    }
    let (_d1, cfg_env) = write_config(&format!(
        "[connections.src]\nurl = \"mysql://{user}@127.0.0.1:3306/test\"\npassword_env = \"SRC_PW\"\n"
    ));
    let (_d2, cfg_pg) = write_config(
        "[connections.src]\nurl = \"postgres://f05_nobody@127.0.0.1:5432/test\"\npassword_env = \"SRC_PW\"\n",
    );
    let pw_env = vec![("SRC_PW".to_string(), canary.clone())];
    // (name, args, env, expected codes, time bound)
    type Case<'a> = (&'a str, Vec<String>, Env, Vec<&'a str>, u64);
    let cases: Vec<Case> = vec![
        (
            "pg-wrong-port",
            args(&[
                "extract",
                "--source",
                "postgres://postgres@127.0.0.1:1/test",
                "--sql",
                "SELECT 1",
            ]),
            vec![],
            vec!["refused"],
            60,
        ),
        (
            "mysql-wrong-port",
            args(&[
                "extract",
                "--source",
                "mysql://root@127.0.0.1:1/test",
                "--sql",
                "SELECT 1",
            ]),
            vec![],
            vec!["refused"],
            60,
        ),
        (
            "mysql-wrong-password-env",
            args(&[
                "--config", &cfg_env, "extract", "--source", "src", "--sql", "SELECT 1", "-v",
            ]),
            pw_env.clone(),
            vec!["[MySQL 1045"],
            10,
        ),
        (
            "mysql-wrong-password-url",
            args(&[
                "extract",
                "--source",
                &format!("mysql://{user}:{canary}@127.0.0.1:3306/test"),
                "--sql",
                "SELECT 1",
                "-v",
            ]),
            vec![],
            vec!["[MySQL 1045"],
            10,
        ),
        (
            "pg-unknown-role-env",
            args(&[
                "--config", &cfg_pg, "extract", "--source", "src", "--sql", "SELECT 1", "-v",
            ]),
            pw_env.clone(),
            vec!["[SQLSTATE 28000]", "[SQLSTATE 28P01]"],
            10,
        ),
    ];
    let mut total = Losses::default();
    let mut injected = 0;
    for (name, mut a, env, codes, bound) in cases {
        let prefix = test_prefix("f05");
        a.extend(args(&["--to", &prefix, "--run-id", &rid("f05")]));
        let (r, took) = dw(a, env).await;
        injected += 1;
        let line = assert_fails(&r, "extract", &codes);
        assert!(
            took < Duration::from_secs(bound),
            "{name}: took {took:?}: {line}"
        );
        let mut l = Losses {
            canary_hits: faults::canary_hits(&r, &canary),
            ..Losses::default()
        };
        l.partial_objects = faults::partial_objects(&prefix).await;
        l.open_mpus = faults::open_mpus(&prefix).await;
        add(&mut total, l);
    }
    for host in ["%", "localhost", "127.0.0.1"] {
        my.query_drop(format!("DROP USER '{user}'@'{host}'"))
            .await
            .expect("drop user");
    }
    finish("F05", "source-down-bad-password", injected, &total);
}

// ---- F06 and F08: MariaDB connection killed, packet cut ---------------------------------------

/// The expected rows of `my_sql(false)`.
async fn my_expected(rows: u32) -> Vec<String> {
    let mut my = common::my_connect(&common::mysql_url()).await;
    let got: Vec<(String, String)> = my
        .query(format!(
            "SELECT CAST(seq AS CHAR), repeat(md5(seq), 4) FROM seq_1_to_{rows}"
        ))
        .await
        .expect("expected rows");
    got.into_iter().map(|(a, b)| format!("{a}\t{b}")).collect()
}

fn my_sql(marker: &str, rows: u32, slow: bool) -> String {
    if slow {
        format!(
            "SELECT seq AS {marker}, repeat(md5(seq), 4) AS h FROM seq_1_to_{rows} WHERE SLEEP(0.0005) = 0"
        )
    } else {
        format!("SELECT seq AS {marker}, repeat(md5(seq), 4) AS h FROM seq_1_to_{rows}")
    }
}

async fn my_connection_of(marker: &str) -> Option<u64> {
    let mut my = common::my_connect(&common::mysql_url()).await;
    let ids: Vec<u64> = my
        .exec(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE ? AND INFO NOT LIKE '%PROCESSLIST%'",
            (format!("%{marker}%"),),
        )
        .await
        .expect("processlist");
    ids.first().copied()
}

#[tokio::test(flavor = "multi_thread")]
async fn f06_mysql_kill_and_kill_query() {
    let expected = my_expected(3000).await;
    let mut total = Losses::default();
    let mut injected = 0;
    for (i, k) in [4_000u64, 60_000, 150_000, 250_000, 330_000]
        .iter()
        .enumerate()
    {
        for query_only in [false, true] {
            let marker = format!("f06_{:08x}", rand::random::<u32>());
            let (proxy, url) = FaultProxy::for_url(
                &common::mysql_url(),
                vec![Rule::all(Dir::Down, Action::SignalAfter(*k))],
            )
            .await;
            let prefix = test_prefix("f06");
            let a = extract_args(
                &url,
                &my_sql(&marker, 3000, true),
                &prefix,
                &rid("f06"),
                &["--part-size", "64KiB"],
            );
            let killer = async {
                assert!(proxy.wait_fired(Duration::from_secs(60)).await, "k={k}");
                let id = my_connection_of(&marker).await?;
                let mut my = common::my_connect(&common::mysql_url()).await;
                let kill = if query_only { "KILL QUERY" } else { "KILL" };
                my.query_drop(format!("{kill} {id}")).await.expect("kill");
                Some(id)
            };
            let ((r, _), killed) = tokio::join!(dw(a, vec![]), killer);
            assert!(killed.is_some(), "case {i}: the connection was never seen");
            injected += 1;
            if r.code != 0 {
                // Never a clean end of rows: the server's error or the lost connection.
                assert_fails(
                    &r,
                    "extract",
                    &[
                        "[MySQL 1317",
                        "[MySQL 2013",
                        "[MySQL 1927",
                        "connection closed",
                        "Input/output error",
                    ],
                );
            }
            add(&mut total, extract_oracle(&r, &prefix, &expected).await);
        }
    }
    finish("F06", "mysql-kill-and-kill-query", injected, &total);
}

#[tokio::test(flavor = "multi_thread")]
async fn f08_mysql_packet_cut_mid_row() {
    let expected = my_expected(3000).await;
    let mut total = Losses::default();
    let mut injected = 0;
    for k in [2_003u64, 30_011, 100_003, 200_005, 350_007] {
        let (proxy, url) = FaultProxy::for_url(
            &common::mysql_url(),
            vec![Rule::all(Dir::Down, Action::CutAfter(k))],
        )
        .await;
        let prefix = test_prefix("f08");
        let marker = format!("f08_{:08x}", rand::random::<u32>());
        let a = extract_args(
            &url,
            &my_sql(&marker, 3000, false),
            &prefix,
            &rid("f08"),
            &["--part-size", "64KiB"],
        );
        let (r, _) = dw(a, vec![]).await;
        assert!(proxy.fired() > 0, "k={k}: the cut never fired");
        injected += 1;
        // An I/O error, never an end of rows: a cut stream is always an error.
        assert_fails(&r, "extract", &[]);
        add(&mut total, extract_oracle(&r, &prefix, &expected).await);
    }
    finish("F08", "mysql-fin-mid-packet", injected, &total);
}

// ---- S3 faults (F10-F16) -----------------------------------------------------------------------

/// A fast source of ~7 parts at `--part-size 64KiB` (~6.5 MiB of text).
async fn s3_source(name: &str) -> (TestDb, Vec<String>, String) {
    let db = TestDb::new(name).await;
    let pg = seed_src(&db, 50_000).await;
    let expected = src_lines(&pg, &db).await;
    let sql = format!("SELECT id, h FROM {}", db.pg_table("src"));
    (db, expected, sql)
}

/// An extract of `sql` through a fault layer with `rules`; returns the run, its log and the
/// prefix.
async fn s3_case(
    sql: &str,
    tag: &str,
    rules: Vec<HRule>,
    extra_env: Vec<(String, String)>,
) -> (Run, Vec<LogEntry>, String, Duration) {
    let layer = HttpFault::start(common::s3().addr, rules).await;
    let prefix = test_prefix(tag);
    let a = extract_args(
        &common::pg_url(),
        sql,
        &prefix,
        &rid(tag),
        &["--part-size", "64KiB"],
    );
    let mut env = env_s3(&layer.endpoint);
    env.extend(extra_env);
    let (r, took) = dw(a, env).await;
    (r, layer.log(), prefix, took)
}

fn faulted(log: &[LogEntry]) -> Vec<&LogEntry> {
    log.iter().filter(|e| e.action.is_some()).collect()
}

/// The requests for the same upload id (and part) as `e`, in order.
fn same_target<'a>(log: &'a [LogEntry], e: &LogEntry) -> Vec<&'a LogEntry> {
    log.iter()
        .filter(|x| {
            x.method == e.method
                && x.path == e.path
                && x.upload_id() == e.upload_id()
                && x.part() == e.part()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn f10_s3_5xx_on_a_part_is_retried() {
    let (db, expected, sql) = s3_source("f10").await;
    let mut total = Losses::default();
    let mut injected = 0;
    for (i, action) in [
        HAction::SlowDown,
        HAction::InternalError,
        HAction::SlowDown,
        HAction::InternalError,
        HAction::SlowDown,
    ]
    .into_iter()
    .enumerate()
    {
        let rule = HRule::new(action)
            .upload_part()
            .key(&format!("part-0000{i}"))
            .times(2);
        let (r, log, prefix, _) = s3_case(&sql, "f10", vec![rule], vec![]).await;
        let hits = faulted(&log);
        assert_eq!(hits.len(), 2, "case {i}: {log:#?}");
        injected += 1;
        r.assert_ok();
        // The same part was sent again and accepted on the third attempt.
        let tries = same_target(&log, hits[0]);
        assert!(tries.len() >= 3, "case {i}: {tries:#?}");
        assert_eq!(tries.last().map(|e| e.status), Some(200));
        assert!(tries.iter().any(|e| e.attempt >= 3), "{tries:#?}");
        add(&mut total, extract_oracle(&r, &prefix, &expected).await);
    }
    finish("F10", "s3-5xx-part-retried", injected, &total);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn f11_s3_persistent_5xx_fails_and_aborts() {
    let (db, expected, sql) = s3_source("f11").await;
    // The first `ok` UploadParts succeed, then every one fails; five runs at once (each waits
    // out the SDK's backoff).
    let cases = [0usize, 1, 2, 3, 5].map(|ok| {
        let sql = sql.clone();
        async move {
            let action = if ok % 2 == 0 {
                HAction::SlowDown
            } else {
                HAction::InternalError
            };
            let rule = HRule::new(action).upload_part().from(ok);
            let (r, log, prefix, took) = s3_case(&sql, "f11", vec![rule], vec![]).await;
            (ok, r, log, prefix, took)
        }
    });
    let mut total = Losses::default();
    let mut injected = 0;
    for (ok, r, log, prefix, took) in futures::future::join_all(cases).await {
        injected += 1;
        let line = assert_fails(&r, "extract", &["[S3 SlowDown]", "[S3 InternalError]"]);
        assert!(
            line.contains(" key=s3://") && line.contains(" upload_id="),
            "{line}"
        );
        assert!(line.contains("attempts)"), "no attempt count: {line}");
        // Retried up to the SDK's limit, then given up.
        let hits = faulted(&log);
        assert!(hits.iter().any(|e| e.attempt >= 5), "ok={ok}: {hits:#?}");
        // Every upload that was created was aborted (nothing left open right away).
        let created: Vec<&LogEntry> = log
            .iter()
            .filter(|e| e.method == "POST" && e.query.contains("uploads") && e.status == 200)
            .collect();
        let aborted = log
            .iter()
            .filter(|e| e.is_abort() && e.status == 204)
            .count();
        assert!(
            aborted >= created.len(),
            "ok={ok}: {aborted} aborts for {} uploads: {:#?}\nstderr:\n{}",
            created.len(),
            log.iter()
                .filter(|e| !e.is_upload_part())
                .collect::<Vec<_>>(),
            r.stderr
        );
        assert!(took < Duration::from_secs(90), "ok={ok}: took {took:?}");
        add(&mut total, extract_oracle(&r, &prefix, &expected).await);
    }
    finish("F11", "s3-persistent-5xx", injected, &total);
    db.cleanup().await;
}

/// Runs the extract again at the same prefix through the plain emulator; it must succeed and
/// leave exactly its manifest's objects.
async fn next_clean_run(sql: &str, prefix: &str, expected: &[String]) -> Losses {
    let a = extract_args(
        &common::pg_url(),
        sql,
        prefix,
        &rid("next"),
        &["--part-size", "64KiB"],
    );
    let (r, _) = dw(a, vec![]).await;
    r.assert_ok();
    extract_oracle(&r, prefix, expected).await
}

#[tokio::test(flavor = "multi_thread")]
async fn f10_f11_chunks_of_a_multi_chunk_part() {
    let db = TestDb::new("f10mc").await;
    let pg = db.pg().await;
    // ~22 MiB of md5 text (~12 MiB gzipped): one part per worker, each of two chunks.
    pg.batch_execute(
        "CREATE TABLE big AS SELECT g AS id, string_agg(md5((g * 1000 + i)::text), '') AS h
         FROM generate_series(1, 10000) g, generate_series(1, 70) i GROUP BY g;",
    )
    .await
    .expect("seed");
    let expected = pg_lines(
        &pg,
        &format!("SELECT id::text, h FROM {}", db.pg_table("big")),
    )
    .await;
    let sql = format!("SELECT id, h FROM {}", db.pg_table("big"));
    let run = |rule: HRule| {
        let sql = sql.clone();
        async move {
            let layer = HttpFault::start(common::s3().addr, vec![rule]).await;
            let prefix = test_prefix("f10mc");
            let a = extract_args(
                &common::pg_url(),
                &sql,
                &prefix,
                &rid("f10mc"),
                &["--upload-chunk", "5MiB"],
            );
            let (r, _) = dw(a, env_s3(&layer.endpoint)).await;
            (r, layer.log(), prefix)
        }
    };
    // Chunk 2 of a part: 503 twice, then accepted; the part completes once, whole.
    let (r, log, prefix) = run(HRule::new(HAction::SlowDown).upload_part().part(2).times(2)).await;
    r.assert_ok();
    let hits = faulted(&log);
    assert_eq!(hits.len(), 2, "{log:#?}");
    // Both 503s may hit one part's chunk 2 (then 3 requests) or chunk 2 of each worker's
    // part (then 2 each): every faulted chunk was sent again and accepted.
    for h in &hits {
        let tries = same_target(&log, h);
        assert!(tries.len() >= 2, "{tries:#?}");
        assert_eq!(tries.last().map(|t| t.status), Some(200), "{tries:#?}");
    }
    let f10 = extract_oracle(&r, &prefix, &expected).await;
    // Chunk 2 fails for good: chunk 1 of that part and every other part are aborted,
    // nothing completed.
    let (r, log, prefix) = run(HRule::new(HAction::InternalError).upload_part().part(2)).await;
    let line = assert_fails(&r, "extract", &["[S3 InternalError]"]);
    assert!(
        line.contains(" upload_id=") && line.contains("attempts)"),
        "{line}"
    );
    assert!(
        !log.iter().any(|e| e.is_complete() && e.status == 200),
        "a part was completed"
    );
    let f11 = extract_oracle(&r, &prefix, &expected).await;
    finish("F10", "s3-5xx-chunk-of-multi-chunk-part", 1, &f10);
    finish("F11", "s3-persistent-5xx-multi-chunk-part", 1, &f11);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn f12_complete_200_with_error_is_never_success() {
    let (db, expected, sql) = s3_source("f12").await;
    let mut total = Losses::default();
    let mut injected = 0;
    for (k, forward) in [
        (0usize, false),
        (2, false),
        (4, false),
        (1, true),
        (3, true),
    ] {
        let rule = HRule::new(HAction::ErrorIn200 { forward })
            .complete()
            .from(k)
            .times(1);
        let (r, log, prefix, _) = s3_case(&sql, "f12", vec![rule], vec![]).await;
        let hits = faulted(&log);
        assert_eq!(hits.len(), 1, "k={k}: {log:#?}");
        injected += 1;
        eprintln!(
            "F12 k={k} forward={forward}: exit {} {}",
            r.code,
            r.last_stderr_line()
        );
        // Either retried into a real success (the data is all there), or an error.
        if r.code == 0 {
            let tries = same_target(&log, hits[0]);
            assert!(
                tries.len() >= 2,
                "k={k}: success without a retried Complete"
            );
            if forward {
                // The retry found the upload gone; the object was verified by its ETag.
                assert!(
                    r.stderr.contains("an earlier attempt completed it"),
                    "{}",
                    r.stderr
                );
            }
        } else {
            let line = assert_fails(&r, "extract", &[]);
            assert!(line.contains(" key=s3://"), "{line}");
            assert!(!r.stderr.contains("Extract finished"), "{}", r.stderr);
        }
        // A failed attempt deletes the parts it had completed: nothing outside a manifest
        // even before the next run, which then succeeds.
        let mut l = extract_oracle(&r, &prefix, &expected).await;
        if r.code != 0 {
            add(&mut l, next_clean_run(&sql, &prefix, &expected).await);
        }
        add(&mut total, l);
    }
    finish("F12", "s3-complete-200-error", injected, &total);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn f13_s3_dies_between_parts_next_run_cleans_up() {
    let db = TestDb::new("f13").await;
    let pg = seed_src(&db, 50_000).await;
    let expected = src_lines(&pg, &db).await;
    // A 0.25 s pause every 5,000 rows: parts are uploaded over ~2.5 s.
    let sql = format!(
        "SELECT CASE WHEN id % 5000 = 0 THEN {}(id, 0.25) ELSE id END AS id, h FROM {}",
        db.pg_table("slow"),
        db.pg_table("src")
    );
    // (k, mid_upload): the server dies after k parts were stored (between parts), or while
    // the k-th UploadPart is in flight (it stalls, then its connection is cut).
    let cases = [
        (1usize, false),
        (3, false),
        (5, false),
        (1, true),
        (3, true),
    ]
    .map(|(k, mid)| {
        let sql = sql.clone();
        async move {
            let rules = if mid {
                vec![HRule::new(HAction::Stall).upload_part().from(k).times(1)]
            } else {
                vec![]
            };
            let layer = HttpFault::start(common::s3().addr, rules).await;
            let prefix = test_prefix("f13");
            let run_id = rid("f13");
            let a = extract_args(
                &common::pg_url(),
                &sql,
                &prefix,
                &run_id,
                &["--part-size", "64KiB"],
            );
            let endpoint = layer.endpoint.clone();
            let stopper = async move {
                let ready = |log: &[LogEntry]| {
                    if mid {
                        log.iter().any(|e| e.action.is_some())
                    } else {
                        log.iter()
                            .filter(|e| e.is_upload_part() && e.status == 200)
                            .count()
                            >= k
                    }
                };
                let seen = layer.wait_for(Duration::from_secs(60), ready).await;
                // The server dies: no more connections, open ones cut.
                drop(layer);
                seen
            };
            let ((r, took), seen) = tokio::join!(dw(a, env_s3(&endpoint)), stopper);
            ((k, mid), prefix, run_id, r, took, seen)
        }
    });
    let mut total = Losses::default();
    let mut injected = 0;
    for (k, prefix, run_id, r, took, seen) in futures::future::join_all(cases).await {
        assert!(seen, "k={k:?}: the fault point was never reached");
        injected += 1;
        let line = assert_fails(&r, "extract", &[]);
        assert!(line.contains(" key=s3://"), "{line}");
        assert!(
            line.contains("could not reach")
                || line.contains("dispatch")
                || line.contains("I/O")
                || line.contains("connect"),
            "{line}"
        );
        // The uploads already open could not be aborted either: said (logged), and left to
        // the next run.
        assert!(r.stderr.contains("Abort failed"), "k={k:?}: {}", r.stderr);
        // And the error line names them, with their upload ids.
        assert!(
            line.contains("abort failed for s3://") && line.contains("(upload "),
            "k={k:?}: {line}"
        );
        assert!(took < Duration::from_secs(120), "k={k:?}: took {took:?}");
        // No manifest; the next run at the prefix (the same run id) cleans up and succeeds.
        assert!(
            !common::list_keys(&prefix)
                .await
                .iter()
                .any(|x| x.ends_with("manifest.json")),
            "k={k:?}"
        );
        let a = extract_args(
            &common::pg_url(),
            &sql,
            &prefix,
            &run_id,
            &["--part-size", "64KiB"],
        );
        let (r2, _) = dw(a, vec![]).await;
        r2.assert_ok();
        add(&mut total, extract_oracle(&r2, &prefix, &expected).await);
    }
    finish("F13", "s3-server-dies-between-parts", injected, &total);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn f14_part_body_reset_or_stall_is_resent() {
    let (db, expected, sql) = s3_source("f14").await;
    let timeout = vec![("DUCTWORK_S3_READ_TIMEOUT".to_string(), "2s".to_string())];
    let cases: Vec<(&str, HRule, Env)> = vec![
        (
            "rst-1k",
            HRule::new(HAction::ResetMidBody(1024))
                .upload_part()
                .from(0)
                .times(1),
            vec![],
        ),
        (
            "rst-20k",
            HRule::new(HAction::ResetMidBody(20_000))
                .upload_part()
                .from(2)
                .times(1),
            vec![],
        ),
        (
            "rst-60k",
            HRule::new(HAction::ResetMidBody(60_000))
                .upload_part()
                .from(4)
                .times(1),
            vec![],
        ),
        (
            "stall",
            HRule::new(HAction::Stall).upload_part().from(1).times(1),
            timeout.clone(),
        ),
        (
            "stall",
            HRule::new(HAction::Stall).upload_part().from(3).times(1),
            timeout.clone(),
        ),
        (
            "slow",
            HRule::new(HAction::Delay(Duration::from_millis(1500)))
                .upload_part()
                .from(2)
                .times(2),
            vec![],
        ),
    ];
    let mut total = Losses::default();
    let mut injected = 0;
    for (name, rule, env) in cases {
        let (r, log, prefix, _) = s3_case(&sql, "f14", vec![rule], env).await;
        let hits = faulted(&log);
        assert!(!hits.is_empty(), "{name}: {log:#?}");
        injected += 1;
        r.assert_ok();
        let tries = same_target(&log, hits[0]);
        if name != "slow" {
            assert!(
                tries.len() >= 2,
                "{name}: the part was not resent: {tries:#?}"
            );
        }
        assert_eq!(tries.last().map(|e| e.status), Some(200), "{name}");
        // Completed once per upload.
        let completes: Vec<_> = log
            .iter()
            .filter(|e| e.is_complete() && e.status == 200)
            .collect();
        let mut ids: Vec<_> = completes.iter().map(|e| e.upload_id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(
            ids.len(),
            completes.len(),
            "{name}: an upload completed twice"
        );
        add(&mut total, extract_oracle(&r, &prefix, &expected).await);
    }
    finish("F14", "s3-part-body-rst-stall", injected, &total);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn f15_corrupt_part_never_gets_a_manifest() {
    let (db, expected, sql) = s3_source("f15").await;
    let cases: Vec<HRule> = vec![
        HRule::new(HAction::FlipBodyByte(0))
            .upload_part()
            .from(0)
            .times(1),
        HRule::new(HAction::FlipBodyByte(777))
            .upload_part()
            .from(1)
            .times(1),
        HRule::new(HAction::FlipBodyByte(30_000))
            .upload_part()
            .from(3)
            .times(1),
        HRule::new(HAction::FlipBodyByte(65_000))
            .upload_part()
            .from(5)
            .times(1),
        // What S3 itself answers when Content-MD5 does not match.
        HRule::new(HAction::BadDigest)
            .upload_part()
            .from(2)
            .times(1),
        // A store that checks no digest (moto) stores the changed bytes and answers their
        // MD5 as the ETag: ductwork's own check must catch it.
        HRule::new(HAction::ChangeEtag)
            .upload_part()
            .from(1)
            .times(1),
        HRule::new(HAction::ChangeEtag)
            .upload_part()
            .from(4)
            .times(1),
    ];
    let mut total = Losses::default();
    let mut injected = 0;
    for rule in cases {
        let (r, log, prefix, _) = s3_case(&sql, "f15", vec![rule], vec![]).await;
        let hits = faulted(&log);
        assert_eq!(hits.len(), 1, "{log:#?}");
        injected += 1;
        eprintln!(
            "F15 {:?}: exit {} {} {:?}",
            hits[0].action,
            r.code,
            r.last_stderr_line(),
            same_target(&log, hits[0])
                .iter()
                .map(|e| (e.attempt, e.status))
                .collect::<Vec<_>>()
        );
        if matches!(hits[0].action.as_deref(), Some("ChangeEtag" | "BadDigest")) {
            let line = assert_fails(&r, "extract", &["changed in transit", "[S3 BadDigest]"]);
            assert!(
                line.contains(&format!(
                    "upload_id={}",
                    hits[0].upload_id().unwrap_or_default()
                )),
                "{line}"
            );
        }
        if r.code == 0 {
            // Resent from its buffer after the check caught it: the data must be exact.
            let tries = same_target(&log, hits[0]);
            assert!(tries.len() >= 2, "corrupt part accepted: {tries:#?}");
        } else {
            let line = assert_fails(&r, "extract", &[]);
            assert!(
                line.contains(" key=s3://") && line.contains(" upload_id="),
                "{line}"
            );
        }
        add(&mut total, extract_oracle(&r, &prefix, &expected).await);
    }
    finish("F15", "s3-corrupt-part", injected, &total);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn f16_403_on_complete_is_not_retried_and_aborts() {
    let (db, expected, sql) = s3_source("f16").await;
    let mut total = Losses::default();
    let mut injected = 0;
    for k in [0usize, 1, 2, 4, 6] {
        let rule = HRule::new(HAction::AccessDenied).complete().from(k);
        let (r, log, prefix, _) = s3_case(&sql, "f16", vec![rule], vec![]).await;
        let hits = faulted(&log);
        assert!(!hits.is_empty(), "k={k}: {log:#?}");
        injected += 1;
        let line = assert_fails(&r, "extract", &["[S3 AccessDenied]"]);
        assert!(
            line.contains(" key=s3://") && line.contains(" upload_id="),
            "{line}"
        );
        assert!(line.contains("s3:PutObject"), "no permission hint: {line}");
        // No retry of a 403.
        for h in &hits {
            assert_eq!(same_target(&log, h).len(), 1, "k={k}: 403 retried");
        }
        // Uploads aborted and parts completed before the 403 deleted at once: nothing open
        // and nothing outside a manifest even before the next run, which then succeeds.
        let mut l = extract_oracle(&r, &prefix, &expected).await;
        add(&mut l, next_clean_run(&sql, &prefix, &expected).await);
        add(&mut total, l);
    }
    finish("F16", "s3-403-complete", injected, &total);
    db.cleanup().await;
}

// ---- F32: nonexistent host -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn f32_nonexistent_hosts_fail_fast_and_clearly() {
    let db = TestDb::new("f32").await;
    let pg = seed_src(&db, 10).await;
    let table = db.pg_table("src");
    let (_d, cfg) = write_config("[s3]\nendpoint = \"http://nonexistent.invalid:9000\"\n");
    let prefix = test_prefix("f32");
    let ex = |source: &str| {
        args(&[
            "extract", "--source", source, "--table", &table, "--to", &prefix, "--run-id", "f32",
        ])
    };
    let mut cfg_args = args(&["--config", &cfg]);
    cfg_args.extend(ex(&common::pg_url()));
    // (name, step, args, env, time bound): a name that does not resolve is not retried.
    let cases: Vec<(&str, &str, Vec<String>, Env, u64)> = vec![
        (
            "s3-endpoint-env",
            "extract",
            ex(&common::pg_url()),
            env_s3("http://nonexistent.invalid:9000"),
            5,
        ),
        (
            "s3-endpoint-config",
            "extract",
            cfg_args,
            vec![("DUCTWORK_S3_ENDPOINT".into(), String::new())],
            5,
        ),
        (
            "pg-source",
            "extract",
            ex("postgres://postgres@nonexistent.invalid:5432/test"),
            vec![],
            20,
        ),
        (
            "mysql-source",
            "extract",
            ex("mysql://root@nonexistent.invalid:3306/test"),
            vec![],
            20,
        ),
        (
            "pg-warehouse",
            "upsert",
            args(&[
                "--run-id",
                "f32",
                "upsert",
                "--warehouse",
                "postgres://postgres@nonexistent.invalid:5432/test",
                "--source",
                &table,
                "--destination",
                &table,
                "--no-ledger",
            ]),
            vec![],
            20,
        ),
    ];
    let mut total = Losses::default();
    let mut injected = 0;
    for (name, step, a, env, bound) in cases {
        let (r, took) = dw(a, env).await;
        injected += 1;
        let line = assert_fails(
            &r,
            step,
            &["nonexistent.invalid", "dns", "lookup", "resolve"],
        );
        eprintln!("F32 {name}: {took:?}");
        assert!(
            took < Duration::from_secs(bound),
            "{name}: took {took:?}: {line}"
        );
        assert!(
            !line.contains("DispatchFailure {"),
            "a Debug dump in the line: {line}"
        );
        let l = Losses {
            open_mpus: faults::open_mpus(&prefix).await,
            partial_objects: faults::partial_objects(&prefix).await,
            ..Losses::default()
        };
        add(&mut total, l);
    }
    drop(pg);
    finish("F32", "nonexistent-host", injected, &total);
    db.cleanup().await;
}

// ---- warehouse faults (F18-F21) ----------------------------------------------------------------

/// `prod` (2,000 rows), `stg` (2,001 rows: 501 updates, 1,500 new), `prod2` (a copy of
/// `prod`, for reload), `prodload` (a copy of `prod`, for load) and the expected tables.
async fn seed_warehouse(db: &TestDb) -> tokio_postgres::Client {
    let pg = db.pg().await;
    pg.batch_execute(
        "CREATE TABLE prod (id int PRIMARY KEY, v text, n int);
         INSERT INTO prod SELECT g, md5(g::text), g FROM generate_series(1, 2000) g;
         CREATE TABLE stg (id int, v text, n int);
         INSERT INTO stg SELECT g, 'new ' || md5(g::text), -g FROM generate_series(1500, 3500) g;
         CREATE TABLE prod2 AS SELECT * FROM prod;
         CREATE TABLE prodload AS SELECT * FROM prod;
         CREATE TABLE expected_upsert AS
             SELECT * FROM prod WHERE id NOT IN (SELECT id FROM stg) UNION ALL SELECT * FROM stg;",
    )
    .await
    .expect("seed warehouse");
    pg
}

/// The upsert, reload and load steps of the warehouse faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wh {
    Upsert,
    Reload,
    Load,
}

impl Wh {
    fn step(self) -> &'static str {
        match self {
            Wh::Upsert => "upsert",
            Wh::Reload => "reload",
            Wh::Load => "load",
        }
    }
    fn target(self, db: &TestDb) -> String {
        db.pg_table(match self {
            Wh::Upsert => "prod",
            Wh::Reload => "prod2",
            Wh::Load => "prodload",
        })
    }
    fn expected(self, db: &TestDb) -> String {
        db.pg_table(match self {
            Wh::Upsert => "expected_upsert",
            Wh::Reload | Wh::Load => "stg",
        })
    }
    /// The step's arguments against warehouse `url` (`manifest` for load).
    fn args(self, db: &TestDb, url: &str, run_id: &str, manifest: &str) -> Vec<String> {
        let ledger = db.pg_table("ledger");
        let target = self.target(db);
        let stg = db.pg_table("stg");
        let mut a = args(&["--run-id", run_id, self.step(), "--warehouse", url]);
        match self {
            Wh::Upsert | Wh::Reload => a.extend(args(&[
                "--source",
                &stg,
                "--destination",
                &target,
                "--ledger",
                &ledger,
            ])),
            Wh::Load => a.extend(args(&["--from", manifest, "--table", &target])),
        }
        a
    }
}

/// The extract of `stg` that load tests load.
async fn stg_extract(db: &TestDb) -> String {
    let prefix = test_prefix("wh-stg");
    let a = args(&[
        "extract",
        "--source",
        &common::pg_url(),
        "--table",
        &db.pg_table("stg"),
        "--to",
        &prefix,
        "--run-id",
        &rid("stg"),
    ]);
    dw(a, vec![]).await.0.assert_ok();
    format!("{prefix}manifest.json")
}

async fn ledger_rows(pg: &tokio_postgres::Client, db: &TestDb, run_id: &str) -> i64 {
    let exists: Option<String> = pg
        .query_one("SELECT to_regclass($1)::text", &[&db.pg_table("ledger")])
        .await
        .expect("regclass")
        .get(0);
    if exists.is_none() {
        return 0;
    }
    pg.query_one(
        &format!(
            "SELECT count(*) FROM {} WHERE run_id = $1",
            db.pg_table("ledger")
        ),
        &[&run_id],
    )
    .await
    .expect("ledger rows")
    .get(0)
}

/// After a faulted attempt: the target is exactly before or exactly expected-after; then a
/// re-run with the same run id succeeds and leaves exactly expected-after, with one ledger
/// row (upsert, reload). Returns the losses.
async fn warehouse_oracle(
    pg: &tokio_postgres::Client,
    db: &TestDb,
    wh: Wh,
    run_id: &str,
    before: &(i64, String),
    manifest: &str,
) -> Losses {
    let mut l = Losses::default();
    // The faulted attempt's server session may still be finishing (a COMMIT that reached
    // the server just before the client was cut off): the next run comes after it.
    backends_gone(pg, run_id).await;
    let after_fault = faults::pg_table_checksum(pg, &wh.target(db)).await;
    let expected = faults::pg_table_checksum(pg, &wh.expected(db)).await;
    if after_fault != *before && after_fault != expected {
        eprintln!(
            "{wh:?}: partially applied: {after_fault:?}, before {before:?}, expected {expected:?}"
        );
        l.partial_txns += 1;
    }
    let (r, _) = dw(wh.args(db, &common::pg_url(), run_id, manifest), vec![]).await;
    let s = r.assert_ok();
    let final_sum = faults::pg_table_checksum(pg, &wh.target(db)).await;
    if final_sum != expected {
        eprintln!("{wh:?}: after the re-run {final_sum:?}, expected {expected:?}: {s}");
        if final_sum.0 > expected.0 {
            l.dup += u64::try_from(final_sum.0 - expected.0).unwrap_or(0);
        } else {
            l.lost += u64::try_from(expected.0 - final_sum.0).unwrap_or(0).max(1);
        }
    }
    if wh != Wh::Load {
        let n = ledger_rows(pg, db, run_id).await;
        assert_eq!(n, 1, "{wh:?}: ledger rows for {run_id}");
        if after_fault == expected {
            assert_eq!(s["status"], "already applied", "{wh:?}: {s}");
        }
    }
    l
}

/// Waits (polling, 10 s at most) until no backend of `run_id` is left.
async fn backends_gone(pg: &tokio_postgres::Client, run_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = pg
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1",
                &[&format!("ductwork:{run_id}:%")],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if n == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backends of {run_id} still there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Resets a target to its seeded contents.
async fn reset_target(pg: &tokio_postgres::Client, db: &TestDb, wh: Wh) -> (i64, String) {
    let t = wh.target(db);
    pg.batch_execute(&format!(
        "DELETE FROM {t}; INSERT INTO {t} SELECT g, md5(g::text), g FROM generate_series(1, 2000) g;"
    ))
    .await
    .expect("reset target");
    faults::pg_table_checksum(pg, &t).await
}

#[tokio::test(flavor = "multi_thread")]
async fn f18_bad_row_in_load_rolls_back() {
    let db = TestDb::new("f18").await;
    let pg = db.pg().await;
    pg.batch_execute(
        "CREATE TABLE raw AS SELECT g AS id, 'c' || (g % 1000) AS code, (g % 30000)::text AS qty,
             (date '2020-01-01' + g)::text AS d, round(g / 7.0, 2)::text AS amt,
             (g % 2 = 0)::text AS flag
         FROM generate_series(1, 3000) g;
         CREATE TABLE tgt (id int, code varchar(5), qty smallint, d date, amt numeric(6,2), flag boolean);
         INSERT INTO tgt SELECT g, 'old', 1, date '2000-01-01', 1.5, true FROM generate_series(1, 50) g;",
    )
    .await
    .expect("seed");
    let before = faults::pg_table_checksum(&pg, &db.pg_table("tgt")).await;
    // (column, bad value, row, SQLSTATE)
    let cases = [
        ("code", "toolong", 17, "22001"),
        ("qty", "70000", 1500, "22003"),
        ("d", "2024-02-30", 2999, "22008"),
        ("amt", "123456.78", 2, "22003"),
        ("flag", "maybe", 2400, "22P02"),
    ];
    let mut total = Losses::default();
    let mut injected = 0;
    for (col, bad, row, state) in cases {
        let cols = ["code", "qty", "d", "amt", "flag"]
            .map(|c| {
                if c == col {
                    format!("CASE WHEN id = {row} THEN '{bad}' ELSE {c} END AS {c}")
                } else {
                    c.to_string()
                }
            })
            .join(", ");
        let sql = format!("SELECT id, {cols} FROM {}", db.pg_table("raw"));
        let prefix = test_prefix("f18");
        dw(
            extract_args(&common::pg_url(), &sql, &prefix, &rid("f18"), &[]),
            vec![],
        )
        .await
        .0
        .assert_ok();
        let a = args(&[
            "load",
            "--warehouse",
            &common::pg_url(),
            "--from",
            &format!("{prefix}manifest.json"),
            "--table",
            &db.pg_table("tgt"),
            "--run-id",
            &rid("f18"),
        ]);
        let (r, _) = dw(a, vec![]).await;
        injected += 1;
        let line = assert_fails(&r, "load", &[&format!("[SQLSTATE {state}]")]);
        assert!(
            line.contains(&format!("table={}", db.pg_table("tgt"))),
            "{line}"
        );
        assert!(line.contains(&format!("column {col}")), "{line}");
        if faults::pg_table_checksum(&pg, &db.pg_table("tgt")).await != before {
            total.partial_txns += 1;
        }
    }
    finish("F18", "load-bad-row-rollback", injected, &total);
    db.cleanup().await;
}

/// Runs `wh` through a proxy that holds the statement matching `pattern`, terminates the
/// backend while it waits there (mid-transaction), and checks the oracle.
async fn kill_at(
    pg: &tokio_postgres::Client,
    db: &TestDb,
    wh: Wh,
    pattern: &str,
    manifest: &str,
) -> Losses {
    let before = reset_target(pg, db, wh).await;
    let (proxy, url) = FaultProxy::for_url(
        &common::pg_url(),
        vec![Rule::all(
            Dir::Up,
            Action::HoldOnPattern(pattern.as_bytes().to_vec()),
        )],
    )
    .await;
    let run_id = rid("f19");
    let killer = async {
        assert!(
            proxy.wait_fired(Duration::from_secs(60)).await,
            "{wh:?} {pattern}: never held"
        );
        let n = signal_backends(pg, &run_id, true).await;
        proxy.release();
        n
    };
    let ((r, _), killed) = tokio::join!(dw(wh.args(db, &url, &run_id, manifest), vec![]), killer);
    assert!(killed > 0, "{wh:?} {pattern}: nothing to kill");
    assert_fails(
        &r,
        wh.step(),
        &["[SQLSTATE 57P01]", "connection closed", "closed"],
    );
    warehouse_oracle(pg, db, wh, &run_id, &before, manifest).await
}

#[tokio::test(flavor = "multi_thread")]
async fn f19_warehouse_backend_killed_mid_transaction() {
    let db = TestDb::new("f19").await;
    let pg = seed_warehouse(&db).await;
    let manifest = stg_extract(&db).await;
    let s = &db.pg_schema;
    let cases: Vec<(Wh, String)> = vec![
        (Wh::Upsert, "CREATE TEMP TABLE".into()),
        (Wh::Upsert, "INSERT INTO \"ductwork_upsert_tmp\"".into()),
        (Wh::Upsert, "DELETE FROM".into()),
        // Between the DELETE and the INSERT.
        (Wh::Upsert, format!("INSERT INTO \"{s}\".\"prod\"")),
        (Wh::Upsert, format!("INSERT INTO \"{s}\".\"ledger\"")),
        (Wh::Reload, format!("INSERT INTO \"{s}\".\"prod2\"")),
        (Wh::Reload, format!("INSERT INTO \"{s}\".\"ledger\"")),
        (Wh::Load, "COPY \"".into()),
    ];
    let mut total = Losses::default();
    let mut injected = 0;
    for (wh, pattern) in &cases {
        let l = kill_at(&pg, &db, *wh, pattern, &manifest).await;
        injected += 1;
        add(&mut total, l);
    }
    finish("F19", "warehouse-killed-mid-txn", injected, &total);
    db.cleanup().await;
}

/// `Q` + length + `COMMIT\0`: the simple-query COMMIT; `C` + the same: its CommandComplete.
const COMMIT_QUERY: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";
const COMMIT_DONE: &[u8] = b"C\0\0\0\x0bCOMMIT\0";

#[tokio::test(flavor = "multi_thread")]
async fn f20_ambiguous_commit_is_settled_by_the_ledger() {
    let db = TestDb::new("f20").await;
    let pg = seed_warehouse(&db).await;
    let manifest = stg_extract(&db).await;
    let mut total = Losses::default();
    let mut injected = 0;
    for wh in [Wh::Upsert, Wh::Reload, Wh::Load] {
        for (variant, rule) in [
            // COMMIT never reaches the server: nothing applied.
            (
                "rst-before-commit",
                Rule::all(
                    Dir::Up,
                    Action::ResetOnPattern {
                        pattern: COMMIT_QUERY.to_vec(),
                        forward_first: false,
                    },
                ),
            ),
            // COMMIT reaches the server, the client is reset: applied, answer lost.
            (
                "rst-after-commit-sent",
                Rule::all(
                    Dir::Up,
                    Action::ResetOnPattern {
                        pattern: COMMIT_QUERY.to_vec(),
                        forward_first: true,
                    },
                ),
            ),
            // The server's "COMMIT" answer is cut off: applied, answer lost.
            (
                "rst-on-commit-answer",
                Rule::all(
                    Dir::Down,
                    Action::ResetOnPattern {
                        pattern: COMMIT_DONE.to_vec(),
                        forward_first: false,
                    },
                ),
            ),
        ] {
            let before = reset_target(&pg, &db, wh).await;
            let (proxy, url) = FaultProxy::for_url(&common::pg_url(), vec![rule]).await;
            let run_id = rid("f20");
            let (r, _) = dw(wh.args(&db, &url, &run_id, &manifest), vec![]).await;
            assert!(proxy.fired() > 0, "{wh:?} {variant}: never fired");
            injected += 1;
            let line = assert_fails(&r, wh.step(), &[]);
            if wh != Wh::Load {
                assert!(line.contains("COMMIT"), "{wh:?} {variant}: {line}");
            }
            let l = warehouse_oracle(&pg, &db, wh, &run_id, &before, &manifest).await;
            add(&mut total, l);
        }
    }
    finish("F20", "ambiguous-commit", injected, &total);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn f21_serialization_conflict_rolls_back_whole_and_runs_again() {
    let db = TestDb::new("f21").await;
    let pg = seed_warehouse(&db).await;
    let role = format!("f21_{:08x}", rand::random::<u32>());
    pg.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN SUPERUSER;
         ALTER ROLE {role} SET default_transaction_isolation = 'serializable'"
    ))
    .await
    .expect("role");
    let url = format!("postgres://{role}@127.0.0.1:5432/test");
    let s = &db.pg_schema;
    // Hold ductwork after it has read the staging table; a concurrent SERIALIZABLE writer
    // reads the destination and writes staging, and commits first: a read/write cycle.
    let cases = [
        (Wh::Upsert, "CREATE TEMP TABLE".to_string()),
        (
            Wh::Upsert,
            "INSERT INTO \"ductwork_upsert_tmp\"".to_string(),
        ),
        (Wh::Upsert, "DELETE FROM".to_string()),
        (Wh::Reload, "DELETE FROM".to_string()),
        (
            Wh::Reload,
            format!("SELECT count(*) FROM \"{s}\".\"prod2\""),
        ),
    ];
    let mut total = Losses::default();
    let mut injected = 0;
    let mut conflicts = 0;
    for (wh, pattern) in cases {
        let before = reset_target(&pg, &db, wh).await;
        let (proxy, purl) = FaultProxy::for_url(
            &url,
            vec![Rule::all(
                Dir::Up,
                Action::HoldOnPattern(pattern.as_bytes().to_vec()),
            )],
        )
        .await;
        let run_id = rid("f21");
        let target = wh.target(&db);
        let stg = db.pg_table("stg");
        let writer = async {
            assert!(
                proxy.wait_fired(Duration::from_secs(60)).await,
                "{wh:?} {pattern}"
            );
            let w = common::pg_connect(&common::pg_url()).await;
            let r = w
                .batch_execute(&format!(
                    "BEGIN ISOLATION LEVEL SERIALIZABLE;
                     SELECT count(*) FROM {target};
                     UPDATE {stg} SET n = n WHERE id = 1500;
                     COMMIT;"
                ))
                .await;
            proxy.release();
            r.is_ok()
        };
        let ((r, _), wrote) = tokio::join!(dw(wh.args(&db, &purl, &run_id, ""), vec![]), writer);
        assert!(wrote, "{wh:?} {pattern}: the concurrent writer failed");
        injected += 1;
        // The conflict rolls the whole transaction back and it runs again (bounded): the
        // held attempt fails, the next one commits.
        if r.code == 0 {
            if r.stderr
                .contains("Serialization conflict; the transaction rolled back and runs again.")
            {
                conflicts += 1;
            }
        } else {
            let line = assert_fails(&r, wh.step(), &["[SQLSTATE 40001]"]);
            assert!(line.contains("serializ"), "{line}");
        }
        drop(proxy);
        add(
            &mut total,
            warehouse_oracle(&pg, &db, wh, &run_id, &before, "").await,
        );
    }
    // ductwork created the ledger as this role.
    pg.batch_execute(&format!(
        "REASSIGN OWNED BY {role} TO CURRENT_USER; DROP ROLE {role}"
    ))
    .await
    .expect("drop role");
    assert!(conflicts > 0, "no serialization conflict was produced");
    finish("F21", "serialization-conflict", injected, &total);
    db.cleanup().await;
}
