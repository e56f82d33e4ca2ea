//! Shared helpers for the integration tests (STYLE §7, SPEC §11).
//!
//! Each test file does `mod common;`. Services: PostgreSQL (`DUCTWORK_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`), MariaDB (`DUCTWORK_TEST_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test`) and one in-process S3 emulator per test binary
//! ([`s3()`], bucket [`TEST_BUCKET`]). A missing database server makes the test fail with a
//! hint; nothing is ever skipped.
//!
//! Isolation: [`TestDb::new`] gives each test its own PostgreSQL schema and MariaDB database
//! named `t_<test>_<unix secs>_<6 hex>`; [`test_prefix`] gives it its own S3 prefix. Set
//! `DUCTWORK_TEST_KEEP=1` to keep a test's schema and database for debugging.

#![allow(dead_code)]

pub mod faultproxy;
pub mod faults;
pub mod httpfault;
pub mod s3emu;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use s3emu::S3Emulator;

/// The bucket every test binary's shared emulator has.
pub const TEST_BUCKET: &str = "ductwork-test";

/// Schemas, databases and emulator roots older than this are swept as stale.
const STALE_AFTER: Duration = Duration::from_secs(3 * 3600);

// ---- service URLs --------------------------------------------------------------------------

/// PostgreSQL for tests: `$DUCTWORK_TEST_PG_URL` or `postgres://postgres@127.0.0.1:5432/test`.
pub fn pg_url() -> String {
    std::env::var("DUCTWORK_TEST_PG_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// MariaDB/MySQL for tests: `$DUCTWORK_TEST_MYSQL_URL` or `mysql://root@127.0.0.1:3306/test`.
pub fn mysql_url() -> String {
    std::env::var("DUCTWORK_TEST_MYSQL_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "mysql://root@127.0.0.1:3306/test".to_string())
}

/// `host:port` of a URL, for error hints.
fn host_port(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}",
            u.host_str().unwrap_or("?"),
            u.port()
                .map_or_else(|| "default port".to_string(), |p| p.to_string())
        ),
        Err(_) => url.to_string(),
    }
}

/// Connects to PostgreSQL, or panics with a hint naming the server and the env var.
pub async fn pg_connect(url: &str) -> tokio_postgres::Client {
    match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
        }
        Err(e) => panic!(
            "cannot connect to PostgreSQL at {url}: {e}\n\
             hint: is PostgreSQL running on {}? (set DUCTWORK_TEST_PG_URL to use another server)",
            host_port(url)
        ),
    }
}

/// Connects to MariaDB/MySQL (with `SET NAMES utf8mb4`), or panics with a hint.
pub async fn my_connect(url: &str) -> mysql_async::Conn {
    use mysql_async::prelude::Queryable as _;
    let opts = mysql_async::Opts::from_url(url)
        .unwrap_or_else(|e| panic!("bad MySQL URL {url}: {e} (check DUCTWORK_TEST_MYSQL_URL)"));
    match mysql_async::Conn::new(opts).await {
        Ok(mut conn) => {
            conn.query_drop("SET NAMES utf8mb4")
                .await
                .expect("SET NAMES utf8mb4");
            conn
        }
        Err(e) => panic!(
            "cannot connect to MariaDB/MySQL at {url}: {e}\n\
             hint: is MariaDB running on {}? (set DUCTWORK_TEST_MYSQL_URL to use another server)",
            host_port(url)
        ),
    }
}

// ---- per-test databases --------------------------------------------------------------------

