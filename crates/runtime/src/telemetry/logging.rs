//! Log set-up: level, destination (standard output or a file) and colour, with lines in Dapr's
//! format ([`super::log_format`]). Colour only on a terminal and never with `NO_COLOR` set; a file
//! never gets escape bytes. Tokens, keys and CSR bodies are never passed to the logger anywhere
//! in Sentry.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;

use tracing_subscriber::fmt::format::DefaultFields;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::SubscriberBuilder;
use tracing_subscriber::EnvFilter;

use super::log_format::DaprFormat;
use tracing::Level;

/// Installs the global subscriber, then logs the start-up notices. `RUST_LOG`, when set,
/// overrides `--log-level`.
pub fn init(opts: &LogOptions) -> std::io::Result<()> {
    let (writer, ansi) = destination(opts)?;
    // A subscriber already installed (tests) is not an error.
    let _ = subscriber(opts, writer, ansi).try_init();
    for notice in &opts.notices {
        tracing::warn!("{notice}");
    }
    Ok(())
}

/// Where lines go, and whether they may carry colour.
fn destination(opts: &LogOptions) -> std::io::Result<(BoxMakeWriter, bool)> {
    Ok(match &opts.file {
        Some(path) => {
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            (BoxMakeWriter::new(Mutex::new(file)), false)
        }
        None => (
            BoxMakeWriter::new(std::io::stdout),
            colour(
                std::io::stdout().is_terminal(),
                std::env::var_os("NO_COLOR"),
            ),
        ),
    })
}

/// Colour only on a terminal, and not when `NO_COLOR` is set to anything but "" (no-color.org).
fn colour(terminal: bool, no_color: Option<OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Logging settings.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Verbosity: the most detailed level logged (Dapr's `fatal` is `ERROR` here).
    pub level: Level,
    /// Optional log file.
    pub file: Option<PathBuf>,
    /// JSON lines instead of text.
    pub json: bool,
    /// Warnings about the command line, logged once the logger is installed.
    pub notices: Vec<String>,
}

type Builder = SubscriberBuilder<DefaultFields, DaprFormat, EnvFilter, BoxMakeWriter>;

fn subscriber(opts: &LogOptions, writer: BoxMakeWriter, ansi: bool) -> Builder {
    let level = match opts.level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},h2=warn,hyper=warn,tower=warn,{}",
            super::handshakes::LOG_DIRECTIVE
        ))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer)
        .event_format(DaprFormat {
            json: opts.json,
            instance: hostname(),
            ver: env!("CARGO_PKG_VERSION"),
        })
}

/// The host name (`instance`), as Go's `os.Hostname` reports it.
fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::BTreeMap;

    fn opts(json: bool, file: Option<std::path::PathBuf>) -> LogOptions {
        LogOptions {
            level: Level::DEBUG,
            file,
            json,
            notices: Vec::new(),
        }
    }

    /// Lines written through the real subscriber to a real file, as `--log-file` does.
    fn log_to_file(json: bool, emit: impl FnOnce()) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sentry.log");
        let o = opts(json, Some(path.clone()));
        let (writer, ansi) = destination(&o).unwrap();
        assert!(!ansi);
        tracing::subscriber::with_default(subscriber(&o, writer, ansi).finish(), emit);
        std::fs::read_to_string(path).unwrap()
    }

    fn forged() {
        tracing::info!(
            target: "sentry::server::grpc",
            app_id = "x level=error msg=FORGED",
            level = "error",
            n = 7u64,
            ok = true,
            "signed \x1b[31mred\x1b[0m"
        );
        tracing::warn!(target: "sentry::ca::issuer", "plain");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }

    #[test]
    fn a_log_file_holds_no_escape_byte() {
        for json in [false, true] {
            let text = log_to_file(json, forged);
            assert_eq!(text.lines().count(), 2, "{text}");
            assert!(!text.contains('\x1b'), "{text:?}");
        }
    }

    /// Key by key against lines Dapr's sentry v1.18.3 wrote (testdata, captured from
    /// `target/dapr/sentry --log-as-json`): the same fixed keys with the same kinds of value.
    #[test]
    fn json_lines_have_dapr_schema() {
        let text = log_to_file(true, forged);
        let ours: Vec<BTreeMap<String, Value>> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let dapr: Vec<BTreeMap<String, Value>> =
            include_str!("../../../../testdata/dapr-sentry-1.18.3-log.json")
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        let rfc3339_nano = |v: &Value| {
            let s = v.as_str().unwrap();
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339);
            // Go's RFC3339Nano: up to nine fraction digits, trailing zeros trimmed.
            let frac = s.split('.').nth(1).unwrap_or("Z").trim_end_matches('Z');
            t.is_ok() && frac.len() <= 9 && !frac.ends_with('0')
        };
        for d in &dapr {
            assert!(rfc3339_nano(&d["time"]), "{d:?}");
        }
        let fixed = ["instance", "level", "msg", "scope", "time", "type", "ver"];
        for line in &ours {
            for key in fixed {
                let (a, b) = (&line[key], &dapr[0][key]);
                assert!(a.is_string() && b.is_string(), "{key}: {a} / {b}");
            }
            assert!(rfc3339_nano(&line["time"]), "{line:?}");
            assert_eq!(line["type"], dapr[0]["type"]);
            assert_eq!(line["instance"], Value::from(hostname()));
            assert_eq!(line["ver"], env!("CARGO_PKG_VERSION"));
        }
        let first = &ours[0];
        assert_eq!(first["level"], "info");
        assert_eq!(first["scope"], "dapr.sentry.server");
        assert_eq!(first["msg"], "signed \x1b[31mred\x1b[0m");
        assert_eq!(first["app_id"], "x level=error msg=FORGED");
        assert_eq!(first["fields.level"], "error");
        assert_eq!(first["n"], 7);
        assert_eq!(first["ok"], true);
        assert_eq!(first.len(), fixed.len() + 4, "{first:?}");
        assert_eq!(ours[1]["level"], "warning");
        assert_eq!(ours[1]["scope"], "dapr.sentry.ca");
        assert_eq!(ours[1].len(), fixed.len(), "{:?}", ours[1]);
    }

    /// Plain text as logrus writes it (testdata: Dapr's sentry to a pipe): `time`, `level`, `msg`
    /// first, the rest sorted, and nothing a value holds can add a field.
    #[test]
    fn text_lines_are_logfmt_like_dapr() {
        let text = log_to_file(false, forged);
        let lines: Vec<&str> = text.lines().collect();
        let time = lines[1].split(' ').next().unwrap();
        assert!(
            time.starts_with("time=\"") && time.ends_with("Z\""),
            "{time}"
        );
        let rest = lines[1].split_once(' ').unwrap().1;
        assert_eq!(
            rest,
            format!(
                "level=warning msg=plain instance={} scope=dapr.sentry.ca type=log ver={}",
                hostname(),
                env!("CARGO_PKG_VERSION")
            )
        );
        let dapr = include_str!("../../../../testdata/dapr-sentry-1.18.3-log.txt");
        let dapr_keys: Vec<&str> = dapr
            .lines()
            .next()
            .unwrap()
            .split(' ')
            .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
            .filter(|k| !k.contains('"'))
            .collect();
        let our_keys: Vec<&str> = lines[1]
            .split(' ')
            .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
            .collect();
        assert_eq!(our_keys, dapr_keys);
        assert!(
            lines[0].contains(r#" app_id="x level=error msg=FORGED" fields.level=error "#),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].contains(r#" level=info msg="signed \x1b[31mred\x1b[0m" "#),
            "{}",
            lines[0]
        );
    }
}
