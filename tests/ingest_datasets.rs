//! Tests: ingest_datasets (in progress)
