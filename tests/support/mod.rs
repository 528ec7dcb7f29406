//! Test support shared by the integration tests: a real Strapi to talk to ([`StrapiServer`]) and a
//! loopback HTTP listener that records every request it gets ([`CaptureServer`]), for use as a
//! webhook URL or a sink. Include it with `mod support;` (or `#[path]` from a test folder).
#![allow(dead_code, unused_imports)] // Each test binary uses a different subset.

pub mod capture;
pub mod strapi;

pub use capture::{CaptureServer, CapturedRequest};
pub use strapi::StrapiServer;
