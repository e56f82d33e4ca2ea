//! `ductwork extract` end to end: real PostgreSQL and MariaDB, the in-process S3 emulator, the
//! real binary. Behaviour (parts, manifest, metadata, rotation, empty results, stale parts,
//! shards) and failures (bad SQL, bad password, S3 down, unwritable path, killed backends,
//! bad cells): each failure exits 2 with one clear stderr line and leaves no manifest, no
//! object and no open multipart upload.

mod common;

use std::time::Duration;

use common::{args, run_with_env as run, test_prefix, TestDb};
use mysql_async::prelude::Queryable as _;
use serde_json::Value;

/// Reads an extract back: the manifest, ductwork.json and every decoded record, checking the
/// manifest's own promises on the way (mandatory entries, exact content lengths).
async fn read_back(prefix: &str) -> (Value, Value, Vec<Vec<Option<Vec<u8>>>>) {
    let manifest: Value =
        serde_json::from_slice(&fetch(&format!("{prefix}manifest.json")).await).expect("manifest");
    let meta: Value =
        serde_json::from_slice(&fetch(&format!("{prefix}ductwork.json")).await).expect("metadata");
    let mut rows = Vec::new();
    let entries = manifest["entries"].as_array().expect("entries");
    assert!(!entries.is_empty());
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["mandatory"], Value::Bool(true));
        let url = e["url"].as_str().expect("url");
        let gz = fetch(url).await;
        assert_eq!(
            e["meta"]["content_length"].as_u64(),
            Some(gz.len() as u64),
            "{url}"
        );
        let part = &meta["parts"][i];
        assert_eq!(part["url"].as_str(), Some(url));
        use sha2::Digest as _;
        assert_eq!(
            part["sha256"].as_str(),
            Some(hex::encode(sha2::Sha256::digest(&gz)).as_str())
        );
        let raw = common::gunzip(&gz);
        let decoded = ductwork::tsv::decode_all(&raw).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(part["rows"].as_u64(), Some(decoded.len() as u64), "{url}");
        rows.extend(decoded);
    }
    assert_eq!(meta["rows"].as_u64(), Some(rows.len() as u64));
    (manifest, meta, rows)
}

async fn fetch(url: &str) -> Vec<u8> {
    if let Some(path) = url.strip_prefix("file://") {
        std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    } else {
        common::get_object(url).await
    }
}

/// Nothing usable and nothing open under a prefix after a failure.
async fn assert_prefix_clean(prefix: &str) {
    let keys = common::list_keys(prefix).await;
    assert!(keys.is_empty(), "objects left under {prefix}: {keys:?}");
    let open = common::open_uploads(prefix).await;
    assert!(open.is_empty(), "open uploads under {prefix}: {open:?}");
}

