//! How PostgreSQL failures become [`StoreError`]s, which of them a transaction may retry,
//! and how a connection URL is shown without its password.
//!
//! * `Unavailable`: the server cannot be reached or is going away (connection refused or
//!   closed, timeouts, pool timeouts, `08xxx` connection errors, `57P0x` shutdowns,
//!   too many connections); the relay answers `storage_unavailable` and clients retry.
//! * `Full`: `53100 disk_full`.
//! * `Database`: anything else, with the server's message (never a parameter value).
//!
//! A [`Failure`] also says whether running the whole transaction again may succeed:
//! deadlocks (`40P01`) and serialization failures (`40001`) always, and unique
//! violations (`23505`), which here only come from two nodes inserting the same key at
//! once (the same handle, message id or nonce): the second attempt reads the first's
//! row and answers as for a retry.

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// A failure of a statement or transaction, and whether a new attempt may succeed.
#[derive(Debug)]
pub(super) struct Failure {
    /// What the caller is told if no attempt is left.
    pub error: StoreError,
    /// Running the transaction again may succeed.
    pub retry: bool,
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Failure {
        Failure {
            retry: retryable(&e),
            error: pg_error(&e),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Failure {
        Failure {
            error,
            retry: false,
        }
    }
}

impl From<PoolError> for Failure {
    fn from(e: PoolError) -> Failure {
        Failure::from(pool_error(e))
    }
}

impl From<Failure> for StoreError {
    fn from(f: Failure) -> StoreError {
        f.error
    }
}

/// Whether the transaction that failed with `e` may succeed when run again.
fn retryable(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|code| {
        *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::UNIQUE_VIOLATION
    })
}

/// Maps a PostgreSQL error to a [`StoreError`].
pub(super) fn pg_error(e: &tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::DISK_FULL {
            return StoreError::Full;
        }
        let gone = code.code().starts_with("08")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
                SqlState::QUERY_CANCELED,
            ]
            .contains(code);
        if gone {
            tracing::debug!(
                code = code.code(),
                message = db.message(),
                "PostgreSQL is unavailable"
            );
            return StoreError::Unavailable;
        }
        return StoreError::Database(format!(
            "{} {}: {}",
            db.severity(),
            code.code(),
            db.message()
        ));
    }
    let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
    let text = e.to_string();
    if e.is_closed() || io || text.starts_with("timeout") {
        tracing::debug!(error = %text, "PostgreSQL is unavailable");
        return StoreError::Unavailable;
    }
    match std::error::Error::source(e) {
        Some(source) => StoreError::Database(format!("{text}: {source}")),
        None => StoreError::Database(text),
    }
}

/// Maps a failure to get a pooled connection to a [`StoreError`].
pub(super) fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => pg_error(&e),
        PoolError::Timeout(kind) => {
            tracing::debug!(?kind, "no PostgreSQL connection in time");
            StoreError::Unavailable
        }
        PoolError::Closed => StoreError::Unavailable,
        PoolError::NoRuntimeSpecified => {
            StoreError::Database("the connection pool has no runtime".into())
        }
        PoolError::PostCreateHook(e) => StoreError::Database(format!("new connection: {e}")),
    }
}

/// What stands for a password in [`redact_url`]'s output.
const HIDDEN: &str = "***";

/// `url` (a `postgres://` URL or a `key=value` connection string) with every password
/// replaced by `***`: the one in the user information (`user:secret@`) and any
/// `password` parameter. Use it wherever a connection string could be shown or logged.
///
/// Other URLs with user information (`nats://user:secret@host`), and comma-separated lists
/// of them, are redacted the same way.
pub fn redact_url(url: &str) -> String {
    if !url.contains("://") {
        return redact_key_values(url);
    }
    url.split(',')
        .map(|one| match one.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{}", redact_uri(rest)),
            None => redact_key_values(one),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The part of a URL after its scheme. Like the client's parser, everything before the
/// first `@` is the user information.
fn redact_uri(rest: &str) -> String {
    let (credentials, rest) = match rest.split_once('@') {
        Some((credentials, rest)) => (Some(credentials), rest),
        None => (None, rest),
    };
    let mut out = String::with_capacity(rest.len() + 16);
    if let Some(credentials) = credentials {
        match credentials.split_once(':') {
            Some((user, _password)) => {
                out.push_str(user);
                out.push(':');
                out.push_str(HIDDEN);
            }
            None => out.push_str(credentials),
        }
        out.push('@');
    }
    let Some((location, query)) = rest.split_once('?') else {
        out.push_str(rest);
        return out;
    };
    out.push_str(location);
    out.push('?');
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((key, _)) if is_password_key(key) => format!("{key}={HIDDEN}"),
            _ => param.to_owned(),
        })
        .collect();
    out.push_str(&params.join("&"));
    out
}

/// Whether a parameter's key names the password (keys may be percent-encoded in a URL).
fn is_password_key(key: &str) -> bool {
    percent_decoded(key).eq_ignore_ascii_case("password")
}

/// `text` with `%XX` escapes decoded (bytes that are not UTF-8 come out replaced).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|_| b == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `key=value key='quoted value'` connection string with the value of `password`
/// replaced.
fn redact_key_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let key_start = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..key_start]);
        rest = &rest[key_start..];
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        out.push_str(key);
        rest = &rest[key_end..];
        let before_eq = rest.len() - rest.trim_start().len();
        if !rest[before_eq..].starts_with('=') {
            continue;
        }
        let after_eq = before_eq + 1;
        let value_start = after_eq + (rest[after_eq..].len() - rest[after_eq..].trim_start().len());
        out.push_str(&rest[..value_start]);
        rest = &rest[value_start..];
        let value_end = value_len(rest);
        if is_password_key(key) {
            out.push_str(HIDDEN);
        } else {
            out.push_str(&rest[..value_end]);
        }
        rest = &rest[value_end..];
    }
    out
}

/// Length of the value at the start of `text`: a single-quoted string (with `\`
/// escapes) or everything up to the next white space.
fn value_len(text: &str) -> usize {
    let mut chars = text.char_indices();
    if text.starts_with('\'') {
        chars.next();
        let mut escaped = false;
        for (i, c) in chars {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '\'' => return i + 1,
                _ => {}
            }
        }
        return text.len();
    }
    text.find(char::is_whitespace).unwrap_or(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_every_form_of_connection_string() {
        let cases = [
            (
                "postgres://parley:s3cret@db.example:5432/parley?sslmode=disable",
                "postgres://parley:***@db.example:5432/parley?sslmode=disable",
            ),
            (
                "postgresql://parley:s3cret@h/db?password=s3cret&application_name=x",
                "postgresql://parley:***@h/db?password=***&application_name=x",
            ),
            (
                "postgres://parley@h/db?options=-csearch_path%3Dt_1",
                "postgres://parley@h/db?options=-csearch_path%3Dt_1",
            ),
            ("postgres://h:5432/db", "postgres://h:5432/db"),
            (
                "host=h user=parley password=s3cret dbname=db",
                "host=h user=parley password=*** dbname=db",
            ),
            (
                "host=h password = 's3 \\' cret' dbname=db",
                "host=h password = *** dbname=db",
            ),
            ("password=s3cret", "password=***"),
            (
                "postgres://h/db?%70assword=s3cret",
                "postgres://h/db?%70assword=***",
            ),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("s3"), "{url}");
        }
    }

    #[test]
    fn odd_strings_never_panic() {
        for text in [
            "",
            "=",
            "password",
            "password=",
            "postgres://",
            "postgres://@",
            "a='",
        ] {
            let _ = redact_url(text);
        }
    }
}