/// A PostgreSQL schema and a MariaDB database private to one test, both named
/// `t_<test>_<unix secs>_<6 hex>`.
///
/// - [`TestDb::pg`] connects with `search_path` set to the schema. ductwork itself cannot take
///   a search_path in its URL, so [`TestDb::pg_url_with_schema`] is the plain database URL and
///   tests pass ductwork schema-qualified names ([`TestDb::pg_table`]).
/// - [`TestDb::my`] connects with the database selected and `SET NAMES utf8mb4`. `sql_mode` is
///   left at the server default: Debian's MariaDB does NOT include `NO_BACKSLASH_ESCAPES`, so
///   a backslash in a string literal is an escape there (SPEC §13); tests that insert
///   backslashes use parameters or set the mode themselves. The database is created with
///   `CHARACTER SET utf8mb4` and that charset's default collation.
///
/// Call [`TestDb::cleanup`] at the end; if a test panics first, `Drop` drops both from a
/// helper thread.
pub struct TestDb {
    /// `t_<test>_<unix secs>_<6 hex>`, also the schema and database name.
    pub name: String,
    pub pg_schema: String,
    pub my_db: String,
    cleaned: bool,
}

static SWEPT: AtomicBool = AtomicBool::new(false);

impl TestDb {
    /// Sweeps stale `t_%` schemas/databases (once per process), then creates this test's.
    pub async fn new(test_name: &str) -> TestDb {
        use mysql_async::prelude::Queryable as _;
        let name = unique_name(test_name);
        let pg = pg_connect(&pg_url()).await;
        let mut my = my_connect(&mysql_url()).await;
        if !SWEPT.swap(true, Ordering::SeqCst) {
            sweep_stale(&pg, &mut my).await;
        }
        pg.batch_execute(&format!("CREATE SCHEMA \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("CREATE SCHEMA {name}: {e}"));
        my.query_drop(format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = my.disconnect().await;
        TestDb {
            pg_schema: name.clone(),
            my_db: name.clone(),
            name,
            cleaned: false,
        }
    }

    /// A PostgreSQL client whose `search_path` is this test's schema.
    pub async fn pg(&self) -> tokio_postgres::Client {
        let client = pg_connect(&pg_url()).await;
        client
            .batch_execute(&format!("SET search_path TO \"{}\"", self.pg_schema))
            .await
            .expect("SET search_path");
        client
    }

    /// A MariaDB connection with this test's database selected and `SET NAMES utf8mb4`
    /// (`sql_mode` is the server default; see the type's doc).
    pub async fn my(&self) -> mysql_async::Conn {
        my_connect(&self.mysql_url_with_db()).await
    }

    /// The PostgreSQL URL to give ductwork. It names the database only: qualify table names
    /// with [`TestDb::pg_schema`] (see [`TestDb::pg_table`]).
    pub fn pg_url_with_schema(&self) -> String {
        pg_url()
    }

    /// `<schema>.<table>` for ductwork arguments and SQL.
    pub fn pg_table(&self, table: &str) -> String {
        format!("{}.{table}", self.pg_schema)
    }

    /// The MariaDB URL with this test's database as its path.
    pub fn mysql_url_with_db(&self) -> String {
        let base = mysql_url();
        let mut url = url::Url::parse(&base).unwrap_or_else(|e| {
            panic!("bad MySQL URL {base}: {e} (check DUCTWORK_TEST_MYSQL_URL)")
        });
        url.set_path(&format!("/{}", self.my_db));
        url.to_string()
    }

    /// Drops the schema (CASCADE) and the database. Panics if either drop fails.
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        if keep_test_data() {
            eprintln!("DUCTWORK_TEST_KEEP: kept schema/database {}", self.name);
            return;
        }
        drop_test_objects(&self.name).await.expect("TestDb cleanup");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.cleaned || keep_test_data() {
            return;
        }
        // Drop may run inside a runtime (tokio::test) or during a panic: use a private
        // runtime on a private thread and wait for it.
        let name = self.name.clone();
        let joined = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(drop_test_objects(&name))
        })
        .join();
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("TestDb drop {}: {e}", self.name),
            Err(_) => eprintln!("TestDb drop {}: cleanup thread panicked", self.name),
        }
    }
}

fn keep_test_data() -> bool {
    std::env::var("DUCTWORK_TEST_KEEP").is_ok_and(|v| v == "1")
}

