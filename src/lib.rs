//! # strapi-webhook-operator
//!
//! Makes Strapi CMS webhooks declarative, durable and observable.
//!
//! The crate is a library with one thin binary. Its modules follow the architecture:
//!
//! - [`api`]: the custom resource types, nothing else.
//! - [`key`]: `namespace/name`, the one key of an object, printed and parsed in one place.
//! - [`admin_api`]: the receiver admin API's wire types, shared by the receiver and its clients.
//! - [`strapi`]: a client for Strapi's admin REST API.
//! - [`registration`]: the one managed webhook per Strapi, shared by the controller and local mode.
//! - [`event`]: a Strapi webhook event as received, raw and parsed.
//! - [`routing`], [`sinks`] and [`queue`]: matching, rendering, delivering and storing events;
//!   they know nothing of Kubernetes.
//! - [`config`]: custom-resource specs turned into runnable routes and sinks, and how the
//!   resources refer to each other.
//! - [`cluster`]: the Kubernetes reads the controller and the receiver's cluster source share.
//! - [`controller`]: reconciles the custom resources into Strapi registrations and status.
//! - [`receiver`]: authenticated, durable ingest and at-least-once delivery.
//! - [`manifests`]: reading the resources from YAML files, with admission checked offline.
//! - [`local`]: the same parts without a cluster, from YAML files.
//! - [`validate`] and [`render`]: offline checks and previews of manifests, for CI.
//! - [`cli`]: the command line; each subcommand hands over to one module above.
//! - [`http`] and [`telemetry`]: outbound HTTP clients and logging, shared by all.
//! - [`traces`]: one W3C trace per event, from ingest through each delivery attempt.

pub mod admin_api;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod controller;
pub mod event;
pub mod http;
pub mod key;
pub mod local;
pub mod manifests;
pub mod queue;
pub mod receiver;
pub mod registration;
pub mod render;
pub mod repair;
pub mod routing;
pub mod sinks;
pub mod strapi;
pub mod telemetry;
pub mod traces;
pub mod validate;
