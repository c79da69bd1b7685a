//! One trace per config change, across processes: the W3C trace context (`traceparent`,
//! `tracestate`) of the span that made a change travels with it, in the NATS headers of
//! the key-value write, in [`crate::bus::KvState`] and in [`crate::bus::KvEvent`], so the
//! reader's spans become children of the writer's.
//!
//! Without an OTLP exporter (`OTEL_EXPORTER_OTLP_ENDPOINT` unset) spans have no trace id:
//! nothing is carried and no header is written.
use kgw_proto::nats::TRACEPARENT_HEADER;
use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TraceContextExt as _,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The trace context of one span, as W3C header name → value pairs (sorted by name).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct TraceHeaders(Vec<(String, String)>);

impl TraceHeaders {
    /// The context of `span`; None when it has no valid trace id (no exporter, or the span
    /// is disabled).
    pub fn of(span: &tracing::Span) -> Option<Self> {
        let context = span.context();
        if !context.span().span_context().is_valid() {
            return None;
        }
        let mut headers = Collect(Vec::new());
        TraceContextPropagator::new().inject_context(&context, &mut headers);
        let mut pairs = headers.0;
        pairs.sort();
        (!pairs.is_empty()).then_some(Self(pairs))
    }

    /// The context of the current span.
    pub fn current() -> Option<Self> {
        Self::of(&tracing::Span::current())
    }

    /// The context a NATS message carries, if any.
    pub fn from_nats(headers: Option<&async_nats::HeaderMap>) -> Option<Self> {
        let headers = headers?;
        let mut pairs: Vec<(String, String)> = TraceContextPropagator::new()
            .fields()
            .filter_map(|name| Some((name.to_string(), headers.get(name)?.as_str().to_string())))
            .collect();
        pairs.sort();
        let trace = Self(pairs);
        trace.context().span().span_context().is_valid().then_some(trace)
    }

    /// Adds the context to a NATS message's headers.
    pub fn write_nats(&self, headers: &mut async_nats::HeaderMap) {
        for (name, value) in &self.0 {
            headers.insert(name.as_str(), value.as_str());
        }
    }

    /// The `traceparent` value (`00-<trace id>-<span id>-<flags>`).
    pub fn traceparent(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == TRACEPARENT_HEADER)
            .map(|(_, v)| v.as_str())
    }

    fn context(&self) -> opentelemetry::Context {
        TraceContextPropagator::new().extract(&Pairs(&self.0))
    }

    /// Makes `span` a child of this context. Call before the span is entered.
    pub fn adopt(&self, span: &tracing::Span) {
        // Fails only when no OpenTelemetry layer is installed: then there is no trace to join.
        let _ = span.set_parent(self.context());
    }

    /// Links `span` to this context: a change that was merged into another one's work.
    pub fn link(&self, span: &tracing::Span) {
        let context = self.context();
        span.add_link(context.span().span_context().clone());
    }
}

/// Parents `span` on the first of `traces` and links it to the others (several changes
/// merged into one piece of work), so each change's trace reaches it.
pub fn join<'a>(span: &tracing::Span, traces: impl IntoIterator<Item = &'a TraceHeaders>) {
    let mut distinct: Vec<&TraceHeaders> = traces.into_iter().collect();
    distinct.sort();
    distinct.dedup();
    let mut traces = distinct.into_iter();
    if let Some(parent) = traces.next() {
        parent.adopt(span);
    }
    for other in traces {
        other.link(span);
    }
}

struct Collect(Vec<(String, String)>);

impl Injector for Collect {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

struct Pairs<'a>(&'a [(String, String)]);

impl Extractor for Pairs<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == key).map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use kgw_proto::nats::TRACESTATE_HEADER;

    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn the_headers_are_the_contract_in_proto() {
        let propagator = TraceContextPropagator::new();
        let fields: Vec<&str> = propagator.fields().collect();
        assert_eq!(fields, [TRACEPARENT_HEADER, TRACESTATE_HEADER]);
    }

    #[test]
    fn a_context_goes_through_nats_headers_and_back() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(TRACEPARENT_HEADER, PARENT);
        let trace = TraceHeaders::from_nats(Some(&headers)).expect("valid context");
        assert_eq!(trace.traceparent(), Some(PARENT));
        let mut again = async_nats::HeaderMap::new();
        trace.write_nats(&mut again);
        assert_eq!(TraceHeaders::from_nats(Some(&again)), Some(trace));
    }

    #[test]
    fn garbage_or_missing_headers_carry_no_context() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(TRACEPARENT_HEADER, "not a trace");
        assert_eq!(TraceHeaders::from_nats(Some(&headers)), None);
        assert_eq!(TraceHeaders::from_nats(Some(&async_nats::HeaderMap::new())), None);
        assert_eq!(TraceHeaders::from_nats(None), None);
    }

    #[test]
    fn spans_without_an_exporter_carry_nothing() {
        let span = tracing::info_span!("no exporter");
        assert_eq!(TraceHeaders::of(&span), None);
    }
}
