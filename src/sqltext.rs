//! SQL script text: splitting scripts into statements and filling `{{ params }}`.
//!
//! This module is pure (no I/O). The splitter is hand-written on purpose: `sqlparser` rejects
//! dialect SQL it does not know (Redshift `COPY … IAM_ROLE`, `UNLOAD`, `DISTKEY`, stored
//! procedures), and a script runner must pass such statements through untouched. It is a small
//! byte-level state machine that only needs to know where statements end: it understands
//! quotes, dollar quotes and comments, nothing else.

use anyhow::{bail, Result};

/// One statement of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// The statement text: from its first token to the end of its last token, without the
    /// trailing `;`, leading or trailing comments, or surrounding whitespace. Comments inside
    /// the statement are kept.
    pub text: String,
    /// The 1-based line of the script where the statement's first token is.
    pub line: usize,
}

/// How the splitter reads string literals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplitOptions {
    /// Treat a backslash inside an ordinary `'…'` literal as an escape (so `'it\'s'` is one
    /// literal). PostgreSQL with `standard_conforming_strings = on` (the default since 9.1)
    /// does not; MySQL does by default. `E'…'` literals always take backslash escapes.
    pub backslash_escapes: bool,
}

/// Splits a script into statements on top-level `;`, with PostgreSQL's string rules
/// (backslashes are literal in `'…'`, escapes in `E'…'`).
///
/// Understood: `'…'` with `''` doubling, `E'…'`/`e'…'` with backslash escapes, dollar quotes
/// (`$$…$$`, `$tag$…$tag$`; `$1` is a parameter), `"…"` and `` `…` `` identifiers (which may
/// hold `;`), `--` line comments and nested `/* … */` block comments. Statements that are empty
/// or hold only comments are dropped. An unterminated quote or block comment is an error naming
/// the line where it started.
pub fn split_statements(script: &str) -> Result<Vec<Statement>> {
    split_statements_with(script, SplitOptions::default())
}

/// [`split_statements`] with explicit [`SplitOptions`].
pub fn split_statements_with(script: &str, opts: SplitOptions) -> Result<Vec<Statement>> {
    let b = script.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    // Byte offset and line of the current statement's first token, if it has one yet.
    let mut start: Option<(usize, usize)> = None;
    // Byte offset just past the current statement's last token.
    let mut code_end = 0;

    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b' ' | b'\t' | b'\r' | 0x0b | 0x0c => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                // A line comment ends before the newline, which the loop then counts.
                i = memchr::memchr(b'\n', &b[i..]).map_or(b.len(), |n| i + n);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = block_comment_end(b, i, line)?;
                line += count_newlines(&b[i..end]);
                i = end;
            }
            b';' => {
                if let Some((s, l)) = start.take() {
                    out.push(Statement {
                        text: script[s..code_end].to_owned(),
                        line: l,
                    });
                }
                i += 1;
            }
            _ => {
                if start.is_none() {
                    start = Some((i, line));
                }
                let end = token_end(b, i, line, opts)?;
                line += count_newlines(&b[i..end]);
                i = end;
                code_end = end;
            }
        }
    }
    if let Some((s, l)) = start {
        out.push(Statement {
            text: script[s..code_end].to_owned(),
            line: l,
        });
    }
    Ok(out)
}

/// Whether `c` may continue an unquoted identifier (PostgreSQL allows `$` after the first
/// character; bytes of multi-byte UTF-8 characters count as letters).
fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// Whether `c` may start an identifier or a dollar-quote tag.
fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn count_newlines(b: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', b).count()
}

