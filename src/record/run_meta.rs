//! The run's key-value metadata in a results file: every key defined once
//! here, written by the replay and read back by `report` and `sweep
//! --resume` through the same definitions. `docs/results-format.md` lists
//! them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::schedule::ScheduleSpec;

/// Key names.
pub mod key {
    /// Version of the results format.
    pub const RESULTS_VERSION: &str = "llm_replay.results_version";
    /// Version of llm-replay.
    pub const TOOL_VERSION: &str = "llm_replay.tool_version";
    /// Seed of the schedule and the prompts.
    pub const SEED: &str = "llm_replay.seed";
    /// The trace's file name.
    pub const TRACE_FILE: &str = "llm_replay.trace_file";
    /// The trace's SHA-256.
    pub const TRACE_SHA256: &str = "llm_replay.trace_sha256";
    /// The trace's row count.
    pub const TRACE_ROWS: &str = "llm_replay.trace_rows";
    /// The target, without credentials.
    pub const TARGET_URL: &str = "llm_replay.target_url";
    /// The model sent.
    pub const MODEL: &str = "llm_replay.model";
    /// RFC 3339 start.
    pub const STARTED_AT: &str = "llm_replay.started_at";
    /// Requests the schedule holds (estimated for a duration-bound rate).
    pub const REQUESTS_SCHEDULED: &str = "llm_replay.requests_scheduled";
    /// [`super::RunConfig`] as JSON.
    pub const CONFIG: &str = "llm_replay.config";
    /// The summary as JSON (written at close).
    pub const SUMMARY: &str = "llm_replay.summary";
    /// Requests of the schedule not reached because the run stopped.
    pub const REQUESTS_NOT_REACHED: &str = "llm_replay.requests_not_reached";
    /// What stopped the run early.
    pub const STOPPED_BY: &str = "llm_replay.stopped_by";
    /// A sweep step's number.
    pub const SWEEP_STEP: &str = "llm_replay.sweep_step";
    /// A sweep step's mode (`rate` or `speedup`).
    pub const SWEEP_MODE: &str = "llm_replay.sweep_mode";
    /// A sweep step's load.
    pub const SWEEP_OFFERED: &str = "llm_replay.sweep_offered";
    /// The rate of an auto-probe step.
    pub const SWEEP_PROBE: &str = "llm_replay.sweep_probe";
    /// The schedule's t=0 (RFC 3339, microseconds, UTC): `scheduled_at`
    /// minus this is the request's offset in the schedule.
    pub const T0: &str = "llm_replay.t0";
    /// The salt of the run's synthetic prompts (0: none); `--prompt-salt`
    /// with this value and the same seed sends the same prompts again.
    pub const PROMPT_SALT: &str = "llm_replay.prompt_salt";
    /// `K/N` of a sharded run (`--shard`).
    pub const SHARD: &str = "llm_replay.shard";
}

/// The run's configuration as written under [`key::CONFIG`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The target as described by the replay (URL without credentials,
    /// API, model, header names with values redacted, timeouts, ...).
    pub target: serde_json::Value,
    /// The schedule.
    pub schedule: ScheduleSpec,
    /// Seed of the schedule and prompts.
    #[serde(default)]
    pub seed: u64,
    /// The SLO as given (`ttft=500ms,...`).
    #[serde(default)]
    pub slo: Option<String>,
    /// Grace after a stop, as written by humantime.
    #[serde(default)]
    pub grace: Option<String>,
    /// Session replay options; `null` when rows were sent on their own.
    #[serde(default)]
    pub sessions: Option<serde_json::Value>,
    /// Closed-loop users and duration (`--concurrency`); `null` for open
    /// loop. The schedule then gives only the order and count of requests.
    #[serde(default)]
    pub closed_loop: Option<serde_json::Value>,
}

impl RunConfig {
    /// The configuration in a file's metadata, if it has a readable one.
    pub fn from_metadata(metadata: &BTreeMap<String, String>) -> Option<Self> {
        serde_json::from_str(metadata.get(key::CONFIG)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{Arrivals, Limit, Order};

    #[test]
    fn the_config_reads_back_as_written() {
        let cfg = RunConfig {
            target: serde_json::json!({"url": "http://127.0.0.1:1"}),
            schedule: ScheduleSpec::Rate {
                rate: 4.0,
                arrivals: Arrivals::Gamma { shape: 0.5 },
                order: Order::Shuffle,
                limit: Limit {
                    duration_ns: Some(1),
                    requests: None,
                },
                seed: 3,
            },
            seed: 3,
            slo: Some("ttft=500ms".into()),
            grace: Some("10s".into()),
            sessions: None,
            closed_loop: None,
        };
        let meta = BTreeMap::from([(key::CONFIG.to_owned(), serde_json::to_string(&cfg).unwrap())]);
        assert_eq!(RunConfig::from_metadata(&meta), Some(cfg));
    }
}
