//! `llm-replay sim`: the embedded simulated endpoint on its own, until a
//! signal.

use std::process::ExitCode;

use crate::cli::SimArgs;
use crate::replay::Shutdown;

/// Runs `llm-replay sim`.
pub async fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let server =
        crate::sim::start_logging(args.sim.into(), args.bind, args.log_arrivals.as_deref()).await?;
    eprintln!(
        "simulated endpoint on {} (OpenAI-compatible: /v1/models, /v1/completions, /v1/chat/completions, /metrics); Ctrl-C stops it",
        server.url()
    );
    let shutdown = Shutdown::new();
    super::watch_signals(shutdown.clone(), std::time::Duration::ZERO);
    shutdown.stopped().await;
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
