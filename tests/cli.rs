//! Tests: cli (in progress)
