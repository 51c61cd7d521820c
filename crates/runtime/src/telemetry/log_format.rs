//! The shape of one log line, as Dapr's logger (logrus under `github.com/dapr/kit/logger`) writes
//! it: JSON with `time` (RFC 3339, nanoseconds), `level`, `msg`, `scope`, `type: "log"`,
//! `instance`, `ver` and every other field as a top-level key; or logfmt text with the same keys,
//! values quoted as Go's `%q` whenever they hold anything but `[A-Za-z0-9-._/@^+]`. A field that
//! would overwrite one of the fixed keys is renamed `fields.<key>` (logrus's rule), so no value can
//! forge another field. Colour (the level only) is written only when the writer asks for ANSI.
//! This module formats; [`super::logging`] decides where lines go and whether colour is on.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The keys every line carries; a field of the same name becomes `fields.<name>`.
const FIXED_KEYS: [&str; 7] = ["time", "level", "msg", "scope", "type", "instance", "ver"];

/// Dapr's scope for each of our modules (first match; a module path is matched by its prefix up
/// to a `::` or `_`). Foreign crates log as `dapr.sentry` with their target as a `target` field.
const SCOPES: [(&str, &str); 13] = [
    ("server::oidc", "dapr.sentry.server.oidc.http"),
    ("server", "dapr.sentry.server"),
    ("ca::jwt", "dapr.sentry.ca.jwt"),
    ("app::jwt", "dapr.sentry.ca.jwt"),
    ("bundle::jwt", "dapr.sentry.ca.jwt"),
    ("store::jwt", "dapr.sentry.ca.jwt"),
    ("ca", "dapr.sentry.ca"),
    ("bundle", "dapr.sentry.ca"),
    ("store", "dapr.sentry.ca"),
    ("rotation", "dapr.sentry.ca"),
    ("validator::kubernetes", "dapr.sentry.identity.kubernetes"),
    ("validator::jwks", "dapr.sentry.identity.jwks"),
    ("validator", "dapr.sentry.identity"),
];

/// The crates whose module paths [`scope`] maps (a target starts with one of them).
const CRATES: [&str; 3] = ["sentry_runtime", "sentry_core", "sentry"];

/// The scope Dapr's sentry uses for what `target` (a tracing target) does, or `None` when the
/// target is not one of ours.
pub fn scope(target: &str) -> Option<&'static str> {
    let module = CRATES
        .iter()
        .find_map(|krate| match target.strip_prefix(krate)? {
            "" => Some(""),
            rest => rest.strip_prefix("::"),
        })?;
    if module.is_empty() {
        return Some("dapr.sentry");
    }
    let matches = |prefix: &str| {
        module
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::") || rest.starts_with('_'))
    };
    let scope = SCOPES
        .iter()
        .find(|(prefix, _)| matches(prefix))
        .map_or("dapr.sentry", |(_, scope)| scope);
    Some(scope)
}

/// Dapr's (logrus's) name of a level.
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warning",
        Level::ERROR => "error",
    }
}

/// logrus's terminal colours.
fn level_colour(level: &Level) -> &'static str {
    match *level {
        Level::TRACE | Level::DEBUG => "37",
        Level::INFO => "36",
        Level::WARN => "33",
        Level::ERROR => "31",
    }
}

/// A field value, typed as JSON will show it.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
}

impl Value {
    fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Str(s) => s.as_str().into(),
            Value::Int(i) => (*i).into(),
            Value::UInt(u) => (*u).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map_or_else(|| f.to_string().into(), serde_json::Value::Number),
            Value::Bool(b) => (*b).into(),
        }
    }

    fn to_text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::UInt(u) => u.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
        }
    }
}

