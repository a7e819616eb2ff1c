//! Reports: summaries recomputed from results files, sweep tables, and
//! renderers (text, JSON, HTML).

pub mod summary;

pub use summary::{Slo, Summary, SummaryBuilder, summarize};
