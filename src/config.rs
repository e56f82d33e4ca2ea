//! `ductwork.toml`, connection URLs and S3 URIs: parsing only, no I/O beyond reading files.
//!
//! A connection is named in the config (`[connections.NAME]`, `[warehouses.NAME]`) or given as
//! a URL on the command line. Passwords never come from argv alone: `password_env`,
//! `password_file` (refused when group- or world-readable), `PGPASSWORD`/`MYSQL_PWD`, or a URL
//! password, which is accepted with a warning (SPEC §3).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::Deserialize;

use crate::secret::Secret;

/// The parsed `ductwork.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Source databases by name.
    #[serde(default)]
    pub connections: BTreeMap<String, ConnConfig>,
    /// Warehouses by name.
    #[serde(default)]
    pub warehouses: BTreeMap<String, ConnConfig>,
    /// S3 settings.
    #[serde(default)]
    pub s3: S3Config,
    /// Where the config was read from, for messages.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// One `[connections.NAME]` or `[warehouses.NAME]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnConfig {
    /// `postgres://`, `mysql://` or `redshift://` URL; a password in it is accepted but warned about.
    pub url: String,
    /// Environment variable that holds the password.
    pub password_env: Option<String>,
    /// File that holds the password (mode 0600 or stricter).
    pub password_file: Option<PathBuf>,
    /// TLS mode: disable, require, verify-ca, verify-full.
    pub tls: Option<String>,
    /// CA bundle for verify-ca / verify-full (e.g. the RDS bundle).
    pub ca_file: Option<PathBuf>,
    /// IAM role ARN used by Redshift COPY.
    pub iam_role: Option<String>,
    /// AWS region of the S3 bucket, when it differs from the cluster's.
    pub region: Option<String>,
}

/// The `[s3]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Default bucket for relative outputs.
    pub bucket: Option<String>,
    /// Default key prefix.
    pub prefix: Option<String>,
    /// S3-compatible endpoint (also `$DUCTWORK_S3_ENDPOINT` / `$AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// Region for the S3 client.
    pub region: Option<String>,
    /// Server-side encryption: `AES256` (default) or `aws:kms`.
    pub sse: Option<String>,
    /// KMS key id for `aws:kms`.
    pub kms_key_id: Option<String>,
    /// Sent as `x-amz-expected-bucket-owner` when set.
    pub expected_bucket_owner: Option<String>,
}

