//! Tests: trace_format (in progress)