/// The end (exclusive) of the code token starting at `i`, which is not whitespace, `;` or the
/// start of a comment.
fn token_end(b: &[u8], i: usize, line: usize, opts: SplitOptions) -> Result<usize> {
    let c = b[i];
    match c {
        b'\'' => quoted_end(b, i, line, b'\'', opts.backslash_escapes, "string literal"),
        b'"' => quoted_end(b, i, line, b'"', false, "quoted identifier"),
        b'`' => quoted_end(b, i, line, b'`', false, "backtick identifier"),
        b'$' => match dollar_tag_len(b, i) {
            Some(len) => {
                let tag = &b[i..i + len];
                let body = i + len;
                match memchr::memmem::find(&b[body..], tag) {
                    Some(n) => Ok(body + n + len),
                    None => bail!(
                        "unterminated dollar-quoted string {} starting on line {line}",
                        String::from_utf8_lossy(tag)
                    ),
                }
            }
            // `$1` and friends: a parameter, taken with its digits.
            None => Ok(i + 1 + b[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count()),
        },
        c if is_ident_start(c) => {
            let end = i + b[i..].iter().take_while(|&&d| is_ident_byte(d)).count();
            // `E'…'` (any case) is an escape string; `xE'…'` is not (the run covers it).
            if end == i + 1 && (c == b'E' || c == b'e') && b.get(end) == Some(&b'\'') {
                quoted_end(b, end, line, b'\'', true, "escape string literal")
            } else {
                Ok(end)
            }
        }
        _ => Ok(i + 1),
    }
}

/// The end (exclusive) of a quoted token opened by `q` at `i`; a doubled `q` stays inside.
fn quoted_end(
    b: &[u8],
    i: usize,
    line: usize,
    q: u8,
    backslash: bool,
    what: &str,
) -> Result<usize> {
    let mut j = i + 1;
    while j < b.len() {
        let c = b[j];
        if backslash && c == b'\\' {
            j += 2;
        } else if c == q {
            if b.get(j + 1) == Some(&q) {
                j += 2;
            } else {
                return Ok(j + 1);
            }
        } else {
            j += 1;
        }
    }
    bail!("unterminated {what} starting on line {line}")
}

/// If a dollar-quote opening tag (`$$` or `$tag$`) starts at `i`, its length.
fn dollar_tag_len(b: &[u8], i: usize) -> Option<usize> {
    let rest = &b[i + 1..];
    match rest.first() {
        Some(b'$') => Some(2),
        Some(&c) if is_ident_start(c) => {
            let n = rest
                .iter()
                .take_while(|&&d| d.is_ascii_alphanumeric() || d == b'_' || d >= 0x80)
                .count();
            (rest.get(n) == Some(&b'$')).then_some(n + 2)
        }
        _ => None,
    }
}

/// The end (exclusive) of a block comment starting at `i`, honouring nesting as PostgreSQL
/// does.
fn block_comment_end(b: &[u8], i: usize, line: usize) -> Result<usize> {
    let mut depth = 0usize;
    let mut j = i;
    while j + 1 < b.len() {
        match (b[j], b[j + 1]) {
            (b'/', b'*') => {
                depth += 1;
                j += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                j += 2;
                if depth == 0 {
                    return Ok(j);
                }
            }
            _ => j += 1,
        }
    }
    bail!("unterminated block comment starting on line {line}")
}

/// The unquoted words of a statement (keywords and bare identifiers), in order, as written.
///
/// Comments, string literals, quoted identifiers and dollar-quoted bodies are skipped, so a
/// word inside them is never reported. Used to recognise a statement by its keywords (for
/// example `TRUNCATE`, or `ALTER TABLE … APPEND FROM`). Scanning stops at an unterminated
/// quote or comment.
pub fn bare_words(stmt: &str) -> Vec<&str> {
    let b = stmt.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let end = if c.is_ascii_whitespace() || c == b';' {
            i + 1
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            memchr::memchr(b'\n', &b[i..]).map_or(b.len(), |n| i + n)
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            match block_comment_end(b, i, 0) {
                Ok(end) => end,
                Err(_) => break,
            }
        } else {
            let Ok(end) = token_end(b, i, 0, SplitOptions::default()) else {
                break;
            };
            // An identifier run; an `E'…'` literal also starts with a letter but ends in `'`.
            if is_ident_start(c) && b[end - 1] != b'\'' {
                words.push(&stmt[i..end]);
            }
            end
        };
        i = end;
    }
    words
}

