//! Error rendering and exit codes.
//!
//! Steps return `anyhow` errors with context; [`render`] turns one into the single last stderr
//! line the contract fixes (SPEC §2, RELIABILITY.md invariant 7):
//! `ductwork: error: step=<step> table=<table> [key=<key>] [upload_id=<id>] cause=<chain> [<code>]`.
//! Database and AWS clients hide their useful text behind generic messages ("db error",
//! "service error"); this module digs it out once, here, instead of at every call site.

use std::fmt::Write as _;

use crate::secret;

/// A step failed: carries the step name and the table it worked on, for the error line.
#[derive(Debug, thiserror::Error)]
#[error("{step} failed")]
pub struct StepFailed {
    /// The step (subcommand or pipeline step name).
    pub step: String,
    /// The table the step worked on, when there is one.
    pub table: Option<String>,
    /// What went wrong.
    #[source]
    pub source: anyhow::Error,
}

/// The process was interrupted by a signal after cleaning up (exit 130 or 143).
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {}", if *.0 == 2 { "SIGINT" } else { "SIGTERM" })]
pub struct Interrupted(pub i32);

/// An S3 operation failed; carries the key and upload id the error line must name.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{op} {}{} failed{}", .key, .upload_id.as_deref().map(|u| format!(" (upload {u})")).unwrap_or_default(), .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
pub struct S3Error {
    /// The S3 operation, e.g. `UploadPart 3 of`.
    pub op: String,
    /// The full `s3://bucket/key` the operation addressed.
    pub key: String,
    /// The multipart upload id, when there is one.
    pub upload_id: Option<String>,
    /// The AWS error code (`NoSuchBucket`, `SlowDown`, …), when the service sent one.
    pub code: Option<String>,
    /// The service's message, or the transport error's text.
    pub message: Option<String>,
    /// Whether a retry may succeed (5xx, throttling, timeouts).
    pub retriable: bool,
}

impl S3Error {
    /// Appends `(note)` to the message: what happened after the failure.
    #[must_use]
    pub fn with_note(mut self, note: &str) -> Self {
        let m = self.message.take().unwrap_or_default();
        self.message = Some(format!("{m} ({note})").trim_start().to_owned());
        self
    }
}

/// The exit code for an error: 130/143 after a signal, else 2.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if let Some(Interrupted(sig)) = cause.downcast_ref::<Interrupted>() {
            return 128 + sig;
        }
    }
    2
}

/// Renders the one-line error the contract fixes, with secrets masked.
pub fn render(err: &anyhow::Error) -> String {
    let mut step = None;
    let mut table = None;
    let mut key = None;
    let mut upload_id = None;
    let mut code = None;
    let mut causes: Vec<String> = Vec::new();
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<StepFailed>() {
            step.get_or_insert_with(|| f.step.clone());
            if let Some(t) = &f.table {
                table.get_or_insert_with(|| t.clone());
            }
            continue;
        }
        if let Some(e) = cause.downcast_ref::<S3Error>() {
            key.get_or_insert_with(|| e.key.clone());
            if let Some(u) = &e.upload_id {
                upload_id.get_or_insert_with(|| u.clone());
            }
            if let Some(c) = &e.code {
                code.get_or_insert_with(|| format!("S3 {c}"));
            }
        }
        let mut text = cause.to_string();
        if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            if let Some(db) = pg.as_db_error() {
                code.get_or_insert_with(|| format!("SQLSTATE {}", db.code().code()));
                text = db.message().to_owned();
                if let Some(d) = db.detail() {
                    let _ = write!(text, " (detail: {d})");
                }
                if let Some(h) = db.hint() {
                    let _ = write!(text, " (hint: {h})");
                }
                if let Some(w) = db.where_() {
                    let _ = write!(text, " (where: {w})");
                }
            } else if let Some(source) = std::error::Error::source(pg) {
                // "error communicating with the server" + io error: keep both, dedupe below.
                text = format!("{text}: {source}");
            }
        } else if let Some(db) = cause.downcast_ref::<tokio_postgres::error::DbError>() {
            code.get_or_insert_with(|| format!("SQLSTATE {}", db.code().code()));
            text = db.message().to_owned();
        } else if let Some(my) = cause.downcast_ref::<mysql_async::Error>() {
            if let mysql_async::Error::Server(s) = my {
                code.get_or_insert_with(|| format!("MySQL {} {}", s.code, s.state));
                text = s.message.clone();
            }
        } else if let Some(s) = cause.downcast_ref::<mysql_async::ServerError>() {
            code.get_or_insert_with(|| format!("MySQL {} {}", s.code, s.state));
            text = s.message.clone();
        }
        let text = collapse_repeats(text.trim());
        if text.is_empty() {
            continue;
        }
        // Clients repeat their source in their own message: keep each fact once.
        if causes.iter().any(|c| c.contains(&text)) {
            continue;
        }
        causes.push(text);
    }
    let mut line = String::from("ductwork: error:");
    let _ = write!(
        line,
        " step={}",
        quote(step.as_deref().unwrap_or("ductwork"))
    );
    if let Some(t) = table {
        let _ = write!(line, " table={}", quote(&t));
    }
    if let Some(k) = key {
        let _ = write!(line, " key={}", quote(&k));
    }
    if let Some(u) = upload_id {
        let _ = write!(line, " upload_id={}", quote(&u));
    }
    let _ = write!(line, " cause={}", quote(&causes.join(": ")));
    if let Some(c) = code {
        let _ = write!(line, " [{c}]");
    }
    // One line, whatever the causes held.
    let line = line.replace(['\n', '\r'], " ");
    secret::redact(&line).into_owned()
}