/// Drops schema and database `name` on fresh connections. Lock waits are bounded so a test
/// that left a transaction open cannot hang its cleanup forever.
async fn drop_test_objects(name: &str) -> Result<(), String> {
    use mysql_async::prelude::Queryable as _;
    let mut errors = Vec::new();
    match tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await {
        Ok((pg, connection)) => {
            let task = tokio::spawn(connection);
            let sql = format!("SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
            if let Err(e) = pg.batch_execute(&sql).await {
                errors.push(format!("DROP SCHEMA {name}: {e}"));
            }
            drop(pg);
            let _ = task.await;
        }
        Err(e) => errors.push(format!("PostgreSQL connect: {e}")),
    }
    match mysql_async::Conn::from_url(mysql_url()).await {
        Ok(mut my) => {
            let _ = my.query_drop("SET SESSION lock_wait_timeout = 10").await;
            let sql = format!("DROP DATABASE IF EXISTS `{name}`");
            if let Err(e) = my.query_drop(sql).await {
                errors.push(format!("DROP DATABASE {name}: {e}"));
            }
            let _ = my.disconnect().await;
        }
        Err(e) => errors.push(format!("MariaDB connect: {e}")),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Drops `t_%` schemas and databases whose embedded unix time is more than 3 hours old.
/// Younger ones may belong to tests running right now and are left alone. Errors are
/// ignored (a parallel sweep may have dropped the same object).
pub async fn sweep_stale(pg: &tokio_postgres::Client, my: &mut mysql_async::Conn) {
    use mysql_async::prelude::Queryable as _;
    let now = unix_now();
    let stale =
        |name: &str| embedded_unix_secs(name).is_some_and(|t| t + STALE_AFTER.as_secs() < now);
    if let Ok(rows) = pg
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 't%'",
            &[],
        )
        .await
    {
        for row in rows {
            let name: String = row.get(0);
            if stale(&name) {
                let _ = pg
                    .batch_execute(&format!(
                        "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
                    ))
                    .await;
            }
        }
    }
    if let Ok(names) = my
        .query::<String, _>(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 't%'",
        )
        .await
    {
        for name in names {
            if stale(&name) {
                let _ = my
                    .query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
                    .await;
            }
        }
    }
}

/// `t_<test>_<unix secs>_<6 hex>` -> unix secs; None for any other name.
pub fn embedded_unix_secs(name: &str) -> Option<u64> {
    let mut parts = name.rsplitn(3, '_');
    let hex = parts.next()?;
    let secs = parts.next()?;
    let rest = parts.next()?;
    let ok = rest.starts_with("t_")
        && hex.len() == 6
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && (9..=11).contains(&secs.len())
        && secs.bytes().all(|b| b.is_ascii_digit());
    if ok {
        secs.parse().ok()
    } else {
        None
    }
}

/// `t_<sanitised test>_<unix secs>_<6 hex>`, at most 63 characters (PostgreSQL's limit).
pub fn unique_name(test_name: &str) -> String {
    unique_name_at(test_name, unix_now())
}

/// [`unique_name`] with a given time (tests of the sweep make old-looking names with it).
pub fn unique_name_at(test_name: &str, unix_secs: u64) -> String {
    let hex = rand::random::<u32>() & 0x00ff_ffff;
    format!("t_{}_{unix_secs}_{hex:06x}", sanitise(test_name, 40))
}

/// Lowercase ASCII letters, digits and `_` only, at most `max` characters, never empty.
fn sanitise(name: &str, max: usize) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .take(max)
        .collect();
    if s.is_empty() {
        s.push('x');
    }
    s
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---- S3 --------------------------------------------------------------------------------------

static EMULATOR: OnceLock<S3Emulator> = OnceLock::new();

/// The test binary's shared S3 emulator, started on first use with bucket [`TEST_BUCKET`].
/// Statics are never dropped, so its temp root outlives the process; roots older than
/// 3 hours are swept when the next one starts.
pub fn s3() -> &'static S3Emulator {
    EMULATOR.get_or_init(|| {
        sweep_stale_emulator_roots();
        let emu = S3Emulator::start();
        emu.create_bucket(TEST_BUCKET)
            .expect("creating the test bucket");
        emu
    })
}

fn sweep_stale_emulator_roots() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let is_root = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("ductwork-s3emu-") || n.starts_with("ductwork-cwd-"));
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if is_root && old {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A unique `s3://ductwork-test/<name>-<8 hex>/` prefix (starts the emulator if needed).
pub fn test_prefix(name: &str) -> String {
    let _ = s3();
    let mut clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.is_empty() {
        clean.push('x');
    }
    format!("s3://{TEST_BUCKET}/{clean}-{:08x}/", rand::random::<u32>())
}

/// `s3://bucket/key` -> (bucket, key). Panics on anything else.
pub fn split_s3_uri(uri: &str) -> (String, String) {
    let rest = uri
        .strip_prefix("s3://")
        .unwrap_or_else(|| panic!("not an s3:// URI: {uri}"));
    match rest.split_once('/') {
        Some((bucket, key)) => (bucket.to_string(), key.to_string()),
        None => (rest.to_string(), String::new()),
    }
}

/// An SDK client for the shared emulator (path-style, `test`/`test`, us-east-1).
pub async fn s3_client() -> aws_sdk_s3::Client {
    s3_client_for(&s3().endpoint, s3emu::ACCESS_KEY, s3emu::SECRET_KEY)
}

/// An SDK client for any emulator endpoint with the given keys.
pub fn s3_client_for(endpoint: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let creds = Credentials::new(access_key, secret_key, None, None, "ductwork-tests");
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(s3emu::REGION))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Every key under an `s3://bucket/prefix` URI (full keys, sorted).
pub async fn list_keys(prefix_uri: &str) -> Vec<String> {
    let (bucket, prefix) = split_s3_uri(prefix_uri);
    let client = s3_client().await;
    let mut keys = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(&bucket)
        .prefix(&prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.unwrap_or_else(|e| panic!("ListObjectsV2 {prefix_uri}: {e:?}"));
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
    }
    keys.sort();
    keys
}

/// The bytes of `s3://bucket/key`. Panics if it is missing.
pub async fn get_object(uri: &str) -> Vec<u8> {
    let (bucket, key) = split_s3_uri(uri);
    let out = s3_client()
        .await
        .get_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetObject {uri}: {e:?}"));
    out.body
        .collect()
        .await
        .unwrap_or_else(|e| panic!("reading {uri}: {e}"))
        .into_bytes()
        .to_vec()
}

/// Open multipart uploads under an `s3://bucket/prefix` URI, as (key, upload id), via
/// `ListMultipartUploads`.
pub async fn open_uploads(prefix_uri: &str) -> Vec<(String, String)> {
    let (bucket, prefix) = split_s3_uri(prefix_uri);
    let client = s3_client().await;
    let mut uploads = Vec::new();
    let mut key_marker: Option<String> = None;
    let mut upload_id_marker: Option<String> = None;
    loop {
        let page = client
            .list_multipart_uploads()
            .bucket(&bucket)
            .prefix(&prefix)
            .set_key_marker(key_marker.take())
            .set_upload_id_marker(upload_id_marker.take())
            .send()
            .await
            .unwrap_or_else(|e| panic!("ListMultipartUploads {prefix_uri}: {e:?}"));
        uploads.extend(page.uploads().iter().map(|u| {
            (
                u.key().unwrap_or_default().to_string(),
                u.upload_id().unwrap_or_default().to_string(),
            )
        }));
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_string);
        upload_id_marker = page.next_upload_id_marker().map(str::to_string);
        if key_marker.is_none() {
            break;
        }
    }
    uploads
}