/// The first non-empty line of a statement, trimmed and cut to 80 characters, for error
/// messages and logs.
pub fn first_line(stmt: &str) -> &str {
    let line = stmt
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    match line.char_indices().nth(80) {
        Some((cut, _)) => &line[..cut],
        None => line,
    }
}

/// Replaces `{{ name }}` / `{{name}}` placeholders with parameter values.
///
/// Names match `[A-Za-z_][A-Za-z0-9_]*`; spaces and tabs around the name are allowed. Values
/// are inserted **verbatim**: scripts are trusted code, and a value is SQL text, not a quoted
/// literal. Quote it in the script where a string is meant: `WHERE day = '{{ day }}'`.
/// A placeholder without a value is an error naming it; a parameter that is given but not
/// used is fine. Text that is not exactly a placeholder (`'{{1,2},{3,4}}'`, a 2-D array
/// literal) is left alone. A name given twice is an error. Substituted values are not
/// scanned again.
pub fn substitute_params(text: &str, params: &[(String, String)]) -> Result<String> {
    for (n, (name, _)) in params.iter().enumerate() {
        if params[..n].iter().any(|(other, _)| other == name) {
            bail!("parameter {name:?} is given more than once");
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("{{") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        match placeholder(after) {
            Some((name, len)) => {
                let Some((_, value)) = params.iter().find(|(n, _)| n == name) else {
                    bail!("no value for parameter {{{{ {name} }}}} (pass --param {name}=VALUE)");
                };
                out.push_str(value);
                rest = &after[len..];
            }
            None => {
                out.push_str("{{");
                rest = &after[2..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// If `s` starts with a placeholder `{{ name }}`, its name and length in bytes.
fn placeholder(s: &str) -> Option<(&str, usize)> {
    let b = s.as_bytes();
    let blank = |c: &u8| *c == b' ' || *c == b'\t';
    let mut i = 2;
    i += b[i..].iter().take_while(|c| blank(c)).count();
    let name_start = i;
    if !b
        .get(i)
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
    {
        return None;
    }
    i += b[i..]
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    let name = &s[name_start..i];
    i += b[i..].iter().take_while(|c| blank(c)).count();
    b[i..].starts_with(b"}}").then_some((name, i + 2))
}

/// Whether `name` is a valid parameter name: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses one `--param k=v` argument. The value is everything after the first `=` and may be
/// empty or hold further `=`.
pub fn parse_param(kv: &str) -> Result<(String, String)> {
    let Some((name, value)) = kv.split_once('=') else {
        bail!("parameter {kv:?} is not NAME=VALUE");
    };
    let name = name.trim();
    if !is_param_name(name) {
        bail!("parameter name {name:?} is not valid (letters, digits and _, not starting with a digit)");
    }
    Ok((name.to_owned(), value.to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // No clippy.toml with allow-unwrap-in-tests yet.
mod tests {
    use super::*;

    fn texts(script: &str) -> Vec<String> {
        split_statements(script)
            .unwrap()
            .into_iter()
            .map(|s| s.text)
            .collect()
    }

    fn lines(script: &str) -> Vec<usize> {
        split_statements(script)
            .unwrap()
            .into_iter()
            .map(|s| s.line)
            .collect()
    }

    #[test]
    fn splits_plain_statements_and_drops_empty_ones() {
        assert_eq!(
            texts("select 1; select 2 ;;\n\n  ; select 3"),
            ["select 1", "select 2", "select 3"]
        );
        assert!(texts("").is_empty());
        assert!(texts(" ;\n; ").is_empty());
    }

    #[test]
    fn drops_comment_only_statements_and_trims_edge_comments() {
        assert_eq!(
            texts("-- header\n/* block */\nselect 1 /* inner */ + 1 -- tail\n;\n-- trailer\n"),
            ["select 1 /* inner */ + 1"]
        );
        assert!(texts("-- only a comment;\n/* and ; this */").is_empty());
    }

    #[test]
    fn reports_the_line_of_the_first_token() {
        let script = "\n-- comment\n\nselect 1;\nselect\n2; /* x\n y */ select 3;";
        assert_eq!(lines(script), [4, 5, 7]);
    }

    #[test]
    fn respects_single_quotes_with_doubling() {
        assert_eq!(
            texts("select 'a;b', 'it''s; fine'; select 2"),
            ["select 'a;b', 'it''s; fine'", "select 2"]
        );
        // Standard strings: a backslash is literal, so the quote after it closes.
        assert_eq!(
            texts(r"select 'a\'; select 2"),
            [r"select 'a\'", "select 2"]
        );
    }

    #[test]
    fn respects_escape_strings() {
        assert_eq!(
            texts(r"select E'it\'s; ok', e'\\'; select 2"),
            [r"select E'it\'s; ok', e'\\'", "select 2"]
        );
        // `xE'…'` is an identifier followed by a standard string, not an escape string.
        assert_eq!(
            texts(r"select xE'\'; select 2"),
            [r"select xE'\'", "select 2"]
        );
    }

    #[test]
    fn backslash_option_applies_to_plain_strings() {
        let opts = SplitOptions {
            backslash_escapes: true,
        };
        let stmts = split_statements_with(r"select 'it\'s; one'; select 2", opts).unwrap();
        assert_eq!(stmts[0].text, r"select 'it\'s; one'");
        assert_eq!(stmts.len(), 2);
    }

    #[test]
    fn respects_dollar_quotes() {
        let script = "create function f() returns int as $$ select 1; $$ language sql;\n\
                      do $body$ begin perform 'x;'; /* $$ */ end $body$; select 3";
        assert_eq!(
            texts(script),
            [
                "create function f() returns int as $$ select 1; $$ language sql",
                "do $body$ begin perform 'x;'; /* $$ */ end $body$",
                "select 3"
            ]
        );
        // A different tag inside does not close the quote.
        assert_eq!(
            texts("select $a$ $b$ ; $b$ ; $a$; select 2"),
            ["select $a$ $b$ ; $b$ ; $a$", "select 2"]
        );
    }

    #[test]
    fn parameters_are_not_dollar_quotes() {
        assert_eq!(
            texts("select $1, $2 from t where a = $1; select 2"),
            ["select $1, $2 from t where a = $1", "select 2"]
        );
        // `$` inside an identifier is part of it, not a quote.
        assert_eq!(texts("select a$b$ from t; select 2").len(), 2);
    }

    #[test]
    fn respects_quoted_identifiers() {
        assert_eq!(
            texts(r#"select "x; drop table y; --" from "a""b;"; select 2"#),
            [r#"select "x; drop table y; --" from "a""b;""#, "select 2"]
        );
        assert_eq!(
            texts("select `a;b`, `c``;` from t; select 2"),
            ["select `a;b`, `c``;` from t", "select 2"]
        );
    }

    #[test]
    fn comments_hide_semicolons_and_quotes() {
        assert_eq!(
            texts("select 1 -- it's; here\n, 2; select /* a ' \" ; */ 3"),
            ["select 1 -- it's; here\n, 2", "select /* a ' \" ; */ 3"]
        );
    }

    #[test]
    fn block_comments_nest() {
        assert_eq!(
            texts("select /* a /* b ; */ still ; comment */ 1; select 2"),
            ["select /* a /* b ; */ still ; comment */ 1", "select 2"]
        );
    }

    #[test]
    fn unterminated_constructs_name_their_start_line() {
        let cases = [
            (
                "select 1;\nselect 'abc;\n",
                "string literal starting on line 2",
            ),
            (
                "\n\nselect E'\\';",
                "escape string literal starting on line 3",
            ),
            ("select \"abc", "quoted identifier starting on line 1"),
            (
                "select 1;\n\n\nselect `abc",
                "backtick identifier starting on line 4",
            ),
            (
                "select 1;\n$$ abc $",
                "dollar-quoted string $$ starting on line 2",
            ),
            (
                "select 1;\n$x$ abc $y$",
                "dollar-quoted string $x$ starting on line 2",
            ),
            (
                "select 1; /* a\n/* b */\n",
                "block comment starting on line 1",
            ),
        ];
        for (script, want) in cases {
            let err = split_statements(script).unwrap_err().to_string();
            assert!(err.contains(want), "{script:?}: {err}");
        }
        // An unterminated line comment is just the end of the script.
        assert_eq!(texts("select 1 -- no newline"), ["select 1"]);
    }

    #[test]
    fn multibyte_text_is_kept_intact() {
        assert_eq!(
            texts("select 'héllo; wörld', \"naïve;\"; select 'ok'"),
            ["select 'héllo; wörld', \"naïve;\"", "select 'ok'"]
        );
        assert_eq!(texts("select é$$ from t; select 2").len(), 2);
    }

    #[test]
    fn bare_words_skip_quotes_and_comments() {
        assert_eq!(
            bare_words("/* TRUNCATE */ alter table \"append\" -- from\n APPEND FROM x"),
            ["alter", "table", "APPEND", "FROM", "x"]
        );
        assert_eq!(
            bare_words("select E'truncate', 'vacuum', $$commit$$, $1, a$b from t;"),
            ["select", "a$b", "from", "t"]
        );
        assert_eq!(bare_words("select 'unterminated truncate"), ["select"]);
    }

    #[test]
    fn first_line_skips_blank_lines_and_truncates() {
        assert_eq!(first_line("\n  \n  select *\nfrom t"), "select *");
        assert_eq!(first_line(""), "");
        let long = "é".repeat(100);
        assert_eq!(first_line(&long).chars().count(), 80);
    }

    fn params(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn substitutes_placeholders_verbatim() {
        let p = params(&[("day", "2024-01-02"), ("n", "10"), ("unused", "x")]);
        assert_eq!(
            substitute_params("where d = '{{ day }}' limit {{n}} -- {{\tday\t}}", &p).unwrap(),
            "where d = '2024-01-02' limit 10 -- 2024-01-02"
        );
    }

    #[test]
    fn leaves_non_placeholders_alone() {
        let p = params(&[("a", "1")]);
        for text in [
            "'{{1,2},{3,4}}'",
            "'{{a,b},{c,d}}'",
            "{{ a b }}",
            "{ {a} }",
            "{{",
            "}}",
        ] {
            assert_eq!(substitute_params(text, &p).unwrap(), text);
        }
        assert_eq!(substitute_params("{{{a}}}", &p).unwrap(), "{{{a}}}");
        assert_eq!(substitute_params("{{{{a}}}}", &p).unwrap(), "{{1}}");
    }

    #[test]
    fn missing_and_duplicate_params_are_errors() {
        let err = substitute_params("select {{ day }}", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("{{ day }}"), "{err}");
        assert!(err.contains("--param day="), "{err}");
        let dup = params(&[("a", "1"), ("a", "2")]);
        assert!(substitute_params("{{a}}", &dup).is_err());
    }

    #[test]
    fn substituted_values_are_not_rescanned() {
        let p = params(&[("a", "{{b}}"), ("b", "x")]);
        assert_eq!(substitute_params("{{a}}", &p).unwrap(), "{{b}}");
    }

    #[test]
    fn parses_param_arguments() {
        assert_eq!(
            parse_param("day=2024-01-02").unwrap(),
            ("day".to_owned(), "2024-01-02".to_owned())
        );
        assert_eq!(
            parse_param("q=a=b").unwrap(),
            ("q".to_owned(), "a=b".to_owned())
        );
        assert_eq!(parse_param("e=").unwrap(), ("e".to_owned(), String::new()));
        assert!(parse_param("novalue").is_err());
        assert!(parse_param("1x=2").is_err());
        assert!(parse_param("a-b=2").is_err());
        assert!(parse_param("=2").is_err());
    }
}
