//! Ingest of the `bailian` format (being written).

use super::{Filters, IngestError, Input};
use crate::cli::IngestArgs;
use crate::trace::TraceMetadata;

/// Reads `inputs` and writes the trace at `args.output`.
pub fn ingest(
    args: &IngestArgs,
    inputs: &[Input],
    filters: Filters,
) -> Result<TraceMetadata, IngestError> {
    let _ = (inputs, filters);
    Err(IngestError::Usage(format!(
        "format {} is not available in this build",
        args.format.name()
    )))
}
