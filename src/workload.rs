//! Workloads without a dataset, and traces reshaped for what-if questions:
//!
//! - [`synth`]: a trace from length distributions, an arrival process with
//!   a rate over time, and sessions with shared system prompts;
//! - [`transform`]: whole-session operations on traces (windows, time
//!   compression, thinning and overlaying load, mixing traces and classes,
//!   scaling and capping lengths), each recorded in the output's metadata;
//! - [`dist`]: the distributions both write on the command line.

pub mod dist;
pub mod synth;
pub mod transform;

use thiserror::Error;

use crate::trace::TraceError;

/// Errors of `synth` and `transform`.
#[derive(Debug, Error)]
pub enum WorkloadError {
    /// A spec that cannot be used.
    #[error("{0}")]
    Usage(String),
    /// An input file that cannot be used (a rate curve, a trace).
    #[error("{path}: {message}")]
    Input {
        /// The file (and line).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing a trace.
    #[error(transparent)]
    Trace(#[from] TraceError),
}
