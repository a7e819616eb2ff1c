//! Tests: ingest_logs (in progress)
