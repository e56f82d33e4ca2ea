//! `scripts/release.sh` and `scripts/bootstrap.sh` against the in-process S3 emulator (through
//! the machine's AWS CLI): a release uploads the binary, its sha256 and `latest`; bootstrap
//! installs it, is a no-op when the installed copy matches, runs `-- ductwork …`, and refuses a
//! checksum mismatch without touching the destination. release.sh refuses a binary that needs a
//! newer glibc than 2.17.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{s3, s3emu, test_prefix};

fn script(name: &str) -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts").join(name))
        .env("DUCTWORK_S3_ENDPOINT", &s3().endpoint)
        .env("AWS_ACCESS_KEY_ID", s3emu::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", s3emu::SECRET_KEY)
        .env("AWS_REGION", s3emu::REGION)
        .env("AWS_DEFAULT_REGION", s3emu::REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL");
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn release(releases: &str, version: &str, binary: &Path, max_glibc: &str) -> Output {
    script("release.sh")
        .args([releases, version, "--binary"])
        .arg(binary)
        .env("DUCTWORK_RELEASE_MAX_GLIBC", max_glibc)
        .output()
        .expect("running release.sh")
}

fn bootstrap(release: &str, dest: &Path, tail: &[&str]) -> Output {
    script("bootstrap.sh")
        .arg(release)
        .arg(dest)
        .args(tail)
        .output()
        .expect("running bootstrap.sh")
}

#[tokio::test(flavor = "multi_thread")]
async fn release_then_bootstrap_installs_verifies_and_runs() {
    let releases = format!("{}releases/", test_prefix("release"));
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ductwork"));
    let out = release(&releases, "v9.9.9", &bin, "99.0");
    assert!(out.status.success(), "{}", text(&out));
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("release prints one JSON line");
    assert_eq!(summary["version"], "v9.9.9");
    let keys = common::list_keys(&releases).await;
    for k in [
        "v9.9.9/ductwork",
        "v9.9.9/ductwork.sha256",
        "latest/ductwork",
        "latest/ductwork.sha256",
        "latest/version",
    ] {
        assert!(keys.iter().any(|x| x.ends_with(k)), "{k} not in {keys:?}");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("bin/ductwork");
    let latest = format!("{releases}latest/");
    let out = bootstrap(&latest, &dest, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("installed"));
    assert_eq!(
        std::fs::read(&dest).expect("installed"),
        std::fs::read(&bin).expect("binary")
    );
    // Matching copy: a no-op; then `-- ductwork --version` runs the installed binary.
    let out = bootstrap(&latest, &dest, &["--", "ductwork", "--version"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already matches"),
        "{}",
        text(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ductwork "));

    // A tampered binary: exit 2, nothing installed.
    let (bucket, key) = common::split_s3_uri(&format!("{releases}v9.9.9/ductwork"));
    common::s3_client()
        .await
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"not the binary",
        ))
        .send()
        .await
        .expect("tamper");
    let fresh = dir.path().join("other/ductwork");
    let out = bootstrap(&format!("{releases}v9.9.9/"), &fresh, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"),
        "{}",
        text(&out)
    );
    assert!(!fresh.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("other"))
        .expect("dir")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn release_refuses_a_binary_needing_a_newer_glibc() {
    let releases = format!("{}releases/", test_prefix("release-glibc"));
    // The debug build links against this machine's glibc (2.34+, SPEC §13).
    let out = release(
        &releases,
        "v0.0.1",
        Path::new(env!("CARGO_BIN_EXE_ductwork")),
        "2.17",
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("newer than 2.17"),
        "{}",
        text(&out)
    );
}