impl Config {
    /// Loads the config: an explicit path must exist; otherwise `./ductwork.toml` if present;
    /// otherwise an empty config (URLs on the command line still work).
    pub fn load(explicit: Option<&Path>) -> anyhow::Result<Self> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => {
                let p = PathBuf::from("ductwork.toml");
                if !p.exists() {
                    return Ok(Self::default());
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let mut cfg: Config =
            toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
        cfg.path = Some(path);
        Ok(cfg)
    }

    /// Resolves a source given as a config name or a URL.
    pub fn source(&self, name_or_url: &str) -> anyhow::Result<ConnSpec> {
        self.resolve(name_or_url, &self.connections, "connections")
    }

    /// Resolves a warehouse given as a config name or a URL.
    pub fn warehouse(&self, name_or_url: &str) -> anyhow::Result<ConnSpec> {
        self.resolve(name_or_url, &self.warehouses, "warehouses")
    }

    fn resolve(
        &self,
        name_or_url: &str,
        table: &BTreeMap<String, ConnConfig>,
        section: &str,
    ) -> anyhow::Result<ConnSpec> {
        if name_or_url.contains("://") {
            let cc = ConnConfig {
                url: name_or_url.to_owned(),
                password_env: None,
                password_file: None,
                tls: None,
                ca_file: None,
                iam_role: None,
                region: None,
            };
            return ConnSpec::from_config(&host_label(name_or_url), &cc);
        }
        // `NAME/DATABASE`: connection NAME with another database (Dataduct's `database:` field).
        if let Some((base, db)) = name_or_url.rsplit_once('/') {
            if !table.contains_key(name_or_url) && !db.is_empty() && !base.is_empty() {
                let Some(cc) = table
                    .get(base)
                    .or_else(|| self.connections.get(base))
                    .or_else(|| self.warehouses.get(base))
                else {
                    // Not NAME/DATABASE either: report the plain lookup's error.
                    return self.resolve_plain(name_or_url, table, section);
                };
                let mut url = url::Url::parse(&cc.url)
                    .with_context(|| format!("connection {base:?}: the URL does not parse"))?;
                url.set_path(&format!("/{db}"));
                let cc = ConnConfig {
                    url: url.to_string(),
                    ..cc.clone()
                };
                return ConnSpec::from_config(name_or_url, &cc);
            }
        }
        self.resolve_plain(name_or_url, table, section)
    }

    fn resolve_plain(
        &self,
        name_or_url: &str,
        table: &BTreeMap<String, ConnConfig>,
        section: &str,
    ) -> anyhow::Result<ConnSpec> {
        // A source may also be named in the other section (e.g. a warehouse used as source).
        let cc = table
            .get(name_or_url)
            .or_else(|| self.connections.get(name_or_url))
            .or_else(|| self.warehouses.get(name_or_url))
            .with_context(|| {
                let known: Vec<&String> = table.keys().collect();
                format!(
                    "no connection named {name_or_url:?} in [{section}] of {} (known: {known:?}); \
                     pass a URL or add it to the config",
                    self.path
                        .as_deref()
                        .map_or("<no config file>".into(), |p| p.display().to_string())
                )
            })?;
        ConnSpec::from_config(name_or_url, cc)
    }
}

/// The name a URL source goes by (no config name): `host:port/database`.
fn host_label(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_owned();
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            Some(format!("{host}{port}{}", u.path()))
        })
        .unwrap_or_else(|| "url".into())
}

/// What kind of database a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbKind {
    /// PostgreSQL (`postgres://`, `postgresql://`).
    Postgres,
    /// MySQL, MariaDB, Aurora MySQL (`mysql://`, `mariadb://`).
    Mysql,
    /// Redshift (`redshift://`): PostgreSQL wire protocol, Redshift SQL dialect.
    Redshift,
}

/// TLS modes, as in libpq; `prefer`/`allow` are refused (they fall back to plaintext silently).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS.
    Disable,
    /// TLS without certificate verification (warned about).
    Require,
    /// TLS, chain verified, hostname not checked.
    VerifyCa,
    /// TLS, chain and hostname verified.
    VerifyFull,
}

impl TlsMode {
    fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(match text {
            "disable" => Self::Disable,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            "prefer" | "allow" => bail!(
                "tls = {text:?} is refused: it silently falls back to plaintext; \
                 use verify-full (or disable, explicitly)"
            ),
            other => bail!("unknown tls mode {other:?} (disable, require, verify-ca, verify-full)"),
        })
    }
}

/// A resolved connection: everything needed to connect, password held as a [`Secret`].
#[derive(Clone)]
pub struct ConnSpec {
    /// Config name, or the host when given as a URL.
    pub name: String,
    /// Database kind.
    pub kind: DbKind,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name.
    pub user: String,
    /// Database name (may be empty for MySQL).
    pub database: String,
    /// Password, if any.
    pub password: Option<Secret>,
    /// TLS mode.
    pub tls: TlsMode,
    /// CA bundle file.
    pub ca_file: Option<PathBuf>,
    /// IAM role for Redshift COPY.
    pub iam_role: Option<String>,
    /// Region for Redshift COPY.
    pub region: Option<String>,
    /// Warnings produced while resolving (URL password, weak TLS), logged by the caller.
    pub warnings: Vec<String>,
}

impl fmt::Debug for ConnSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display_url())
    }
}

