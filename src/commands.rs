//! The edge: each subcommand turns its flags ([`crate::cli`]) into the
//! library's validated, typed config once, calls one library function,
//! prints, and maps the result to an exit code. Signals are hooked up here,
//! and only here, to the library's one shutdown path
//! ([`crate::replay::Shutdown`]); output paths are checked here before any
//! work starts.

pub mod ingest;
pub mod inspect;
pub mod replay;
pub mod report;
pub mod sim;
pub mod sweep;
pub mod synth;
pub mod transform;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;

use crate::cli::{Cli, Command};
use crate::replay::Shutdown;

/// Exit code of a run that failed (bad input, I/O errors, a target that
/// cannot be used).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of `inspect` when the trace breaks an invariant.
pub const EXIT_INVARIANTS: u8 = 2;
/// Exit code of a run whose requests failed: every one, or a share above
/// `--max-error-rate`.
pub const EXIT_REQUESTS_FAILED: u8 = 3;
/// Exit code of a command line that cannot be used (unknown flag, value out
/// of range), as sysexits' `EX_USAGE`.
pub const EXIT_USAGE: u8 = 64;

/// A command line that parses but cannot be used; exits with
/// [`EXIT_USAGE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs one command line to completion.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Ingest(args) => ingest::run(&args),
        Command::Synth(args) => synth::run(&args),
        Command::Transform(args) => transform::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Replay(args) => runtime()?.block_on(replay::run(args)),
        Command::Sweep(args) => runtime()?.block_on(sweep::run(args)),
        Command::Report(args) => report::run(&args),
        Command::Sim(args) => runtime()?.block_on(sim::run(args)),
    }
}

/// Writes to standard output. Unlike `print!`, a reader that went away
/// (`| head`) ends the output quietly instead of panicking.
pub fn stdout(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(text).and_then(|()| out.flush());
}

/// The multi-threaded runtime for the commands that do network I/O.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("llm-replay")
        .build()
}

/// The same file, compared by canonical path when both exist.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// One output of a command: its path and the flag that names it.
pub struct Output<'a> {
    /// Where it goes.
    pub path: &'a Path,
    /// The flag (for messages): `-o`, `--summary-json`, ...
    pub flag: &'a str,
}

/// Checks, before any work, that no output is one of `inputs` or another
/// output, that none exists unless `force` (then it is removed), and that
/// each can be created.
pub fn claim_outputs(outputs: &[Output<'_>], inputs: &[&Path], force: bool) -> anyhow::Result<()> {
    for (i, out) in outputs.iter().enumerate() {
        if let Some(input) = inputs.iter().find(|p| same_file(out.path, p)) {
            bail!(UsageError(format!(
                "{} {}: that is an input of this run ({}); choose another path",
                out.flag,
                out.path.display(),
                input.display()
            )));
        }
        if let Some(other) = outputs[..i].iter().find(|o| same_file(out.path, o.path)) {
            bail!(UsageError(format!(
                "{} {}: {} writes there already; choose another path",
                out.flag,
                out.path.display(),
                other.flag
            )));
        }
        if out.path.is_dir() {
            bail!(UsageError(format!(
                "{} {}: is a directory; give a file path",
                out.flag,
                out.path.display()
            )));
        }
        if out.path.exists() {
            if !force {
                bail!(UsageError(format!(
                    "{} {}: exists; outputs are never overwritten: choose another path, or pass --force",
                    out.flag,
                    out.path.display()
                )));
            }
            std::fs::remove_file(out.path).map_err(|e| {
                anyhow::anyhow!(
                    "{} {}: removing it (--force): {e}",
                    out.flag,
                    out.path.display()
                )
            })?;
        }
        check_writable(out)?;
    }
    Ok(())
}

/// Fails now, not after the run, if `out` cannot be created.
fn check_writable(out: &Output<'_>) -> anyhow::Result<()> {
    let dir = match out.path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        bail!(
            "{} {}: the folder {} does not exist",
            out.flag,
            out.path.display(),
            dir.display()
        );
    }
    let probe = dir.join(format!(".llm-replay-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => bail!(
            "{} {}: cannot write in {}: {e}",
            out.flag,
            out.path.display(),
            dir.display()
        ),
    }
}

/// Hooks Ctrl-C, SIGTERM and SIGHUP to `shutdown`: the first stops the
/// run (in-flight requests get the grace period), the second cancels
/// in-flight requests at once, the third exits on the spot (the file is
/// readable up to its last checkpoint).
pub fn watch_signals(shutdown: Shutdown, grace: std::time::Duration) {
    tokio::spawn(async move {
        let mut signals = Signals::new();
        let mut seen = 0u32;
        while let Some(name) = signals.next().await {
            seen += 1;
            match seen {
                1 => {
                    eprintln!(
                        "\n{name}: stopping: no new requests; in-flight requests get {} (--grace); again to cancel them now",
                        humantime::format_duration(grace)
                    );
                    shutdown.stop(name);
                }
                2 => {
                    eprintln!("\n{name} again: cancelling in-flight requests now");
                    shutdown.stop_now(name);
                }
                _ => {
                    eprintln!("\n{name} a third time: exiting now");
                    std::process::exit(i32::from(signal_exit_code(name)));
                }
            }
        }
    });
}

/// The exit code of a process stopped by `signal`: 128 + its number, as
/// shells report it.
pub fn signal_exit_code(signal: &str) -> u8 {
    match signal {
        "SIGHUP" => 129,
        "SIGTERM" => 143,
        _ => 130,
    }
}

/// The stop signals of this platform.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                hup: signal(SignalKind::hangup()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// The next stop signal's name; `None` if none can ever arrive.
    async fn next(&mut self) -> Option<&'static str> {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
                match s {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                r = tokio::signal::ctrl_c() => r.ok().map(|()| "SIGINT"),
                Some(()) = recv(&mut self.term) => Some("SIGTERM"),
                Some(()) = recv(&mut self.hup) => Some("SIGHUP"),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.ok().map(|()| "SIGINT")
        }
    }
}

/// The exit code of a finished run: [`EXIT_REQUESTS_FAILED`] when every
/// request failed or more than `max_error_rate` of them did (saying why on
/// stderr); else the signal's code when one stopped it; else success.
pub fn run_exit_code(
    requests: u64,
    failed: u64,
    max_error_rate: f64,
    stopped_by: Option<&str>,
) -> ExitCode {
    if requests > 0 {
        let share = failed as f64 / requests as f64;
        if failed == requests {
            eprintln!("every request failed ({failed} of {requests}); first errors above");
            return ExitCode::from(EXIT_REQUESTS_FAILED);
        }
        if share > max_error_rate {
            eprintln!(
                "{failed} of {requests} requests failed ({:.1}%), above --max-error-rate {:.1}%",
                share * 100.0,
                max_error_rate * 100.0
            );
            return ExitCode::from(EXIT_REQUESTS_FAILED);
        }
    }
    match stopped_by {
        Some(sig) if sig.starts_with("SIG") => ExitCode::from(signal_exit_code(sig)),
        _ => ExitCode::SUCCESS,
    }
}

/// Hints for errors a user meets first; printed under the error.
pub fn hint_for(err: &anyhow::Error) -> Option<&'static str> {
    let text = format!("{err:#}");
    if text.contains("Connection refused") || text.contains("connection refused") {
        Some(
            "hint: is the server running at that --url? (without --url, the embedded simulator is used)",
        )
    } else {
        None
    }
}

/// At most `max` bytes of `s` (on a character boundary), with an ellipsis
/// when cut: user input quoted in messages stays short.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
