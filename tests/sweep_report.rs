//! Tests: sweep_report (in progress)