impl ConnSpec {
    /// Builds a spec from a config entry, reading the password from env or file.
    pub fn from_config(name: &str, cc: &ConnConfig) -> anyhow::Result<Self> {
        let url = url::Url::parse(&cc.url)
            .map_err(|e| anyhow::anyhow!("connection {name:?}: the URL does not parse ({e})"))?;
        let (kind, default_port) = match url.scheme() {
            "postgres" | "postgresql" => (DbKind::Postgres, 5432),
            "mysql" | "mariadb" => (DbKind::Mysql, 3306),
            "redshift" => (DbKind::Redshift, 5439),
            other => bail!(
                "connection {name:?}: unsupported scheme {other:?} (postgres://, mysql://, redshift://)"
            ),
        };
        let host = url
            .host_str()
            .with_context(|| format!("connection {name:?}: the URL has no host"))?
            .trim_matches(|c| c == '[' || c == ']')
            .to_owned();
        let user = percent_decode(url.username());
        let user = if user.is_empty() {
            match kind {
                DbKind::Mysql => "root".to_owned(),
                _ => "postgres".to_owned(),
            }
        } else {
            user
        };
        let database = percent_decode(url.path().trim_start_matches('/'));
        let mut warnings = Vec::new();
        let mut tls_text = cc.tls.clone();
        for (k, v) in url.query_pairs() {
            match &*k {
                "sslmode" | "tls" | "ssl-mode" => {
                    tls_text = Some(v.to_lowercase().replace('_', "-"))
                }
                other => {
                    bail!("connection {name:?}: unsupported URL parameter {other:?} (sslmode)")
                }
            }
        }
        let loopback = is_loopback(&host);
        let tls = match tls_text.as_deref() {
            Some(t) => TlsMode::parse(t).with_context(|| format!("connection {name:?}"))?,
            None if loopback => TlsMode::Disable,
            None => TlsMode::VerifyFull,
        };
        if matches!(tls, TlsMode::Require | TlsMode::Disable) && !loopback {
            warnings.push(format!(
                "connection {name:?}: tls {tls:?} to a non-loopback host does not verify the server"
            ));
        }
        let password = if let Some(var) = &cc.password_env {
            let v = std::env::var(var)
                .with_context(|| format!("connection {name:?}: password_env {var:?} is not set"))?;
            Some(Secret::new(v))
        } else if let Some(file) = &cc.password_file {
            Some(read_password_file(file).with_context(|| format!("connection {name:?}"))?)
        } else if let Some(p) = url.password() {
            warnings.push(format!(
                "connection {name:?}: the URL holds a password; prefer password_env or password_file"
            ));
            Some(Secret::new(percent_decode(p)))
        } else {
            let var = match kind {
                DbKind::Mysql => "MYSQL_PWD",
                _ => "PGPASSWORD",
            };
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .map(Secret::new)
        };
        Ok(Self {
            name: name.to_owned(),
            kind,
            port: url.port().unwrap_or(default_port),
            host,
            user,
            database,
            password,
            tls,
            ca_file: cc.ca_file.clone(),
            iam_role: cc.iam_role.clone(),
            region: cc.region.clone(),
            warnings,
        })
    }

    /// The URL without its password, for logs and summaries.
    pub fn display_url(&self) -> String {
        let scheme = match self.kind {
            DbKind::Postgres => "postgres",
            DbKind::Mysql => "mysql",
            DbKind::Redshift => "redshift",
        };
        format!(
            "{scheme}://{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Whether a host is a loopback address (TLS defaults to disable there).
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

fn read_password_file(path: &Path) -> anyhow::Result<Secret> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(path)
            .with_context(|| format!("reading password_file {}", path.display()))?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "password_file {} is readable by group or others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading password_file {}", path.display()))?;
    Ok(Secret::new(text.trim_end_matches(['\n', '\r'])))
}

