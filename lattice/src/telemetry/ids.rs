//! Span ids taken from the `traceparent` Trellis propagates: the SDK's span gets the ids Trellis
//! already chose and sent on, so what a collector receives links up as the headers do.

use std::cell::Cell;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::IdGenerator;

use crate::trace::TraceContext;

thread_local! {
    static PRESET: Cell<Option<TraceContext>> = const { Cell::new(None) };
}

/// Gives the span being built the ids Trellis already chose (and sent on in `traceparent`), so
/// the SDK's span is the one the next hop names as its parent.
#[derive(Debug)]
pub(super) struct PresetIds;

impl PresetIds {
    /// Runs `build` (which starts one span, on this thread) with `ids` as the ids it gets.
    pub fn with<T>(ids: TraceContext, build: impl FnOnce() -> T) -> T {
        PRESET.set(Some(ids));
        let built = build();
        PRESET.set(None);
        built
    }

    fn preset() -> TraceContext {
        // Outside `with` (nothing in Trellis starts spans so): fresh ids.
        PRESET.get().unwrap_or_else(TraceContext::root)
    }
}

impl IdGenerator for PresetIds {
    fn new_trace_id(&self) -> TraceId {
        Self::preset().trace_id.into()
    }

    fn new_span_id(&self) -> SpanId {
        Self::preset().span_id.into()
    }
}
