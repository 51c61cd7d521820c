//! The pure core of sentry-rs: data and cryptography with no runtime, no file and no network
//! I/O. SPIFFE names ([`spiffe`]), strict PEM and DER framing ([`encoding`]), Go's text forms of
//! durations and booleans ([`go_text`]), JOSE keys and signatures ([`jose`]), certificate profiles
//! ([`profile`]), the trust bundle: generate, parse, verify ([`bundle`]), and the CA's work on one
//! request: parse the CSR, sign the leaf or the JWT-SVID ([`ca`]).
//!
//! Everything here is a function of its inputs (the clock is a parameter), so the runtime crate
//! (`sentry-runtime`) decides when and where; this crate must not depend on it or on tokio.

pub mod bundle;
pub mod ca;
pub mod encoding;
pub mod go_text;
pub mod jose;
pub mod profile;
pub mod spiffe;
