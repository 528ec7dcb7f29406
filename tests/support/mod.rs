//! Test support shared by every integration test, included with `mod support;` (from a folder
//! such as `tests/controller/`, with `#[path = "../support/mod.rs"] mod support;`):
//!
//! - [`strapi`]: a real Strapi to talk to ([`StrapiServer`]) and a guard that removes the
//!   webhooks a test registers in it ([`StrapiCleanup`]);
//! - [`capture`]: loopback HTTP listeners that record every request and wake waiters on each
//!   one ([`CaptureServer`]);
//! - [`receiver`]: a receiver running in-process or as the binary, capture sinks and events;
//! - [`fake_api`]: the in-memory Kubernetes API server behind `kube::Client`;
//! - [`eventually`]: retrying a check until it holds, for state nothing notifies about;
//! - [`examples`], [`nextjs`], [`nats_server`]: the shipped examples, a real Next.js site and a
//!   real JetStream server.
#![allow(dead_code, unused_imports)] // Each test binary uses a different subset.

pub mod capture;
pub mod eventually;
pub mod examples;
pub mod fake_api;
pub mod nats_server;
pub mod nextjs;
pub mod receiver;
pub mod strapi;

pub use capture::{CaptureServer, CapturedRequest};
pub use eventually::eventually;
pub use strapi::{StrapiCleanup, StrapiServer};
