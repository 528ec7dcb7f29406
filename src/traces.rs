//! Traces from Strapi to the sink: one W3C trace per stored event, with the event's ingest as
//! its root span and each delivery attempt as a child span, optionally exported over OTLP/HTTP.
//!
//! The trace id is the event id itself (a UUIDv7 is 128 bits, like a trace id), and the root
//! span id is derived from it, so a delivery retried after a restart joins the same trace
//! without anything stored for it. Every attempt gets its own span id, sent to the sink in the
//! `traceparent` header so the sink's own spans hang under that attempt.
//!
//! Spans are built whole when they end and handed to the OpenTelemetry SDK's batch processor,
//! which exports them from its own thread; with export off, only the header is made.

use std::{
    borrow::Cow,
    sync::Arc,
    time::{Duration, SystemTime},
};

use opentelemetry::{
    InstrumentationScope, KeyValue,
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    trace::{BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor},
};

/// The W3C trace-context header sent with every sink call.
pub const TRACEPARENT_HEADER: &str = "traceparent";

// The path OTLP/HTTP collectors take traces on, below the base endpoint.
const OTLP_TRACES_PATH: &str = "v1/traces";
// How long one export may take before the batch is given up (the sink calls never wait on it).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The trace of one stored event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventTrace {
    /// The trace id: the event id's 128 bits.
    pub trace_id: TraceId,
    /// The span id of the event's ingest, parent of every delivery attempt.
    pub root: SpanId,
}

impl EventTrace {
    /// The trace of the event with this id. Event ids are UUIDs; anything else (a queue
    /// written by another tool) is hashed into a trace id, so it still gets a stable one.
    pub fn of_event(event_id: &str) -> Self {
        let bits = uuid::Uuid::parse_str(event_id)
            .map(|id| id.as_u128())
            .unwrap_or_else(|_| fnv(event_id.as_bytes()));
        // All zeros is the invalid id in both fields; a real UUIDv7 never has it.
        let bits = bits.max(1);
        let folded = u64::try_from(bits >> 64).unwrap_or(0) ^ (bits as u64).rotate_left(17);
        Self {
            trace_id: TraceId::from(bits),
            root: SpanId::from(folded.max(1)),
        }
    }
}