// ---- the binary under test -----------------------------------------------------------------

/// The `ductwork` binary in a fresh temp working directory (see [`ductwork_in`]).
pub fn ductwork() -> assert_cmd::Command {
    let dir = fresh_cwd();
    ductwork_in(&dir)
}

/// The `ductwork` binary with hermetic env, run in `dir` (also its `HOME`, so no
/// `~/.aws` or `~/.dataduct` of the developer is read): `DUCTWORK_S3_ENDPOINT` = the shared
/// emulator, AWS keys `test`/`test`, `AWS_REGION=us-east-1`, IMDS disabled; `AWS_PROFILE`,
/// `AWS_SESSION_TOKEN`, `AWS_ENDPOINT_URL*`, `DUCTWORK_CONFIG`, `DUCTWORK_RUN_ID`,
/// `PGPASSWORD`, `MYSQL_PWD` and `RUST_LOG` removed.
pub fn ductwork_in(dir: &Path) -> assert_cmd::Command {
    assert_cmd::Command::from_std(ductwork_std(dir))
}

/// The binary as a plain `std::process::Command` in `dir` with the hermetic environment of
/// [`ductwork_in`] (for tests that hold the pid or read stderr live; `RUST_LOG` removed too).
pub fn ductwork_std(dir: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ductwork"));
    cmd.current_dir(dir)
        .env("HOME", dir)
        .env("DUCTWORK_S3_ENDPOINT", &s3().endpoint)
        .env("AWS_ACCESS_KEY_ID", s3emu::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", s3emu::SECRET_KEY)
        .env("AWS_REGION", s3emu::REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.join(".aws-config-absent"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.join(".aws-credentials-absent"),
        );
    for var in [
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "DUCTWORK_CONFIG",
        "DUCTWORK_RUN_ID",
        "PGPASSWORD",
        "MYSQL_PWD",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// A new empty directory under `$TMPDIR/ductwork-cwd-<pid>/`. It outlives the test (the
/// command may run after this returns); parents older than 3 hours are swept by [`s3()`].
pub fn fresh_cwd() -> PathBuf {
    let parent = std::env::temp_dir().join(format!("ductwork-cwd-{}", std::process::id()));
    std::fs::create_dir_all(&parent).expect("creating the test cwd parent");
    tempfile::Builder::new()
        .prefix("cwd-")
        .tempdir_in(&parent)
        .expect("creating a test cwd")
        .keep()
}

/// Gunzips all members of a (possibly multi-member) gzip stream. Panics on corrupt input.
pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

// ---- running the binary and reading its output ---------------------------------------------

/// What one run of the binary gave.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Everything on stdout (the one JSON summary).
    pub stdout: String,
    /// Everything on stderr (logs, then the error line).
    pub stderr: String,
}

#[allow(dead_code)]
impl Run {
    /// stdout parsed as the one JSON object the contract promises.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON object ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// The last stderr line (the error line on failure).
    pub fn last_stderr_line(&self) -> &str {
        self.stderr.lines().last().unwrap_or_default()
    }

    /// Exit 0; returns the summary.
    pub fn assert_ok(&self) -> serde_json::Value {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self.summary()
    }

    /// Exit 2, nothing on stdout, and the contract's last stderr line for `step`; returns it.
    pub fn assert_error(&self, step: &str) -> &str {
        assert_eq!(
            self.code, 2,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert!(
            self.stdout.trim().is_empty(),
            "stdout on error: {}",
            self.stdout
        );
        let line = self.last_stderr_line();
        assert!(
            line.starts_with(&format!("ductwork: error: step={step} ")),
            "last stderr line: {line}"
        );
        assert!(line.contains(" cause="), "{line}");
        line
    }
}

/// Runs the binary (see [`ductwork`]) with extra environment, off the async runtime.
#[allow(dead_code)]
pub async fn run_with_env(args: Vec<String>, env: Vec<(String, String)>) -> Run {
    tokio::task::spawn_blocking(move || {
        let mut cmd = ductwork();
        cmd.args(&args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.timeout(std::time::Duration::from_secs(180));
        let out = cmd.output().expect("running ductwork");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("join")
}

/// Runs the binary with its hermetic environment only.
#[allow(dead_code)]
pub async fn run(args: Vec<String>) -> Run {
    run_with_env(args, Vec::new()).await
}

/// `&["a", "b"]` as owned arguments.
#[allow(dead_code)]
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}
