//! The `llm-replay` binary: parse the command line, run, map the outcome to
//! an exit code (documented in the README).

use std::process::ExitCode;

use clap::Parser;

// Every request allocates its body, headers, SSE buffers and row; glibc's
// malloc was a tenth of the client's CPU at 3,000 req/s, mimalloc's
// thread-local heaps cost a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match llm_replay::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version go to stdout with success; usage errors get
            // their own code, apart from `inspect`'s broken invariants.
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(llm_replay::EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match llm_replay::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("Error: {err:#}");
            if let Some(hint) = llm_replay::commands::hint_for(&err) {
                eprintln!("{hint}");
            }
            let usage = err.chain().any(|e| {
                e.is::<llm_replay::UsageError>()
                    || matches!(
                        e.downcast_ref::<llm_replay::workload::WorkloadError>(),
                        Some(llm_replay::workload::WorkloadError::Usage(_))
                    )
            });
            if usage {
                ExitCode::from(llm_replay::EXIT_USAGE)
            } else {
                ExitCode::from(llm_replay::EXIT_FAILURE)
            }
        }
    }
}