/// Collapses a message that repeats its own head (`Input/output error: Input/output error:
/// connection closed`, as some clients nest their errors) to one copy of each segment.
fn collapse_repeats(text: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in text.split(": ") {
        if out.last() != Some(&seg) {
            out.push(seg);
        }
    }
    out.join(": ")
}

/// Quotes a value that holds spaces, quotes or is empty: `"…"` with `\` and `"` escaped.
pub fn quote(value: &str) -> String {
    if !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c == '=')
    {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn notes_append_to_the_message_or_start_it() {
        let e = S3Error {
            op: "CompleteMultipartUpload".into(),
            key: "s3://b/k".into(),
            upload_id: Some("U".into()),
            code: None,
            message: Some("boom".into()),
            retriable: false,
        };
        let e = e
            .with_note("after 5 attempts")
            .with_note("the upload was aborted");
        assert_eq!(
            e.message.as_deref(),
            Some("boom (after 5 attempts) (the upload was aborted)")
        );
        let bare = S3Error { message: None, ..e };
        assert_eq!(bare.with_note("x").message.as_deref(), Some("(x)"));
    }

    #[test]
    fn renders_step_table_key_and_code_once() {
        let s3 = S3Error {
            op: "UploadPart 3 of".into(),
            key: "s3://b/p/part-00000.tsv.gz".into(),
            upload_id: Some("U1".into()),
            code: Some("SlowDown".into()),
            message: Some("Please reduce your request rate.".into()),
            retriable: true,
        };
        let err = anyhow::Error::new(s3).context("uploading part 0");
        let err = anyhow::Error::new(StepFailed {
            step: "extract".into(),
            table: Some("public.events".into()),
            source: err,
        });
        let line = render(&err);
        assert_eq!(
            line,
            "ductwork: error: step=extract table=public.events key=s3://b/p/part-00000.tsv.gz \
             upload_id=U1 cause=\"uploading part 0: UploadPart 3 of s3://b/p/part-00000.tsv.gz \
             (upload U1) failed: Please reduce your request rate.\" [S3 SlowDown]"
        );
        assert_eq!(exit_code(&err), 2);
    }

    #[test]
    fn interrupted_maps_to_signal_exit_codes() {
        let e = anyhow::Error::new(Interrupted(15)).context("extract");
        assert_eq!(exit_code(&e), 143);
        let e = anyhow::Error::new(Interrupted(2));
        assert_eq!(exit_code(&e), 130);
    }

    #[test]
    fn dedupes_repeated_causes_and_stays_one_line() {
        let e: anyhow::Result<()> = Err(anyhow::anyhow!("connection refused\n(os error 111)"));
        let e = e.context("connection refused\n(os error 111)").unwrap_err();
        let line = render(&e);
        assert!(!line.contains('\n'));
        assert_eq!(line.matches("connection refused").count(), 1, "{line}");
    }

    #[test]
    fn collapses_nested_repeats() {
        assert_eq!(
            collapse_repeats("Input/output error: Input/output error: connection closed"),
            "Input/output error: connection closed"
        );
        assert_eq!(collapse_repeats("a: b: a"), "a: b: a");
    }

    #[test]
    fn quotes_values_with_spaces() {
        assert_eq!(quote("a"), "a");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("say \"x\""), "\"say \\\"x\\\"\"");
        assert_eq!(quote(""), "\"\"");
    }
}