/// An `s3://bucket/key` location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Uri {
    /// Bucket name.
    pub bucket: String,
    /// Key (may be a prefix ending in `/`, or empty).
    pub key: String,
}

impl S3Uri {
    /// Parses `s3://bucket/key`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let rest = text
            .strip_prefix("s3://")
            .with_context(|| format!("{text:?} is not an s3:// URI"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !valid_bucket {
            bail!("{text:?}: {bucket:?} is not a valid S3 bucket name");
        }
        if key.bytes().any(|b| b < 0x20 || b == 0x7f) {
            bail!("{text:?}: the key holds a control character");
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }

    /// This location with `name` appended to its key.
    pub fn join(&self, name: &str) -> Self {
        Self {
            bucket: self.bucket.clone(),
            key: format!("{}{name}", self.key),
        }
    }
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// Parses sizes such as `64MiB`, `8M`, `5MB`, `1048576`, `1GiB` into bytes (M and MB mean MiB).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 64MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses durations such as `60s`, `5m`, `6h`, `250ms`, `90` (seconds).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 60s, 5m, 6h)"))?;
    let secs = match unit {
        "ms" => return Ok(std::time::Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        other => return Err(format!("unknown duration unit {other:?} (ms, s, m, h, d)")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_defaults_tls_by_host() {
        let c = Config::default();
        let s = c.source("postgres://etl@127.0.0.1:5432/test").unwrap();
        assert_eq!(s.kind, DbKind::Postgres);
        assert_eq!(s.tls, TlsMode::Disable);
        assert_eq!(s.database, "test");
        let s = c.source("mysql://etl@db.example.com/userDb").unwrap();
        assert_eq!(
            (s.kind, s.port, s.tls),
            (DbKind::Mysql, 3306, TlsMode::VerifyFull)
        );
        assert!(c.source("postgres://h.example/x?sslmode=prefer").is_err());
        assert!(c.source("oracle://h/x").is_err());
    }

    #[test]
    fn url_password_is_accepted_with_a_warning_and_masked() {
        let c = Config::default();
        let s = c.source("postgres://u:s3cr%2Fet-pw@127.0.0.1/db").unwrap();
        assert_eq!(s.password.as_ref().unwrap().expose(), "s3cr/et-pw");
        assert!(!s.warnings.is_empty());
        assert!(!format!("{s:?}").contains("s3cr"));
    }

    #[test]
    fn named_connections_read_passwords_from_env() {
        std::env::set_var("DUCTWORK_TEST_PW_CONFIG", "from-env-pw");
        let cfg: Config = toml::from_str(
            "[connections.maestro]\nurl = \"mysql://etl@127.0.0.1:3306/userDb\"\n\
             password_env = \"DUCTWORK_TEST_PW_CONFIG\"\n",
        )
        .unwrap();
        let s = cfg.source("maestro").unwrap();
        assert_eq!(s.password.unwrap().expose(), "from-env-pw");
        assert!(cfg.source("nope").is_err());
    }

    #[test]
    fn refuses_world_readable_password_files() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "pw-from-file\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_password_file(&p).is_err());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_password_file(&p).unwrap().expose(), "pw-from-file");
    }

    #[test]
    fn parses_s3_uris_sizes_and_durations() {
        let u = S3Uri::parse("s3://etl-bucket/a/b/").unwrap();
        assert_eq!((u.bucket.as_str(), u.key.as_str()), ("etl-bucket", "a/b/"));
        assert_eq!(u.join("x").to_string(), "s3://etl-bucket/a/b/x");
        assert!(S3Uri::parse("s3://Bad_Bucket/x").is_err());
        assert!(S3Uri::parse("http://x/y").is_err());
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("8M").unwrap(), 8 << 20);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("1XB").is_err());
        assert_eq!(parse_duration("6h").unwrap().as_secs(), 21600);
        assert_eq!(parse_duration("250ms").unwrap().as_millis(), 250);
    }
}
