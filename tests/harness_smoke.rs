//! Tests of the integration-test harness itself: the in-process S3 emulator (through
//! aws-sdk-s3, including the gaps it fills over s3s-fs), `TestDb` on the real PostgreSQL and
//! MariaDB servers, and the small helpers in `tests/common`.

mod common;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use common::{s3emu, S3Emulator, TestDb, TEST_BUCKET};

const MIB: usize = 1024 * 1024;

/// HTTP status and S3 error code of a failed SDK call.
fn status_and_code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> (u16, String) {
    let status = err.raw_response().map_or(0, |r| r.status().as_u16());
    (status, err.code().unwrap_or_default().to_string())
}

/// Deterministic, part-specific filler so a reordering would be visible.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

async fn create_upload(client: &aws_sdk_s3::Client, key: &str) -> String {
    client
        .create_multipart_upload()
        .bucket(TEST_BUCKET)
        .key(key)
        .send()
        .await
        .expect("CreateMultipartUpload")
        .upload_id()
        .expect("upload id")
        .to_string()
}

async fn upload_part(
    client: &aws_sdk_s3::Client,
    key: &str,
    upload_id: &str,
    n: i32,
    body: Vec<u8>,
) -> CompletedPart {
    let out = client
        .upload_part()
        .bucket(TEST_BUCKET)
        .key(key)
        .upload_id(upload_id)
        .part_number(n)
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap_or_else(|e| panic!("UploadPart {n}: {e:?}"));
    CompletedPart::builder()
        .part_number(n)
        .e_tag(out.e_tag().expect("part etag"))
        .build()
}

async fn complete(
    client: &aws_sdk_s3::Client,
    key: &str,
    upload_id: &str,
    parts: Vec<CompletedPart>,
) {
    client
        .complete_multipart_upload()
        .bucket(TEST_BUCKET)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .expect("CompleteMultipartUpload");
}

fn key_of(prefix_uri: &str, rest: &str) -> String {
    format!("{}{rest}", common::split_s3_uri(prefix_uri).1)
}

// ---- S3 emulator ---------------------------------------------------------------------------

#[tokio::test]
async fn emulator_puts_gets_and_lists_by_prefix() {
    let prefix = common::test_prefix("put-get");
    let other = common::test_prefix("put-get-other");
    let client = common::s3_client().await;
    let mut expected = Vec::new();
    for (i, name) in ["a/1.tsv.gz", "a/2.tsv.gz", "b/manifest.json"]
        .into_iter()
        .enumerate()
    {
        let key = key_of(&prefix, name);
        client
            .put_object()
            .bucket(TEST_BUCKET)
            .key(&key)
            .body(ByteStream::from(format!("body {i}").into_bytes()))
            .send()
            .await
            .expect("PutObject");
        expected.push(key);
    }
    client
        .put_object()
        .bucket(TEST_BUCKET)
        .key(key_of(&other, "x"))
        .body(ByteStream::from_static(b"elsewhere"))
        .send()
        .await
        .expect("PutObject other");

    expected.sort();
    assert_eq!(common::list_keys(&prefix).await, expected);
    assert_eq!(
        common::list_keys(&format!("{prefix}a/")).await,
        expected[..2].to_vec()
    );
    assert_eq!(
        common::get_object(&format!("{prefix}a/2.tsv.gz")).await,
        b"body 1"
    );
    let head = client
        .head_object()
        .bucket(TEST_BUCKET)
        .key(key_of(&prefix, "b/manifest.json"))
        .send()
        .await
        .expect("HeadObject");
    assert_eq!(head.content_length(), Some(6));

    let err = client
        .get_object()
        .bucket(TEST_BUCKET)
        .key(key_of(&prefix, "missing"))
        .send()
        .await
        .expect_err("missing key");
    assert_eq!(status_and_code(&err), (404, "NoSuchKey".to_string()));
}

