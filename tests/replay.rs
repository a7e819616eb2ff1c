//! Tests: replay (in progress)