fn text(cell: &Option<Vec<u8>>) -> Option<String> {
    cell.as_ref()
        .map(|b| String::from_utf8(b.clone()).expect("utf8"))
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_extract_to_s3_rotates_parts_and_round_trips_every_row() {
    let db = TestDb::new("ex_pg_s3").await;
    let pg = db.pg().await;
    pg.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, t text);
         INSERT INTO t SELECT g, CASE g % 7
             WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN E'tab\\there\\nline\\r\\n'
             WHEN 3 THEN E'\\\\N' WHEN 4 THEN 'emoji 😀 ' || md5(g::text)
             WHEN 5 THEN E'ends with backslash \\\\' ELSE repeat(md5(g::text), 3) END
         FROM generate_series(1, 200000) g;",
    )
    .await
    .expect("seed");
    let prefix = test_prefix("ex-pg-s3");
    let r = run(
        args(&[
            "extract",
            "--source",
            &common::pg_url(),
            "--table",
            &db.pg_table("t"),
            "--to",
            &prefix,
            "--part-size",
            "64KiB",
            "--run-id",
            "run-pg-s3",
        ]),
        vec![],
    )
    .await;
    let summary = r.assert_ok();
    assert_eq!(summary["rows"], 200000);
    assert!(summary["parts"].as_u64().unwrap() >= 4, "{summary}");
    let (manifest, meta, mut rows) = read_back(&prefix).await;
    assert_eq!(
        manifest["entries"].as_array().unwrap().len() as u64,
        summary["parts"].as_u64().unwrap()
    );
    assert_eq!(meta["run_id"], "run-pg-s3");
    assert_eq!(meta["columns"][1]["name"], "t");
    assert_eq!(meta["columns"][1]["source_type"], "text");
    assert_eq!(meta["null_as"], "\\001");
    // Expected values: the source's own rendering of each row.
    let expected = pg
        .query("SELECT id::text AS k, t FROM t ORDER BY id", &[])
        .await
        .expect("expected rows");
    rows.sort_by_key(|r| text(&r[0]).unwrap().parse::<i64>().unwrap());
    assert_eq!(rows.len(), expected.len());
    for (got, want) in rows.iter().zip(&expected) {
        assert_eq!(text(&got[0]).as_deref(), Some(want.get::<_, &str>(0)));
        assert_eq!(
            text(&got[1]),
            want.get::<_, Option<String>>(1),
            "row {}",
            want.get::<_, &str>(0)
        );
    }
    // Only the manifest's parts, ductwork.json and the manifest remain; nothing is open.
    let mut keys = common::list_keys(&prefix).await;
    keys.sort();
    assert_eq!(
        keys.len(),
        manifest["entries"].as_array().unwrap().len() + 2,
        "{keys:?}"
    );
    assert!(common::open_uploads(&prefix).await.is_empty());
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn large_parts_upload_in_several_chunks() {
    let db = TestDb::new("ex_chunks").await;
    let pg = db.pg().await;
    // ~22 MiB of md5 text (~12 MiB gzipped): parts of more than one 5 MiB chunk.
    pg.batch_execute(
        "CREATE TABLE big AS SELECT g AS id, string_agg(md5((g * 1000 + i)::text), '') AS h
         FROM generate_series(1, 10000) g, generate_series(1, 70) i GROUP BY g;",
    )
    .await
    .expect("seed");
    let prefix = test_prefix("ex-chunks");
    let r = run(
        args(&[
            "extract",
            "--source",
            &common::pg_url(),
            "--table",
            &db.pg_table("big"),
            "--to",
            &prefix,
            "--upload-chunk",
            "5MiB",
            "--run-id",
            "run-chunks",
        ]),
        vec![],
    )
    .await;
    let summary = r.assert_ok();
    assert!(
        summary["bytes_compressed"].as_u64().unwrap() > 10 << 20,
        "{summary}"
    );
    let (_, _, rows) = read_back(&prefix).await;
    assert_eq!(rows.len(), 10000);
    assert!(rows.iter().all(|r| r[1].as_ref().unwrap().len() == 32 * 70));
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_extract_to_local_folder() {
    let db = TestDb::new("ex_my_file").await;
    let mut my = db.my().await;
    my.query_drop("CREATE TABLE t (id INT PRIMARY KEY, t TEXT, dt DATETIME(6), f FLOAT, b VARBINARY(8)) CHARSET utf8mb4")
        .await
        .expect("create");
    my.exec_drop(
        "INSERT INTO t VALUES (1, ?, '2024-02-29 23:59:59.000001', 0.1, X'005C0A'), (2, NULL, NULL, NULL, NULL), (3, '', '1970-01-01 00:00:00', -0.0, X'')",
        ("tab\there\\ back\nslash \u{1F600}",),
    )
    .await
    .expect("insert");
    let dir = tempfile::tempdir().expect("tempdir");
    let to = format!("file://{}/out/", dir.path().display());
    let r = run(
        args(&[
            "extract",
            "--source",
            &db.mysql_url_with_db(),
            "--table",
            "t",
            "--to",
            &to,
            "--run-id",
            "run-my",
        ]),
        vec![],
    )
    .await;
    let summary = r.assert_ok();
    assert_eq!(summary["rows"], 3);
    let (_, meta, mut rows) = read_back(&to).await;
    assert_eq!(meta["columns"][2]["source_type"], "datetime(6)");
    rows.sort_by_key(|r| text(&r[0]));
    assert_eq!(
        text(&rows[0][1]).as_deref(),
        Some("tab\there\\ back\nslash \u{1F600}")
    );
    assert_eq!(
        text(&rows[0][2]).as_deref(),
        Some("2024-02-29 23:59:59.000001")
    );
    assert_eq!(text(&rows[0][3]).as_deref(), Some("0.1"));
    assert_eq!(text(&rows[0][4]).as_deref(), Some("005c0a"));
    assert!(rows[1][1..].iter().all(Option::is_none), "NULLs stay NULL");
    assert_eq!(text(&rows[2][1]).as_deref(), Some(""), "empty stays empty");
    assert_eq!(
        text(&rows[2][2]).as_deref(),
        Some("1970-01-01 00:00:00.000000")
    );
    assert_eq!(text(&rows[2][4]).as_deref(), Some(""));
    // No temporary files are left beside the parts.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_rows_write_one_empty_part_and_a_valid_manifest() {
    let db = TestDb::new("ex_empty").await;
    db.pg()
        .await
        .batch_execute("CREATE TABLE e (id int, v text)")
        .await
        .expect("create");
    let prefix = test_prefix("ex-empty");
    let r = run(
        args(&[
            "extract",
            "--source",
            &common::pg_url(),
            "--table",
            &db.pg_table("e"),
            "--to",
            &prefix,
            "--run-id",
            "r0",
        ]),
        vec![],
    )
    .await;
    let summary = r.assert_ok();
    assert_eq!(
        (summary["rows"].as_u64(), summary["parts"].as_u64()),
        (Some(0), Some(1))
    );
    let (manifest, meta, rows) = read_back(&prefix).await;
    assert!(rows.is_empty());
    assert_eq!(manifest["entries"].as_array().unwrap().len(), 1);
    assert_eq!(meta["columns"].as_array().unwrap().len(), 2);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_parts_of_an_earlier_attempt_are_removed_and_other_keys_kept() {
    let db = TestDb::new("ex_stale").await;
    db.pg()
        .await
        .batch_execute("CREATE TABLE s AS SELECT g AS id FROM generate_series(1, 10) g")
        .await
        .expect("seed");
    let prefix = test_prefix("ex-stale");
    let (bucket, key) = common::split_s3_uri(&prefix);
    let client = common::s3_client().await;
    for name in [
        "part-00007.tsv.gz",
        "part-00000.tsv.gz",
        "notes.txt",
        "part-1.tsv.gz",
    ] {
        client
            .put_object()
            .bucket(&bucket)
            .key(format!("{key}{name}"))
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"old"))
            .send()
            .await
            .expect("seed object");
    }
    let r = run(
        args(&[
            "extract",
            "--source",
            &common::pg_url(),
            "--table",
            &db.pg_table("s"),
            "--to",
            &prefix,
            "--run-id",
            "rs",
        ]),
        vec![],
    )
    .await;
    let summary = r.assert_ok();
    let removed: Vec<&str> = summary["stale_removed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(removed, vec![format!("{key}part-00007.tsv.gz").as_str()]);
    let keys = common::list_keys(&prefix).await;
    let names: Vec<&str> = keys.iter().map(|k| k.rsplit('/').next().unwrap()).collect();
    assert!(
        names.contains(&"notes.txt") && names.contains(&"part-1.tsv.gz"),
        "{names:?}"
    );
    assert!(!names.contains(&"part-00007.tsv.gz"), "{names:?}");
    let (_, _, rows) = read_back(&prefix).await;
    assert_eq!(
        rows.len(),
        10,
        "part-00000 was overwritten by the new extract"
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sharded_sources_fill_one_manifest_with_a_shard_column() {
    let a = TestDb::new("ex_shard_a").await;
    let b = TestDb::new("ex_shard_b").await;
    for (db, first) in [(&a, 1), (&b, 100)] {
        let mut my = db.my().await;
        my.query_drop("CREATE TABLE u (id INT PRIMARY KEY, name VARCHAR(20))")
            .await
            .expect("create");
        my.exec_drop(
            "INSERT INTO u VALUES (?, 'x'), (?, 'y')",
            (first, first + 1),
        )
        .await
        .expect("insert");
    }
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let cfg = cfg_dir.path().join("ductwork.toml");
    std::fs::write(
        &cfg,
        format!(
            "[connections.shard_a]\nurl = \"{}\"\n[connections.shard_b]\nurl = \"{}\"\n",
            a.mysql_url_with_db(),
            b.mysql_url_with_db()
        ),
    )
    .expect("config");
    let prefix = test_prefix("ex-shard");
    let r = run(
        args(&[
            "--config",
            cfg.to_str().unwrap(),
            "extract",
            "--source",
            "shard_a",
            "--source",
            "shard_b",
            "--sql",
            "SELECT id, name FROM u",
            "--shard-column",
            "shard",
            "--to",
            &prefix,
            "--run-id",
            "rsh",
        ]),
        vec![],
    )
    .await;
    assert_eq!(r.assert_ok()["rows"], 4);
    let (_, meta, mut rows) = read_back(&prefix).await;
    assert_eq!(meta["columns"][2]["name"], "shard");
    rows.sort_by_key(|r| text(&r[0]).unwrap().parse::<i32>().unwrap());
    let got: Vec<(String, String)> = rows
        .iter()
        .map(|r| (text(&r[0]).unwrap(), text(&r[2]).unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("1".into(), "shard_a".into()),
            ("2".into(), "shard_a".into()),
            ("100".into(), "shard_b".into()),
            ("101".into(), "shard_b".into())
        ]
    );
    a.cleanup().await;
    b.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_sql_exits_2_with_its_sqlstate_and_leaves_nothing() {
    let prefix = test_prefix("ex-badsql");
    let r = run(
        args(&[
            "extract",
            "--source",
            &common::pg_url(),
            "--sql",
            "SELECT * FROM no_such_table_x",
            "--to",
            &prefix,
        ]),
        vec![],
    )
    .await;
    let line = r.assert_error("extract");
    assert!(
        line.contains("no_such_table_x") && line.ends_with("[SQLSTATE 42P01]"),
        "{line}"
    );
    assert_eq!(
        line.matches("does not exist").count(),
        1,
        "cause said once: {line}"
    );
    assert!(r.stdout.is_empty());
    assert_prefix_clean(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_password_exits_2_and_never_prints_it() {
    let prefix = test_prefix("ex-badpw");
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let cfg = cfg_dir.path().join("ductwork.toml");
    std::fs::write(
        &cfg,
        format!(
            "[connections.src]\nurl = \"mysql://ductwork_nobody@{}\"\npassword_env = \"SRC_PW\"\n",
            common::mysql_url()
                .trim_start_matches("mysql://")
                .split_once('@')
                .map_or("127.0.0.1:3306/test", |(_, h)| h)
        ),
    )
    .expect("config");
    let canary = "canary-Secret-7f3a9";
    let r = run(
        args(&[
            "--config",
            cfg.to_str().unwrap(),
            "extract",
            "--source",
            "src",
            "--sql",
            "SELECT 1",
            "--to",
            &prefix,
            "-v",
        ]),
        vec![("SRC_PW".into(), canary.into())],
    )
    .await;
    let line = r.assert_error("extract");
    assert!(line.contains("[MySQL 1045"), "{line}");
    assert!(!r.stderr.contains(canary) && !r.stdout.contains(canary));
    assert_prefix_clean(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_endpoint_down_exits_2_naming_the_key() {
    let db = TestDb::new("ex_s3down").await;
    db.pg()
        .await
        .batch_execute("CREATE TABLE s AS SELECT 1 AS id")
        .await
        .expect("seed");
    let r = run(
        args(&[
            "extract",
            "--source",
            &common::pg_url(),
            "--table",
            &db.pg_table("s"),
            "--to",
            "s3://ductwork-test/down/",
        ]),
        vec![("DUCTWORK_S3_ENDPOINT".into(), "http://127.0.0.1:9".into())],
    )
    .await;
    let line = r.assert_error("extract");
    assert!(
        // The lease is the first object written: the endpoint is found down before the
        // source is read.
        line.contains("key=s3://ductwork-test/down/_lease.json"),
        "{line}"
    );
    assert!(
        line.contains("could not reach the endpoint") || line.contains("dispatch"),
        "{line}"
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unwritable_local_path_exits_2() {
    let r = run(
        args(&[
            "extract",
            "--source",
            &common::pg_url(),
            "--sql",
            "SELECT 1",
            "--to",
            "file:///proc/ductwork-nope/",
        ]),
        vec![],
    )
    .await;
    let line = r.assert_error("extract");
    assert!(line.contains("/proc/ductwork-nope"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_backend_terminated_mid_stream_aborts_every_upload() {
    let prefix = test_prefix("ex-pgkill");
    let run_id = format!("pgkill-{:08x}", rand::random::<u32>());
    let app = format!("ductwork:{run_id}:extract");
    let killer = tokio::spawn(async move {
        let pg = common::pg_connect(&common::pg_url()).await;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let n: i64 = pg
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE application_name = $1 AND state = 'active' AND query LIKE 'COPY%'",
                    &[&app],
                )
                .await
                .expect("terminate")
                .get(0);
            if n > 0 {
                return true;
            }
        }
        false
    });
    let r = run(
        args(&[
            "extract",
            "--source",
            &common::pg_url(),
            "--to",
            &prefix,
            "--run-id",
            &run_id,
            "--sql",
            "SELECT g, repeat(md5(g::text), 20), pg_sleep(0.002) FROM generate_series(1, 5000) g",
        ]),
        vec![],
    )
    .await;
    assert!(killer.await.expect("killer"), "the backend was never seen");
    let line = r.assert_error("extract");
    assert!(line.contains("[SQLSTATE 57P01]"), "{line}");
    assert_prefix_clean(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_connection_killed_mid_stream_is_an_error_not_an_end_of_rows() {
    let prefix = test_prefix("ex-mykill");
    let marker = format!("mykill_{:08x}", rand::random::<u32>());
    let marker2 = marker.clone();
    let killer = tokio::spawn(async move {
        let mut my = common::my_connect(&common::mysql_url()).await;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let ids: Vec<u64> = my
                .exec(
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE ? AND INFO NOT LIKE '%PROCESSLIST%'",
                    (format!("%{marker2}%"),),
                )
                .await
                .expect("processlist");
            if let Some(id) = ids.first() {
                my.query_drop(format!("KILL {id}")).await.expect("kill");
                return true;
            }
        }
        false
    });
    let sql = format!("SELECT seq AS {marker}, SLEEP(0.002) FROM seq_1_to_5000");
    let r = run(
        args(&[
            "extract",
            "--source",
            &common::mysql_url(),
            "--sql",
            &sql,
            "--to",
            &prefix,
        ]),
        vec![],
    )
    .await;
    assert!(
        killer.await.expect("killer"),
        "the connection was never seen"
    );
    let line = r.assert_error("extract");
    // Killed while the server was sending rows: an I/O error, never a clean end of rows.
    assert!(
        line.contains("connection closed") || line.contains("[MySQL"),
        "{line}"
    );
    assert_prefix_clean(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nul_in_text_is_an_error_naming_column_and_key_unless_replaced() {
    let db = TestDb::new("ex_nul").await;
    let mut my = db.my().await;
    my.query_drop("CREATE TABLE n (id INT PRIMARY KEY, note TEXT)")
        .await
        .expect("create");
    my.exec_drop(
        "INSERT INTO n VALUES (7, ?), (8, 'fine')",
        (b"a\0b".to_vec(),),
    )
    .await
    .expect("insert");
    let prefix = test_prefix("ex-nul");
    let base = args(&[
        "extract",
        "--source",
        &db.mysql_url_with_db(),
        "--table",
        "n",
        "--to",
        &prefix,
    ]);
    let r = run(base.clone(), vec![]).await;
    let line = r.assert_error("extract");
    assert!(
        line.contains("table=n")
            && line.contains("column \\\"note\\\"")
            && line.contains("\\\"7\\\""),
        "{line}"
    );
    assert!(line.contains("NUL"), "{line}");
    assert_prefix_clean(&prefix).await;

    let mut replace = base.clone();
    replace.extend(args(&["--nul", "replace"]));
    let summary = run(replace, vec![]).await.assert_ok();
    assert_eq!(summary["counts"]["nul_replaced"], 1);
    let (_, _, mut rows) = read_back(&prefix).await;
    rows.sort_by_key(|r| text(&r[0]));
    assert_eq!(text(&rows[0][1]).as_deref(), Some("a\u{FFFD}b"));
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_zero_dates_are_an_error_unless_mapped_to_null() {
    let db = TestDb::new("ex_zero").await;
    let mut my = db.my().await;
    my.query_drop("SET SESSION sql_mode = ''")
        .await
        .expect("sql_mode");
    my.query_drop("CREATE TABLE z (id INT PRIMARY KEY, d DATE, dt DATETIME)")
        .await
        .expect("create");
    my.query_drop("INSERT INTO z VALUES (1, '0000-00-00', '2024-01-01 00:00:00'), (2, '2024-01-01', '0000-00-00 00:00:00')")
        .await
        .expect("insert");
    let prefix = test_prefix("ex-zero");
    let base = args(&[
        "extract",
        "--source",
        &db.mysql_url_with_db(),
        "--table",
        "z",
        "--to",
        &prefix,
    ]);
    let line = run(base.clone(), vec![])
        .await
        .assert_error("extract")
        .to_owned();
    assert!(
        line.contains("zero date") && line.contains("--zero-dates null"),
        "{line}"
    );
    let mut null = base;
    null.extend(args(&["--zero-dates", "null"]));
    let summary = run(null, vec![]).await.assert_ok();
    assert_eq!(summary["counts"]["zero_dates_nulled"], 2);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn values_redshift_cannot_hold_are_errors_unless_configured() {
    let db = TestDb::new("ex_special").await;
    db.pg()
        .await
        .batch_execute(
            "CREATE TABLE sp (id int, ts timestamp, n numeric, f float8);
             INSERT INTO sp VALUES (1, 'infinity', 1, 1), (2, '2024-01-01', 'NaN', 2), (3, '0044-03-15 BC', 3, '-Infinity');",
        )
        .await
        .expect("seed");
    let prefix = test_prefix("ex-special");
    let base = args(&[
        "extract",
        "--source",
        &common::pg_url(),
        "--table",
        &db.pg_table("sp"),
        "--to",
        &prefix,
    ]);
    let line = run(base.clone(), vec![])
        .await
        .assert_error("extract")
        .to_owned();
    assert!(
        line.contains("infinity") && line.contains("--special-values"),
        "{line}"
    );
    let mut null = base;
    null.extend(args(&["--special-values", "null"]));
    let summary = run(null, vec![]).await.assert_ok();
    assert_eq!(summary["counts"]["special_values_nulled"], 4);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn text_equal_to_the_null_marker_is_an_error() {
    let prefix = test_prefix("ex-marker");
    let r = run(
        args(&[
            "extract",
            "--source",
            &common::pg_url(),
            "--sql",
            "SELECT 1 AS id, E'\\x01' AS v",
            "--to",
            &prefix,
        ]),
        vec![],
    )
    .await;
    let line = r.assert_error("extract");
    assert!(line.contains("NULL marker"), "{line}");
    assert_prefix_clean(&prefix).await;
    // The marker byte inside longer text is escaped and round-trips.
    let r = run(
        args(&[
            "extract",
            "--source",
            &common::pg_url(),
            "--sql",
            "SELECT 1 AS id, E'a\\x01b' AS v",
            "--to",
            &prefix,
        ]),
        vec![],
    )
    .await;
    r.assert_ok();
    let (_, _, rows) = read_back(&prefix).await;
    assert_eq!(rows[0][1].as_deref(), Some(&b"a\x01b"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_prints_the_plan_and_touches_nothing() {
    let prefix = test_prefix("ex-dry");
    let r = run(
        args(&[
            "--dry-run",
            "extract",
            "--source",
            "postgres://u:pw-canary-123@127.0.0.1:1/x",
            "--sql",
            "SELECT 1",
            "--to",
            &prefix,
        ]),
        vec![],
    )
    .await;
    let summary = r.assert_ok();
    assert_eq!(summary["dry_run"], true);
    assert!(summary["queries"][0]["sql"]
        .as_str()
        .unwrap()
        .starts_with("COPY (SELECT 1) TO STDOUT"));
    assert!(!r.stdout.contains("pw-canary-123") && !r.stderr.contains("pw-canary-123"));
    assert!(common::list_keys(&prefix).await.is_empty());
}

/// Writes a `_lease.json` naming `pid` on this host, expiring in an hour.
async fn plant_lease(prefix: &str, pid: u32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let start: Option<u64> = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().nth(19))
        .and_then(|v| v.parse().ok());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let body = serde_json::json!({
        "run_id": "other-attempt", "host": host.trim(), "pid": pid, "pid_start": start,
        "acquired": now, "expires": now + 3600,
    });
    let (bucket, key) = common::split_s3_uri(&format!("{prefix}_lease.json"));
    common::s3_client()
        .await
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(serde_json::to_vec(&body).expect("json").into())
        .send()
        .await
        .expect("planting a lease");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_lease_refuses_a_second_attempt_and_a_dead_holders_lease_is_taken_over() {
    let db = TestDb::new("ex_lease").await;
    db.pg()
        .await
        .batch_execute("CREATE TABLE s AS SELECT g AS id FROM generate_series(1, 10) g")
        .await
        .expect("seed");
    let prefix = test_prefix("ex_lease");
    let extract = || {
        args(&[
            "extract",
            "--source",
            &common::pg_url(),
            "--table",
            &db.pg_table("s"),
            "--to",
            &prefix,
            "--run-id",
            "lease-test",
        ])
    };
    // A live process on this host holds the lease: the attempt fails at once, writes nothing.
    let mut holder = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep");
    plant_lease(&prefix, holder.id()).await;
    let r = run(extract(), vec![]).await;
    let line = r.assert_error("extract");
    assert!(line.contains("run in progress"), "{line}");
    assert!(line.contains("other-attempt"), "{line}");
    let keys = common::list_keys(&prefix).await;
    assert_eq!(keys.len(), 1, "only the planted lease: {keys:?}");
    // The holder dies (a SIGKILLed attempt): the next attempt takes the lease over, finishes
    // and releases it.
    holder.kill().expect("kill");
    holder.wait().expect("wait");
    let r = run(extract(), vec![]).await;
    assert_eq!(r.assert_ok()["rows"], 10);
    let keys = common::list_keys(&prefix).await;
    assert!(
        !keys.iter().any(|k| k.ends_with("_lease.json")),
        "the lease is released: {keys:?}"
    );
    db.cleanup().await;
}
