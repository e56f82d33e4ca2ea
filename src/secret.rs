//! Secrets: a redacting wrapper type and a process-wide redaction list.
//!
//! Every password or key that ductwork loads is registered here, so that the error renderer,
//! the log writer and the summary printer can mask it even if some library echoes it back
//! (RELIABILITY.md invariant 8: no secret in any output).

use std::borrow::Cow;
use std::fmt;
use std::sync::RwLock;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// The text that stands in for a secret in every output.
pub const MASK: &str = "***";

/// A secret value: `Debug` and `Display` print `***`; [`Secret::expose`] gives the value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value and registers it for redaction (values shorter than 4 bytes are not
    /// registered: masking them would garble ordinary text).
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        register(&value);
        Self(value)
    }

    /// The secret itself, for the one call that needs it (a connection, a signed request).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// Adds a value to the process-wide redaction list.
pub fn register(value: &str) {
    if value.len() < 4 {
        return;
    }
    let mut list = SECRETS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !list.iter().any(|s| s == value) {
        list.push(value.to_owned());
        // Longest first, so that a secret containing another is masked whole.
        list.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Registers the password of every `scheme://user:password@host…` URL found in `args` (the
/// command line): such a URL is passed on verbatim (the step lines of `run`, `--dry-run`),
/// so its password must be masked before anything is printed. Both the written and the
/// percent-decoded forms are registered.
pub fn register_url_passwords<I, S>(args: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    for arg in args {
        let mut rest = arg.as_ref();
        while let Some(at) = rest.find("://") {
            rest = &rest[at + 3..];
            let end = rest
                .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
                .unwrap_or(rest.len());
            let authority = &rest[..end];
            if let Some((userinfo, _host)) = authority.rsplit_once('@') {
                if let Some((_user, password)) = userinfo.split_once(':') {
                    register(password);
                    if let Ok(decoded) = percent_decode(password) {
                        register(&decoded);
                    }
                }
            }
            rest = &rest[end..];
        }
    }
}

fn percent_decode(text: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                #[allow(clippy::cast_possible_truncation)]
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
}

/// Masks every registered secret in `text`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let list = SECRETS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if list.iter().all(|s| !text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_owned();
    for s in list.iter() {
        out = out.replace(s.as_str(), MASK);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_prints_mask_and_is_redacted_everywhere() {
        let s = Secret::new("hunter2-canary");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2-canary");
        assert_eq!(redact("password=hunter2-canary;"), "password=***;");
        assert_eq!(redact("nothing here"), "nothing here");
    }

    #[test]
    fn url_passwords_on_the_command_line_are_registered() {
        register_url_passwords([
            "--warehouse",
            "postgres://etl:Url%2FPw-canary1@h:5432/db",
            "--source=mysql://root:second-canary2@10.0.0.1/x s3://bucket/key",
            "postgres://nopass@h/db",
        ]);
        assert_eq!(redact("a Url%2FPw-canary1 b"), "a *** b");
        assert_eq!(redact("a Url/Pw-canary1 b"), "a *** b");
        assert_eq!(redact("second-canary2"), "***");
        assert_eq!(redact("nopass"), "nopass");
    }
}