/// Two FNV-1a 64-bit hashes side by side, for ids that are not UUIDs.
fn fnv(bytes: &[u8]) -> u128 {
    let hash = |seed: u64| {
        bytes.iter().fold(seed, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    (u128::from(hash(0xcbf2_9ce4_8422_2325)) << 64) | u128::from(hash(0x6c62_272e_07bb_0142))
}

/// The `traceparent` value of a span: version 00, sampled.
pub fn traceparent(trace_id: TraceId, span_id: SpanId) -> String {
    format!("00-{trace_id}-{span_id}-01")
}

/// One delivery attempt's span, from the moment it is sent until its outcome is known.
#[derive(Debug)]
pub struct Attempt {
    trace: EventTrace,
    span_id: SpanId,
    started: SystemTime,
}

impl Attempt {
    /// The header value that makes the sink's work part of this attempt.
    pub fn traceparent(&self) -> String {
        traceparent(self.trace.trace_id, self.span_id)
    }
}

/// What a span is, apart from its trace and times.
struct Shape {
    name: &'static str,
    kind: SpanKind,
    id: SpanId,
    parent: SpanId,
}

/// What went wrong in a span, if anything.
pub type SpanError = Option<String>;

/// Where finished spans go: nowhere, or an OTLP/HTTP collector. Cheap to clone.
#[derive(Clone, Default)]
pub struct Tracer {
    export: Option<Arc<BatchSpanProcessor>>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("exporting", &self.export.is_some())
            .finish()
    }
}

/// The OTLP exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    /// The endpoint is not an http(s) URL.
    #[error("the OTLP endpoint {0:?} is not an http:// or https:// URL")]
    Endpoint(String),
    /// The SDK refused the exporter's configuration.
    #[error("setting up the OTLP exporter failed: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

impl Tracer {
    /// A tracer that exports every span to the OTLP/HTTP collector at `endpoint` (the base
    /// URL, as in `OTEL_EXPORTER_OTLP_ENDPOINT`: spans go to `<endpoint>/v1/traces`), as
    /// `service` in the spans' resource.
    pub fn otlp(endpoint: &str, service: &'static str) -> Result<Self, TracesError> {
        let base = url::Url::parse(endpoint)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .ok_or_else(|| TracesError::Endpoint(endpoint.to_owned()))?;
        let traces = format!("{}/{OTLP_TRACES_PATH}", base.as_str().trim_end_matches('/'));
        crate::http::install_crypto_provider();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(traces)
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        processor.set_resource(&Resource::builder().with_service_name(service).build());
        Ok(Self {
            export: Some(Arc::new(processor)),
        })
    }

    /// True when spans are exported.
    pub fn exporting(&self) -> bool {
        self.export.is_some()
    }

    /// Records the ingest of an event, the root of its trace, from `started` until now.
    pub fn ingested(&self, event_id: &str, started: SystemTime, attributes: Vec<KeyValue>) {
        let trace = EventTrace::of_event(event_id);
        let shape = Shape {
            name: "ingest",
            kind: SpanKind::Server,
            id: trace.root,
            parent: SpanId::INVALID,
        };
        self.end(trace, shape, started, attributes, None);
    }

    /// Starts a delivery attempt of the event `event_id`, with a span id of its own.
    pub fn attempt(&self, event_id: &str) -> Attempt {
        let trace = EventTrace::of_event(event_id);
        let span_id = loop {
            let id = rand::random::<u64>();
            if id != 0 && id.to_be_bytes() != trace.root.to_bytes() {
                break SpanId::from(id);
            }
        };
        Attempt {
            trace,
            span_id,
            started: SystemTime::now(),
        }
    }

    /// Ends an attempt with its outcome (`error` for an attempt that did not deliver).
    pub fn attempted(&self, attempt: &Attempt, attributes: Vec<KeyValue>, error: SpanError) {
        let shape = Shape {
            name: "deliver",
            kind: SpanKind::Client,
            id: attempt.span_id,
            parent: attempt.trace.root,
        };
        self.end(attempt.trace, shape, attempt.started, attributes, error);
    }

    fn end(
        &self,
        trace: EventTrace,
        shape: Shape,
        started: SystemTime,
        attributes: Vec<KeyValue>,
        error: SpanError,
    ) {
        let Some(export) = &self.export else {
            return;
        };
        let context = SpanContext::new(
            trace.trace_id,
            shape.id,
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        );
        export.on_end(SpanData {
            span_context: context,
            parent_span_id: shape.parent,
            parent_span_is_remote: false,
            span_kind: shape.kind,
            name: Cow::Borrowed(shape.name),
            start_time: started,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: error.map_or(Status::Ok, Status::error),
            instrumentation_scope: InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        });
    }

    /// Sends every span ended so far; waits up to the export timeout. Blocks: call it off the
    /// async workers.
    pub fn flush(&self) {
        if let Some(export) = &self.export
            && let Err(error) = export.force_flush()
        {
            tracing::warn!(%error, "exporting the last spans failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_id_is_the_event_id_and_survives_a_restart() {
        let id = uuid::Uuid::now_v7();
        let trace = EventTrace::of_event(&id.to_string());
        assert_eq!(trace.trace_id.to_string(), id.simple().to_string());
        assert_eq!(trace, EventTrace::of_event(&id.to_string()));
        assert_ne!(trace.root, SpanId::INVALID);
    }

    #[test]
    fn ids_that_are_not_uuids_still_get_a_stable_valid_trace() {
        let trace = EventTrace::of_event("legacy-42");
        assert_ne!(trace.trace_id, TraceId::INVALID);
        assert_eq!(trace, EventTrace::of_event("legacy-42"));
        assert_ne!(trace, EventTrace::of_event("legacy-43"));
    }

    #[test]
    fn attempts_share_the_trace_and_differ_in_span() {
        let tracer = Tracer::default();
        let id = uuid::Uuid::now_v7().to_string();
        let (first, second) = (tracer.attempt(&id), tracer.attempt(&id));
        let header = first.traceparent();
        let parts: Vec<&str> = header.split('-').collect();
        assert_eq!(parts.len(), 4, "{header}");
        assert_eq!((parts[0], parts[3]), ("00", "01"));
        assert_eq!(parts[1], id.replace('-', ""));
        assert_eq!(parts[2].len(), 16);
        assert_eq!(second.traceparent()[..36], header[..36]);
        assert_ne!(second.traceparent(), header);
    }

    #[test]
    fn an_endpoint_that_is_not_http_is_refused() {
        assert!(matches!(
            Tracer::otlp("collector:4318", "test"),
            Err(TracesError::Endpoint(_))
        ));
    }
}