/// The fields of one event: the message and the rest, keyed as they will be written.
#[derive(Default)]
struct Fields {
    msg: String,
    rest: BTreeMap<String, Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if name == "message" {
            self.msg = value.to_text();
            return;
        }
        let key = if FIXED_KEYS.contains(&name) {
            format!("fields.{name}")
        } else {
            name.to_owned()
        };
        self.rest.insert(key, value);
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::Str(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::Str(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::Int(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::UInt(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::Float(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::Str(value.to_string()));
    }
}

/// Dapr's line format; `instance` and `ver` are fixed for the process.
#[derive(Debug, Clone)]
pub struct DaprFormat {
    /// JSON lines instead of logfmt text.
    pub json: bool,
    /// Host name (`instance`).
    pub instance: String,
    /// Version (`ver`).
    pub ver: &'static str,
}

impl DaprFormat {
    /// One line (with its newline) for an event at `level` from `target`.
    fn line(
        &self,
        now: OffsetDateTime,
        level: &Level,
        target: &str,
        mut fields: Fields,
        ansi: bool,
    ) -> String {
        let time = now
            .format(&Rfc3339)
            .unwrap_or_else(|_| now.unix_timestamp().to_string());
        let scope = scope(target).unwrap_or_else(|| {
            fields
                .rest
                .insert("target".to_owned(), Value::Str(target.to_owned()));
            "dapr.sentry"
        });
        let mut rest = fields.rest;
        for (key, value) in [
            ("scope", scope),
            ("type", "log"),
            ("instance", self.instance.as_str()),
            ("ver", self.ver),
        ] {
            rest.insert(key.to_owned(), Value::Str(value.to_owned()));
        }
        if self.json {
            let mut map: BTreeMap<&str, serde_json::Value> = rest
                .iter()
                .map(|(k, v)| (k.as_str(), v.to_json()))
                .collect();
            map.insert("time", time.into());
            map.insert("level", level_name(level).into());
            map.insert("msg", fields.msg.into());
            let mut out = serde_json::to_string(&map).unwrap_or_default();
            out.push('\n');
            return out;
        }
        let mut out = String::new();
        push_pair(&mut out, "time", &time);
        if ansi {
            let _ = write!(
                out,
                " level=\x1b[{}m{}\x1b[0m",
                level_colour(level),
                level_name(level)
            );
        } else {
            out.push(' ');
            push_pair(&mut out, "level", level_name(level));
        }
        out.push(' ');
        push_pair(&mut out, "msg", &fields.msg);
        for (key, value) in &rest {
            out.push(' ');
            push_pair(&mut out, key, &value.to_text());
        }
        out.push('\n');
        out
    }
}

impl<S, N> FormatEvent<S, N> for DaprFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let line = self.line(
            OffsetDateTime::now_utc(),
            meta.level(),
            meta.target(),
            fields,
            writer.has_ansi_escapes(),
        );
        writer.write_str(&line)
    }
}

/// `key=value`, the value quoted when logrus would quote it. Keys are field names (identifiers)
/// or fixed, so they need no quoting.
fn push_pair(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push('=');
    let plain = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._/@^+".contains(c));
    if plain {
        out.push_str(value);
    } else {
        go_quote(out, value);
    }
}

/// Go's `strconv.Quote`: a double-quoted string with control and invisible characters escaped,
/// so a value can hold no newline, no escape byte and no unbalanced quote.
fn go_quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() || invisible(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Format characters that reorder or hide text (bidi controls, zero-width marks).
fn invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_modules_map_to_dapr_scopes() {
        for (target, want) in [
            ("sentry", Some("dapr.sentry")),
            ("sentry::app", Some("dapr.sentry")),
            ("sentry_runtime", Some("dapr.sentry")),
            ("sentry_runtime::server::grpc", Some("dapr.sentry.server")),
            (
                "sentry_runtime::server::oidc_listener",
                Some("dapr.sentry.server.oidc.http"),
            ),
            ("sentry_core::ca::issuer", Some("dapr.sentry.ca")),
            ("sentry_core::ca::jwt", Some("dapr.sentry.ca.jwt")),
            ("sentry::app::jwt", Some("dapr.sentry.ca.jwt")),
            (
                "sentry_runtime::store::jwt::kube",
                Some("dapr.sentry.ca.jwt"),
            ),
            ("sentry_runtime::store::kube", Some("dapr.sentry.ca")),
            ("sentry_runtime::rotation::journal", Some("dapr.sentry.ca")),
            (
                "sentry_runtime::validator::kubernetes::token",
                Some("dapr.sentry.identity.kubernetes"),
            ),
            (
                "sentry_runtime::validator::jwks::source",
                Some("dapr.sentry.identity.jwks"),
            ),
            (
                "sentry_runtime::validator::insecure",
                Some("dapr.sentry.identity"),
            ),
            ("sentry_runtime::cache", Some("dapr.sentry")),
            ("sentryx", None),
            ("sentry_corex::ca", None),
            ("sentry_client", None),
            ("kube_client::client", None),
        ] {
            assert_eq!(scope(target), want, "{target}");
        }
    }

    #[test]
    fn go_quoting() {
        let q = |s: &str| {
            let mut out = String::new();
            push_pair(&mut out, "k", s);
            out
        };
        assert_eq!(q("a-b.c_d/e@f^g+h1"), "k=a-b.c_d/e@f^g+h1");
        assert_eq!(q(""), "k=");
        assert_eq!(
            q("x level=error msg=FORGED"),
            r#"k="x level=error msg=FORGED""#
        );
        assert_eq!(q("a\"b\\c\nd\x1b[31m"), r#"k="a\"b\\c\nd\x1b[31m""#);
        assert_eq!(q("é\u{202e}\u{85}"), "k=\"é\\u202e\\u0085\"");
    }
}
