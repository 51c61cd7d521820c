//! Prometheus metrics under Dapr's names (contract §7.1), plus a root-expiry gauge.

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Sentry's metrics.
pub struct Metrics {
    registry: Registry,
    /// Every `SignCertificate` call.
    pub sign_requests: IntCounter,
    /// Successful `SignCertificate` calls.
    pub sign_success: IntCounter,
    /// Failed `SignCertificate` calls, by reason.
    pub sign_failure: IntCounterVec,
    /// Failures to issue Sentry's own serving certificate.
    pub servercert_issue_failed: IntCounterVec,
    /// Trust-bundle changes (generation or reload).
    pub issuercert_changed: IntCounter,
    /// Issuer certificate NotAfter, Unix seconds.
    pub issuercert_expiry: IntGauge,
    /// Earliest trust-anchor NotAfter, Unix seconds.
    pub rootcert_expiry: IntGauge,
    /// Changed bundles that were refused (invalid), keeping the last good one.
    pub bundle_reload_failed: IntCounter,
    /// 1 when the issuer or a root expires within the warning window and Sentry cannot renew it.
    pub ca_expiry_warning: IntGauge,
    /// Requests refused by admission control, by reason (`in_flight`, `peer_rate`); beyond Dapr.
    pub requests_shed: IntCounterVec,
    /// Requests admitted and not yet answered; beyond Dapr.
    pub requests_in_flight: IntGauge,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let counter_vec = |name: &str, help: &str| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), &["reason"])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let servercert_issue_failed = counter_vec(
            "dapr_sentry_servercert_issue_failed_total",
            "The number of server TLS certificate issuance failures.",
        )?;
        // Export the series at zero from the start so alerts can use rate() on it.
        servercert_issue_failed.with_label_values(&["sign"]);
        Ok(Self {
            sign_requests: counter(
                "dapr_sentry_cert_sign_request_received_total",
                "The number of CSRs received.",
            )?,
            sign_success: counter(
                "dapr_sentry_cert_sign_success_total",
                "The number of certificates issuances that have succeeded.",
            )?,
            sign_failure: counter_vec(
                "dapr_sentry_cert_sign_failure_total",
                "The number of errors occurred when signing the CSR.",
            )?,
            servercert_issue_failed,
            issuercert_changed: counter(
                "dapr_sentry_issuercert_changed_total",
                "The number of issuer cert updates, when issuer cert or key is changed.",
            )?,
            issuercert_expiry: gauge(
                "dapr_sentry_issuercert_expiry_timestamp",
                "The unix timestamp, in seconds, when issuer/root cert will expire.",
            )?,
            rootcert_expiry: gauge(
                "dapr_sentry_rootcert_expiry_timestamp",
                "The unix timestamp, in seconds, when the first trust anchor to expire will expire.",
            )?,
            bundle_reload_failed: counter(
                "dapr_sentry_issuercert_reload_failed_total",
                "The number of changed trust bundles refused because they failed verification.",
            )?,
            ca_expiry_warning: gauge(
                "dapr_sentry_ca_expiry_warning",
                "1 when the issuer or a root expires within 30 days and Sentry holds no root key to renew it.",
            )?,
            requests_shed: counter_vec(
                "sentry_rs_requests_shed_total",
                "Requests answered RESOURCE_EXHAUSTED by admission control, by reason.",
            )?,
            requests_in_flight: gauge(
                "sentry_rs_requests_in_flight",
                "Requests admitted and not yet answered.",
            )?,
            registry,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_dapr_names() {
        let m = Metrics::new().unwrap();
        m.sign_requests.inc();
        m.sign_failure.with_label_values(&["csr"]).inc();
        m.servercert_issue_failed.with_label_values(&["sign"]).inc();
        let text = m.render();
        for name in [
            "dapr_sentry_cert_sign_request_received_total 1",
            "dapr_sentry_cert_sign_success_total 0",
            "dapr_sentry_cert_sign_failure_total{reason=\"csr\"} 1",
            "dapr_sentry_servercert_issue_failed_total",
            "dapr_sentry_issuercert_changed_total 0",
            "dapr_sentry_issuercert_expiry_timestamp",
            "dapr_sentry_rootcert_expiry_timestamp",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
