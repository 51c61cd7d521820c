//! Options of the `jwks` token validator (`spec.mtls.tokenValidators[].options`), converted to
//! strings and parsed as Dapr does.

use std::collections::BTreeMap;
use std::time::Duration;

use sentry_core::go_text::parse_go_duration;
use sentry_runtime::validator::jwks::{
    JwksOptions, DEFAULT_MIN_REFRESH_INTERVAL, DEFAULT_REQUEST_TIMEOUT,
};

/// Parses the options map; every value is taken as a string.
pub fn parse_options(options: &BTreeMap<String, serde_yaml::Value>) -> Result<JwksOptions, String> {
    let get = |name: &str| {
        options
            .get(name)
            .map(value_to_string)
            .filter(|v| !v.is_empty())
    };
    let source = get("source").ok_or("the jwks validator requires the option 'source'")?;
    let duration = |name: &str, default: Duration, minimum: Duration| -> Result<Duration, String> {
        match get(name) {
            None => Ok(default),
            Some(v) => {
                let d = match v.parse::<u64>() {
                    Ok(secs) => Duration::from_secs(secs),
                    Err(_) => parse_go_duration(&v).map_err(|e| format!("option '{name}': {e}"))?,
                };
                // Dapr applies a value only above a floor; smaller values keep the default.
                Ok(if d > minimum { d } else { default })
            }
        }
    };
    Ok(JwksOptions {
        source,
        ca_certificate: get("caCertificate"),
        min_refresh_interval: duration(
            "minRefreshInterval",
            DEFAULT_MIN_REFRESH_INTERVAL,
            Duration::from_secs(1),
        )?,
        request_timeout: duration(
            "requestTimeout",
            DEFAULT_REQUEST_TIMEOUT,
            Duration::from_millis(1),
        )?,
    })
}

fn value_to_string(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Null => String::new(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::Number(n) => n.to_string(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(yaml: &str) -> Result<JwksOptions, String> {
        parse_options(&serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn parses_and_applies_floors() {
        let o = opts("source: https://x/jwks.json\nminRefreshInterval: 30s\nrequestTimeout: 5\n")
            .unwrap();
        assert_eq!(o.source, "https://x/jwks.json");
        assert_eq!(o.min_refresh_interval, Duration::from_secs(30));
        assert_eq!(o.request_timeout, Duration::from_secs(5));
        assert_eq!(o.ca_certificate, None);
        let o = opts("source: f\nminRefreshInterval: 500ms\nrequestTimeout: 1ms\n").unwrap();
        assert_eq!(o.min_refresh_interval, DEFAULT_MIN_REFRESH_INTERVAL);
        assert_eq!(o.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert!(opts("caCertificate: x\n").is_err());
        assert!(opts("source: f\nrequestTimeout: soon\n").is_err());
    }
}
