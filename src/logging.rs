//! Logging on stderr (text or JSON) with secrets masked, and the progress reporter.
//!
//! stdout carries only the one JSON summary per command; everything else goes to stderr.

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::cli::{GlobalOpts, LogFormat};
use crate::secret;

/// Installs the global tracing subscriber. `RUST_LOG` overrides `-v`/`-q`.
pub fn init(global: &GlobalOpts) {
    let level = match i16::from(global.verbose) - i16::from(global.quiet) {
        i16::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let default = format!("ductwork={level},warn");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(RedactingStderr)
        .with_target(false);
    let result = match global.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
    // A second init (tests calling run twice) keeps the first subscriber.
    drop(result);
}

/// stderr, with every registered secret masked before it is written.
#[derive(Clone, Copy)]
pub struct RedactingStderr;

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingStderr;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingStderr
    }
}

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // tracing-subscriber writes each event with one write_all of the formatted line.
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(secret::redact(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Counters shared by the stages of a transfer, read by the progress reporter.
#[derive(Debug, Default)]
pub struct Progress {
    /// Rows read from the source.
    pub rows: AtomicU64,
    /// Uncompressed TSV bytes produced.
    pub raw_bytes: AtomicU64,
    /// Compressed bytes produced.
    pub out_bytes: AtomicU64,
}

impl Progress {
    /// Starts a background task that reports progress until the returned guard is dropped:
    /// a redrawn line while stderr is a terminal and logs are text, else an INFO event every
    /// `DUCTWORK_PROGRESS_SECS` seconds (default 30).
    pub fn spawn_reporter(
        self: &Arc<Self>,
        what: &'static str,
        format: LogFormat,
    ) -> ReporterGuard {
        let tty = std::io::stderr().is_terminal() && format == LogFormat::Text;
        let every = if tty {
            Duration::from_millis(500)
        } else {
            let secs = std::env::var("DUCTWORK_PROGRESS_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(30);
            Duration::from_secs(secs)
        };
        let me = Arc::clone(self);
        let started = Instant::now();
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let rows = me.rows.load(Ordering::Relaxed);
                let raw = me.raw_bytes.load(Ordering::Relaxed);
                let out = me.out_bytes.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64().max(0.001);
                #[allow(clippy::cast_precision_loss)]
                let (rate, raw_mb, out_mb) =
                    (rows as f64 / secs, raw as f64 / 1e6, out as f64 / 1e6);
                if tty {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(
                        err,
                        "\r\x1b[2K{what}: {rows} rows, {raw_mb:.1} MB raw, {out_mb:.1} MB gzip, {rate:.0} rows/s"
                    );
                    let _ = err.flush();
                } else {
                    tracing::info!(
                        rows,
                        raw_mb,
                        out_mb,
                        rows_per_s = rate,
                        "{what} in progress."
                    );
                }
            }
        });
        ReporterGuard { handle, tty }
    }
}

/// Stops the progress reporter (and clears its terminal line) when dropped.
pub struct ReporterGuard {
    handle: tokio::task::JoinHandle<()>,
    tty: bool,
}

impl Drop for ReporterGuard {
    fn drop(&mut self) {
        self.handle.abort();
        if self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}
