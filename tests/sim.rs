//! Tests: sim (in progress)
