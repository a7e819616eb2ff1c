//! The one integration test binary: each module covers one stage of the
//! pipeline, driven through the library in-process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod check_tokens;
mod client;
mod edge;
mod ingest_datasets;
mod ingest_logs;
mod ingest_mooncake_sessions;
mod ingest_sharegpt;
mod progress;
mod replay;
mod report_html;
mod sessions;
mod shards;
mod sim;
mod support;
mod sweep_report;
mod trace_format;
mod workload;
