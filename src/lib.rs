//! # strapi-webhook-operator
//!
//! Makes Strapi CMS webhooks declarative, durable and observable.
//!
//! The crate is a library with one thin binary. Its modules follow the architecture:
//!
//! - [`api`]: the custom resource types, nothing else.
//! - [`event`]: a Strapi webhook event as received, raw and parsed.
//! - [`cli`]: the command line; each subcommand hands over to one module below.
//! - [`telemetry`]: logging setup shared by every subcommand.

pub mod api;
pub mod cli;
pub mod config;
pub mod controller;
pub mod event;
pub mod local;
pub mod queue;
pub mod receiver;
pub mod registration;
pub mod routing;
pub mod sinks;
pub mod strapi;
pub mod telemetry;