#[tokio::test]
async fn emulator_multipart_round_trips_two_5mib_parts_and_a_tail_with_sorted_list_parts() {
    let prefix = common::test_prefix("multipart");
    let key = key_of(&prefix, "part-0001.tsv.gz");
    let client = common::s3_client().await;
    let bodies = [pattern(5 * MIB, 1), pattern(5 * MIB, 2), pattern(1234, 3)];

    let upload_id = create_upload(&client, &key).await;
    // Upload out of order; ListParts must still come back sorted.
    let p3 = upload_part(&client, &key, &upload_id, 3, bodies[2].clone()).await;
    let p1 = upload_part(&client, &key, &upload_id, 1, bodies[0].clone()).await;
    let p2 = upload_part(&client, &key, &upload_id, 2, bodies[1].clone()).await;

    let parts = client
        .list_parts()
        .bucket(TEST_BUCKET)
        .key(&key)
        .upload_id(&upload_id)
        .send()
        .await
        .expect("ListParts");
    let listed: Vec<(i32, i64, String)> = parts
        .parts()
        .iter()
        .map(|p| {
            (
                p.part_number().unwrap_or(0),
                p.size().unwrap_or(-1),
                p.e_tag().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected: Vec<(i32, i64, String)> = [&p1, &p2, &p3]
        .iter()
        .zip(&bodies)
        .map(|(p, b)| {
            (
                p.part_number().unwrap_or(0),
                i64::try_from(b.len()).expect("len"),
                p.e_tag().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(
        common::open_uploads(&prefix).await,
        vec![(key.clone(), upload_id.clone())]
    );

    complete(&client, &key, &upload_id, vec![p1, p2, p3]).await;

    let got = common::get_object(&format!("s3://{TEST_BUCKET}/{key}")).await;
    assert_eq!(got.len(), 10 * MIB + 1234);
    assert!(got == bodies.concat(), "object differs from its parts");
    assert!(common::open_uploads(&prefix).await.is_empty());
    // A completed upload is gone: further parts are refused with 404.
    let err = client
        .upload_part()
        .bucket(TEST_BUCKET)
        .key(&key)
        .upload_id(&upload_id)
        .part_number(4)
        .body(ByteStream::from_static(b"late"))
        .send()
        .await
        .expect_err("part after complete");
    assert_eq!(status_and_code(&err), (404, "NoSuchUpload".to_string()));
}

#[tokio::test]
async fn emulator_abort_discards_the_upload_and_its_parts() {
    let prefix = common::test_prefix("abort");
    let key = key_of(&prefix, "part-0001.tsv.gz");
    let client = common::s3_client().await;
    let upload_id = create_upload(&client, &key).await;
    upload_part(&client, &key, &upload_id, 1, pattern(1000, 9)).await;
    let part_file = common::s3()
        .root
        .join(format!(".upload_id-{upload_id}.part-1"));
    assert!(part_file.exists(), "s3s-fs part file layout changed");

    client
        .abort_multipart_upload()
        .bucket(TEST_BUCKET)
        .key(&key)
        .upload_id(&upload_id)
        .send()
        .await
        .expect("AbortMultipartUpload");

    assert!(!part_file.exists());
    assert!(common::open_uploads(&prefix).await.is_empty());
    assert!(common::list_keys(&prefix).await.is_empty());
    let err = client
        .abort_multipart_upload()
        .bucket(TEST_BUCKET)
        .key(&key)
        .upload_id(&upload_id)
        .send()
        .await
        .expect_err("second abort");
    assert_eq!(status_and_code(&err), (404, "NoSuchUpload".to_string()));
}

#[tokio::test]
async fn emulator_lists_open_uploads_but_not_aborted_or_completed_ones() {
    let prefix = common::test_prefix("list-uploads");
    let client = common::s3_client().await;

    let open_a = key_of(&prefix, "run1/a.tsv.gz");
    let open_b = key_of(&prefix, "run1/ключ ✓ b.tsv.gz"); // non-ASCII survives the file names
    let open_c = key_of(&prefix, "top.tsv.gz");
    let aborted = key_of(&prefix, "run1/aborted.tsv.gz");
    let completed = key_of(&prefix, "run1/completed.tsv.gz");
    let elsewhere = key_of(&common::test_prefix("list-uploads-other"), "x.tsv.gz");

    let id_a = create_upload(&client, &open_a).await;
    let id_b = create_upload(&client, &open_b).await;
    let id_c = create_upload(&client, &open_c).await;
    let id_aborted = create_upload(&client, &aborted).await;
    client
        .abort_multipart_upload()
        .bucket(TEST_BUCKET)
        .key(&aborted)
        .upload_id(&id_aborted)
        .send()
        .await
        .expect("abort");
    let id_completed = create_upload(&client, &completed).await;
    let part = upload_part(&client, &completed, &id_completed, 1, b"done".to_vec()).await;
    complete(&client, &completed, &id_completed, vec![part]).await;
    let id_elsewhere = create_upload(&client, &elsewhere).await;

    let mut expected = vec![
        (open_a.clone(), id_a.clone()),
        (open_b.clone(), id_b.clone()),
        (open_c.clone(), id_c.clone()),
    ];
    expected.sort();
    assert_eq!(common::open_uploads(&prefix).await, expected);
    assert_eq!(
        common::open_uploads(&format!("{prefix}run1/")).await,
        expected[..2].to_vec()
    );

    // Paging one at a time visits the same uploads in the same order.
    let (_, prefix_key) = common::split_s3_uri(&prefix);
    let mut paged = Vec::new();
    let (mut km, mut um) = (None::<String>, None::<String>);
    loop {
        let page = client
            .list_multipart_uploads()
            .bucket(TEST_BUCKET)
            .prefix(&prefix_key)
            .max_uploads(1)
            .set_key_marker(km.take())
            .set_upload_id_marker(um.take())
            .send()
            .await
            .expect("ListMultipartUploads page");
        assert!(page.uploads().len() <= 1);
        for u in page.uploads() {
            paged.push((
                u.key().unwrap_or_default().to_string(),
                u.upload_id().unwrap_or_default().to_string(),
            ));
            assert!(u.initiated().is_some());
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        km = page.next_key_marker().map(str::to_string);
        um = page.next_upload_id_marker().map(str::to_string);
    }
    assert_eq!(paged, expected);

    // With a delimiter, run1/ collapses into one common prefix.
    let grouped = client
        .list_multipart_uploads()
        .bucket(TEST_BUCKET)
        .prefix(&prefix_key)
        .delimiter("/")
        .send()
        .await
        .expect("ListMultipartUploads with delimiter");
    let cps: Vec<&str> = grouped
        .common_prefixes()
        .iter()
        .filter_map(|c| c.prefix())
        .collect();
    assert_eq!(cps, vec![format!("{prefix_key}run1/").as_str()]);
    let keys: Vec<&str> = grouped.uploads().iter().filter_map(|u| u.key()).collect();
    assert_eq!(keys, vec![open_c.as_str()]);

    for (key, id) in [
        (&open_a, &id_a),
        (&open_b, &id_b),
        (&open_c, &id_c),
        (&elsewhere, &id_elsewhere),
    ] {
        client
            .abort_multipart_upload()
            .bucket(TEST_BUCKET)
            .key(key)
            .upload_id(id)
            .send()
            .await
            .expect("abort at end");
    }
    assert!(common::open_uploads(&prefix).await.is_empty());

    let err = client
        .list_multipart_uploads()
        .bucket("no-such-bucket")
        .send()
        .await
        .expect_err("missing bucket");
    assert_eq!(status_and_code(&err), (404, "NoSuchBucket".to_string()));
}

#[tokio::test]
async fn emulator_if_none_match_star_gives_412_on_an_existing_key() {
    let prefix = common::test_prefix("if-none-match");
    let key = key_of(&prefix, "_manifest.json");
    let client = common::s3_client().await;
    client
        .put_object()
        .bucket(TEST_BUCKET)
        .key(&key)
        .if_none_match("*")
        .body(ByteStream::from_static(b"first"))
        .send()
        .await
        .expect("conditional put of a new key");
    let err = client
        .put_object()
        .bucket(TEST_BUCKET)
        .key(&key)
        .if_none_match("*")
        .body(ByteStream::from_static(b"second"))
        .send()
        .await
        .expect_err("conditional put of an existing key");
    assert_eq!(
        status_and_code(&err),
        (412, "PreconditionFailed".to_string())
    );
    assert_eq!(
        common::get_object(&format!("s3://{TEST_BUCKET}/{key}")).await,
        b"first"
    );

    // The same rule on CompleteMultipartUpload.
    let upload_id = create_upload(&client, &key).await;
    let part = upload_part(&client, &key, &upload_id, 1, b"third".to_vec()).await;
    let err = client
        .complete_multipart_upload()
        .bucket(TEST_BUCKET)
        .key(&key)
        .upload_id(&upload_id)
        .if_none_match("*")
        .multipart_upload(CompletedMultipartUpload::builder().parts(part).build())
        .send()
        .await
        .expect_err("conditional complete onto an existing key");
    assert_eq!(
        status_and_code(&err),
        (412, "PreconditionFailed".to_string())
    );
    assert_eq!(
        common::get_object(&format!("s3://{TEST_BUCKET}/{key}")).await,
        b"first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn emulator_conditional_put_lets_exactly_one_racing_writer_win() {
    let prefix = common::test_prefix("if-none-match-race");
    let key = key_of(&prefix, "_manifest.json");
    let client = common::s3_client().await;
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let client = client.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let res = client
                .put_object()
                .bucket(TEST_BUCKET)
                .key(&key)
                .if_none_match("*")
                .body(ByteStream::from(pattern(256 * 1024, i)))
                .send()
                .await;
            (i, res.map(|_| ()).map_err(|e| status_and_code(&e)))
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (i, res) = task.await.expect("join");
        match res {
            Ok(()) => winners.push(i),
            Err(status) => assert_eq!(status, (412, "PreconditionFailed".to_string())),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let got = common::get_object(&format!("s3://{TEST_BUCKET}/{key}")).await;
    assert!(
        got == pattern(256 * 1024, winners[0]),
        "stored body is not the winner's"
    );
}

#[tokio::test]
async fn emulator_unknown_upload_id_gives_404_no_such_upload() {
    let prefix = common::test_prefix("unknown-upload");
    let key = key_of(&prefix, "part.tsv.gz");
    let client = common::s3_client().await;
    // A real upload on another key: its id must not be accepted for this key.
    let other_key = key_of(&prefix, "other.tsv.gz");
    let other_id = create_upload(&client, &other_key).await;

    for bogus in [
        "0b5e3a4e-58a3-4d6e-9a57-2b1f5cd0e9aa",
        "not-an-upload-id",
        other_id.as_str(),
    ] {
        let want = (404, "NoSuchUpload".to_string());
        let err = client
            .upload_part()
            .bucket(TEST_BUCKET)
            .key(&key)
            .upload_id(bogus)
            .part_number(1)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .expect_err("UploadPart");
        assert_eq!(status_and_code(&err), want, "UploadPart {bogus}");
        let err = client
            .list_parts()
            .bucket(TEST_BUCKET)
            .key(&key)
            .upload_id(bogus)
            .send()
            .await
            .expect_err("ListParts");
        assert_eq!(status_and_code(&err), want, "ListParts {bogus}");
        let err = client
            .complete_multipart_upload()
            .bucket(TEST_BUCKET)
            .key(&key)
            .upload_id(bogus)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .parts(
                        CompletedPart::builder()
                            .part_number(1)
                            .e_tag("\"x\"")
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect_err("CompleteMultipartUpload");
        assert_eq!(status_and_code(&err), want, "Complete {bogus}");
        let err = client
            .abort_multipart_upload()
            .bucket(TEST_BUCKET)
            .key(&key)
            .upload_id(bogus)
            .send()
            .await
            .expect_err("AbortMultipartUpload");
        assert_eq!(status_and_code(&err), want, "Abort {bogus}");
    }
    // The other key's upload is untouched.
    assert_eq!(
        common::open_uploads(&prefix).await,
        vec![(other_key.clone(), other_id.clone())]
    );
    client
        .abort_multipart_upload()
        .bucket(TEST_BUCKET)
        .key(&other_key)
        .upload_id(&other_id)
        .send()
        .await
        .expect("abort");
}

#[tokio::test]
async fn emulator_rejects_a_wrong_secret_with_403() {
    let bad = common::s3_client_for(&common::s3().endpoint, s3emu::ACCESS_KEY, "wrong");
    let err = bad
        .list_objects_v2()
        .bucket(TEST_BUCKET)
        .send()
        .await
        .expect_err("wrong secret");
    assert_eq!(
        status_and_code(&err),
        (403, "SignatureDoesNotMatch".to_string())
    );
    let unknown = common::s3_client_for(&common::s3().endpoint, "nobody", s3emu::SECRET_KEY);
    let err = unknown
        .put_object()
        .bucket(TEST_BUCKET)
        .key("x")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("unknown access key");
    assert_eq!(status_and_code(&err).0, 403);
}

/// A private emulator from a plain `#[test]` (no ambient runtime); dropping it stops the
/// server and removes its temp root.
#[test]
fn emulator_starts_from_a_sync_test_and_stops_on_drop() {
    let emu = S3Emulator::start();
    emu.create_bucket("private-bucket").expect("create bucket");
    assert!(emu.endpoint.starts_with("http://127.0.0.1:"));
    let endpoint = emu.endpoint.clone();
    let root = emu.root.clone();
    let addr = emu.addr;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = common::s3_client_for(&endpoint, s3emu::ACCESS_KEY, s3emu::SECRET_KEY);
        client
            .put_object()
            .bucket("private-bucket")
            .key("k")
            .body(ByteStream::from_static(b"v"))
            .send()
            .await
            .expect("put");
        let buckets = client.list_buckets().send().await.expect("ListBuckets");
        let names: Vec<&str> = buckets.buckets().iter().filter_map(|b| b.name()).collect();
        assert_eq!(names, vec!["private-bucket"]);
    });
    assert!(root.join("private-bucket").join("k").is_file());

    drop(emu);
    assert!(
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)).is_err(),
        "still listening after drop"
    );
    assert!(!root.exists(), "temp root not removed");
}

// ---- databases ------------------------------------------------------------------------------

async fn pg_schema_exists(name: &str) -> bool {
    let pg = common::pg_connect(&common::pg_url()).await;
    let row = pg
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
            &[&name],
        )
        .await
        .expect("pg_namespace");
    row.get::<_, i64>(0) == 1
}

async fn my_db_exists(name: &str) -> bool {
    use mysql_async::prelude::Queryable as _;
    let mut my = common::my_connect(&common::mysql_url()).await;
    let n: Option<i64> = my
        .exec_first(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = ?",
            (name,),
        )
        .await
        .expect("schemata");
    let _ = my.disconnect().await;
    n == Some(1)
}

#[tokio::test]
async fn test_db_creates_isolated_schema_and_database_and_cleanup_drops_them() {
    use mysql_async::prelude::Queryable as _;
    let db = TestDb::new("Harness Smoke/TestDb").await;
    assert!(
        db.name.starts_with("t_harness_smoke_testdb_"),
        "{}",
        db.name
    );
    assert!(common::embedded_unix_secs(&db.name).is_some());
    assert!(pg_schema_exists(&db.pg_schema).await);
    assert!(my_db_exists(&db.my_db).await);

    // PostgreSQL: unqualified names land in the test's schema.
    let pg = db.pg().await;
    pg.batch_execute("CREATE TABLE t (id int PRIMARY KEY, s text); INSERT INTO t VALUES (1, 'é✓')")
        .await
        .expect("create table");
    let other = common::pg_connect(&db.pg_url_with_schema()).await;
    let row = other
        .query_one(&format!("SELECT s FROM {}", db.pg_table("t")), &[])
        .await
        .expect("qualified select");
    assert_eq!(row.get::<_, String>(0), "é✓");

    // MariaDB: the URL selects the database, and 4-byte characters survive.
    let mut my = db.my().await;
    my.query_drop("CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(20))")
        .await
        .expect("create table");
    my.exec_drop("INSERT INTO t VALUES (1, ?)", ("🦀 é",))
        .await
        .expect("insert");
    let current: Option<String> = my.query_first("SELECT DATABASE()").await.expect("db");
    assert_eq!(current.as_deref(), Some(db.my_db.as_str()));
    let s: Option<String> = my.query_first("SELECT s FROM t").await.expect("select");
    assert_eq!(s.as_deref(), Some("🦀 é"));
    assert!(db.mysql_url_with_db().ends_with(&format!("/{}", db.my_db)));
    let _ = my.disconnect().await;
    drop(pg);
    drop(other);

    let name = db.name.clone();
    db.cleanup().await;
    assert!(!pg_schema_exists(&name).await);
    assert!(!my_db_exists(&name).await);
}

#[tokio::test]
async fn test_db_dropped_without_cleanup_still_drops_both() {
    let db = TestDb::new("dropped").await;
    let name = db.name.clone();
    db.pg()
        .await
        .batch_execute("CREATE TABLE leftover (id int)")
        .await
        .expect("create table");
    drop(db);
    assert!(!pg_schema_exists(&name).await);
    assert!(!my_db_exists(&name).await);
}

#[tokio::test]
async fn sweep_drops_only_t_schemas_and_databases_older_than_3_hours() {
    use mysql_async::prelude::Queryable as _;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let stale = common::unique_name_at("sweep", now - 4 * 3600);
    let young = common::unique_name_at("sweep", now - 2 * 3600);
    let pg = common::pg_connect(&common::pg_url()).await;
    let mut my = common::my_connect(&common::mysql_url()).await;
    for name in [&stale, &young] {
        pg.batch_execute(&format!("CREATE SCHEMA \"{name}\""))
            .await
            .expect("create schema");
        my.query_drop(format!("CREATE DATABASE `{name}`"))
            .await
            .expect("create database");
    }

    common::sweep_stale(&pg, &mut my).await;

    assert!(!pg_schema_exists(&stale).await);
    assert!(!my_db_exists(&stale).await);
    assert!(pg_schema_exists(&young).await);
    assert!(my_db_exists(&young).await);
    pg.batch_execute(&format!("DROP SCHEMA \"{young}\""))
        .await
        .expect("drop young schema");
    my.query_drop(format!("DROP DATABASE `{young}`"))
        .await
        .expect("drop young database");
    let _ = my.disconnect().await;
}

#[test]
fn unique_names_are_sanitised_bounded_and_parse_back() {
    let name = common::unique_name_at(&"Weird-Name!".repeat(10), 1_700_000_000);
    assert!(name.len() <= 63, "{name}");
    assert!(name.starts_with("t_weird_name_weird_name_"), "{name}");
    assert!(name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
    assert_eq!(common::embedded_unix_secs(&name), Some(1_700_000_000));
    assert_eq!(common::embedded_unix_secs("t_plain_table"), None);
    assert_eq!(common::embedded_unix_secs("test"), None);
    assert_eq!(common::embedded_unix_secs("t_x_1700000000_ABCDEF"), None);
}

// ---- other helpers ---------------------------------------------------------------------------

#[test]
fn test_prefixes_are_unique_and_in_the_test_bucket() {
    let a = common::test_prefix("same name");
    let b = common::test_prefix("same name");
    assert_ne!(a, b);
    assert!(
        a.starts_with("s3://ductwork-test/same-name-") && a.ends_with('/'),
        "{a}"
    );
    assert_eq!(common::split_s3_uri(&a).0, TEST_BUCKET);
    assert!(common::s3().root.join(TEST_BUCKET).is_dir());
}

#[test]
fn gunzip_reads_every_member_of_a_multi_member_stream() {
    use std::io::Write as _;
    let mut stream = Vec::new();
    for member in [&b"a\tb\n"[..], &b"c\td\n"[..]] {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(member).expect("write");
        stream.extend(enc.finish().expect("finish"));
    }
    assert_eq!(common::gunzip(&stream), b"a\tb\nc\td\n");
}

#[test]
fn ductwork_command_runs_the_binary_with_hermetic_env() {
    let mut cmd = common::ductwork();
    let envs: std::collections::HashMap<String, Option<String>> = cmd
        .get_envs()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.map(|v| v.to_string_lossy().into_owned()),
            )
        })
        .collect();
    let get = |k: &str| envs.get(k).cloned().flatten();
    assert_eq!(
        get("DUCTWORK_S3_ENDPOINT"),
        Some(common::s3().endpoint.clone())
    );
    assert_eq!(get("AWS_ACCESS_KEY_ID").as_deref(), Some("test"));
    assert_eq!(get("AWS_SECRET_ACCESS_KEY").as_deref(), Some("test"));
    assert_eq!(get("AWS_REGION").as_deref(), Some("us-east-1"));
    assert_eq!(get("AWS_EC2_METADATA_DISABLED").as_deref(), Some("true"));
    for removed in [
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "DUCTWORK_CONFIG",
        "DUCTWORK_RUN_ID",
        "PGPASSWORD",
        "MYSQL_PWD",
    ] {
        assert_eq!(envs.get(removed), Some(&None), "{removed} not removed");
    }
    let cwd = cmd.get_current_dir().expect("cwd").to_path_buf();
    assert!(cwd.is_dir());
    assert_eq!(std::fs::read_dir(&cwd).expect("read cwd").count(), 0);
    assert_ne!(cwd, common::ductwork().get_current_dir().expect("cwd"));

    // The command names the built binary. (Its --help text is the CLI's business: the
    // binary may still be a stub, so only check that it runs to an exit status.)
    let program = std::path::PathBuf::from(cmd.get_program());
    assert_eq!(
        program.file_name().and_then(|n| n.to_str()),
        Some("ductwork")
    );
    assert!(program.is_file(), "{} missing", program.display());
    let out = cmd.arg("--help").output().expect("run ductwork --help");
    assert!(out.status.code().is_some(), "ductwork --help died: {out:?}");
}
