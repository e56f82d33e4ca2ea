//! Identifiers: the one place that quotes table and column names.
//!
//! Every identifier that reaches generated SQL goes through [`quote_ident`] (PostgreSQL and
//! Redshift) or [`quote_mysql_ident`] (MySQL/MariaDB). Names are validated once, when parsed,
//! so that hostile input is rejected before any I/O (RELIABILITY.md §5).

use std::fmt;

/// The longest identifier Redshift accepts, in bytes.
pub const MAX_IDENT_BYTES: usize = 127;

/// Quotes a PostgreSQL or Redshift identifier: `"` doubled, always quoted.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a MySQL/MariaDB identifier: backtick doubled, always quoted.
pub fn quote_mysql_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes a SQL string literal for PostgreSQL/Redshift (standard_conforming_strings): `'`
/// doubled. Only for values that cannot be bind parameters (S3 URIs, role ARNs in COPY);
/// backslashes are rejected because Redshift COPY option strings interpret them.
pub fn quote_literal(value: &str) -> anyhow::Result<String> {
    if value.bytes().any(|b| b == b'\\' || b < 0x20 || b == 0x7f) {
        anyhow::bail!("refusing to quote a literal holding a backslash or control byte");
    }
    Ok(format!("'{}'", value.replace('\'', "''")))
}

/// Checks that a single identifier is usable: 1-127 bytes, no control bytes.
pub fn validate_ident(name: &str) -> anyhow::Result<()> {
    if name.is_empty() {
        anyhow::bail!("empty identifier");
    }
    if name.len() > MAX_IDENT_BYTES {
        anyhow::bail!(
            "identifier {:?} is {} bytes long (at most {MAX_IDENT_BYTES})",
            name,
            name.len()
        );
    }
    if name.chars().any(char::is_control) {
        anyhow::bail!("identifier {name:?} holds a control character");
    }
    Ok(())
}

/// A table name, optionally schema-qualified, parsed once and quoted by `Display`.
///
/// Parsing accepts `table`, `schema.table` and double-quoted parts (`"my schema"."a.b"`).
/// Unquoted parts are folded to lower case, as PostgreSQL and Redshift do.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    /// The schema, if the name was qualified.
    pub schema: Option<String>,
    /// The table itself.
    pub name: String,
}

impl TableName {
    /// Builds a name from already-unquoted parts, validating each.
    pub fn new(schema: Option<&str>, name: &str) -> anyhow::Result<Self> {
        if let Some(s) = schema {
            validate_ident(s)?;
        }
        validate_ident(name)?;
        Ok(Self {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        })
    }

    /// Parses `schema.table`, `table` or quoted forms.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let parts = split_qualified(text)?;
        match parts.as_slice() {
            [name] => Self::new(None, name),
            [schema, name] => Self::new(Some(schema), name),
            _ => {
                anyhow::bail!("table name {text:?} has more than two parts (expected schema.table)")
            }
        }
    }

    /// `schema.table` without quotes, for logs and summaries.
    pub fn plain(&self) -> String {
        match &self.schema {
            Some(s) => format!("{s}.{}", self.name),
            None => self.name.clone(),
        }
    }

    /// The name quoted for MySQL/MariaDB.
    pub fn mysql(&self) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", quote_mysql_ident(s), quote_mysql_ident(&self.name)),
            None => quote_mysql_ident(&self.name),
        }
    }
}

impl fmt::Display for TableName {
    /// PostgreSQL/Redshift quoting.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{}.{}", quote_ident(s), quote_ident(&self.name)),
            None => f.write_str(&quote_ident(&self.name)),
        }
    }
}

/// Splits a dotted name into unquoted parts, honouring `"…"` quoting with `""` escapes.
fn split_qualified(text: &str) -> anyhow::Result<Vec<String>> {
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => anyhow::bail!("unterminated quoted identifier in {text:?}"),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if c == '"' || c.is_whitespace() {
                    anyhow::bail!("unexpected {c:?} in table name {text:?} (quote the name)");
                }
                part.push(c.to_ascii_lowercase());
                chars.next();
            }
        }
        parts.push(part);
        match chars.next() {
            Some('.') => continue,
            None => break,
            Some(c) => anyhow::bail!("unexpected {c:?} after a quoted identifier in {text:?}"),
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_hostile_names() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_mysql_ident("a`b"), "`a``b`");
        assert_eq!(
            quote_ident("x; drop table y; --"),
            "\"x; drop table y; --\""
        );
    }

    #[test]
    fn parses_qualified_and_quoted_names() {
        let t = TableName::parse("Staging.Users").unwrap();
        assert_eq!(t.schema.as_deref(), Some("staging"));
        assert_eq!(t.name, "users");
        let t = TableName::parse("\"My Schema\".\"a.\"\"b\"").unwrap();
        assert_eq!(t.schema.as_deref(), Some("My Schema"));
        assert_eq!(t.name, "a.\"b");
        assert_eq!(t.to_string(), "\"My Schema\".\"a.\"\"b\"");
        assert!(TableName::parse("a.b.c").is_err());
        assert!(TableName::parse("a b").is_err());
        assert!(TableName::parse("\"unterminated").is_err());
        assert!(TableName::parse(&"x".repeat(128)).is_err());
        assert!(TableName::parse(&"x".repeat(127)).is_ok());
    }

    #[test]
    fn literal_quoting_refuses_backslashes() {
        assert_eq!(quote_literal("it's").unwrap(), "'it''s'");
        assert!(quote_literal("a\\b").is_err());
        assert!(quote_literal("a\nb").is_err());
    }
}
