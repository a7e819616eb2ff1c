//! The recorder: one thread that owns the results writer and the running
//! summary. Request tasks only send it plain rows; it writes them in batches
//! and checkpoints the file at most a second apart, so a killed run leaves a
//! readable file missing at most the last second of rows.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Shutdown;
use crate::record::run_meta::key;
use crate::record::summary::{ClientUsage, Summary, SummaryBuilder};
use crate::record::{ResultRow, ResultsWriter};

/// Checkpoint when this many rows are pending...
const CHECKPOINT_ROWS: u64 = 65_536;
/// ...or when this long has passed since the last checkpoint with rows
/// pending.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Each checkpoint rewrites a footer that grows with the row groups; in a
/// long run the interval stretches so footers cost at most this many bytes
/// per second of writing (about 15 minutes of one-second checkpoints first).
const FOOTER_BYTES_PER_S: f64 = 2.0 * 1024.0 * 1024.0;

/// How a run ended, filled in by the run before the recorder closes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunEnd {
    /// Requests of the schedule never reached because the run stopped.
    pub not_reached: u64,
    /// Whether `not_reached` is exact (else estimated from the rate).
    pub not_reached_exact: bool,
    /// What stopped the run early, if anything did.
    pub stopped_by: Option<String>,
}

/// The recorder's result.
#[derive(Debug)]
pub struct Recorded {
    /// Rows written.
    pub rows: u64,
    /// Summary of the steady rows (all rows when there are no phases).
    pub summary: Summary,
    /// The results file.
    pub path: PathBuf,
}

/// A running recorder thread.
pub struct Recorder {
    handle: JoinHandle<anyhow::Result<Recorded>>,
}

/// When the next checkpoint is due, given the size of the last footer.
fn checkpoint_interval(footer_bytes: u64) -> Duration {
    CHECKPOINT_EVERY.max(Duration::from_secs_f64(
        footer_bytes as f64 / FOOTER_BYTES_PER_S,
    ))
}

impl Recorder {
    /// Starts the thread. It ends when every sender of `rows` is dropped;
    /// then it writes `summary` (with `end`) into the file's metadata and
    /// closes it. A write error stops the run at once through `shutdown`
    /// (the rows still arriving are drained) and is returned by
    /// [`Self::join`]. `tap`, if given, sees every row for the live
    /// progress.
    pub fn start(
        mut writer: ResultsWriter,
        path: PathBuf,
        mut rows: mpsc::UnboundedReceiver<ResultRow>,
        summary: SummaryBuilder,
        end: Arc<Mutex<RunEnd>>,
        shutdown: Shutdown,
        mut tap: Option<super::progress::Tap>,
    ) -> std::io::Result<Self> {
        let cpu_start = ClientUsage::cpu_now();
        let sim_start = ClientUsage::threads_cpu_now(crate::sim::THREAD_PREFIX);
        let handle = std::thread::Builder::new()
            .name("llm-replay-recorder".into())
            .spawn(move || -> anyhow::Result<Recorded> {
                super::background_thread();
                let mut summary = summary;
                let mut last_checkpoint = Instant::now();
                let mut interval = CHECKPOINT_EVERY;
                let mut pending = 0u64;
                let mut failed: Option<anyhow::Error> = None;
                loop {
                    let due = pending > 0 && last_checkpoint.elapsed() >= interval;
                    if failed.is_none() && (due || pending >= CHECKPOINT_ROWS) {
                        match writer.checkpoint() {
                            Ok(footer) => interval = checkpoint_interval(footer),
                            Err(e) => {
                                shutdown.stop_now(&format!("fatal: {e}"));
                                failed = Some(e.into());
                            }
                        }
                        last_checkpoint = Instant::now();
                        pending = 0;
                    }
                    if let Some(tap) = tap.as_mut() {
                        tap.tick();
                    }
                    match rows.try_recv() {
                        Ok(row) => {
                            if failed.is_some() {
                                continue;
                            }
                            summary.add(&row);
                            if let Some(tap) = tap.as_mut() {
                                tap.row(&row);
                            }
                            if let Err(e) = writer.write(&row) {
                                shutdown.stop_now(&format!("fatal: {e}"));
                                failed = Some(e.into());
                            }
                            pending += 1;
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => break,
                        // Wait briefly, so a quiet period still makes the
                        // rows so far durable on time.
                        Err(mpsc::error::TryRecvError::Empty) => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                }
                if let Some(tap) = tap.as_mut() {
                    tap.publish();
                }
                if let Some(e) = failed {
                    return Err(e.context(format!(
                        "writing {}: the run was stopped; the rows up to the last checkpoint are readable",
                        path.display()
                    )));
                }
                let mut summary = summary.finish();
                if let Ok(end) = end.lock() {
                    summary.not_reached = end.not_reached;
                    summary.not_reached_exact = end.not_reached_exact;
                    summary.stopped_by = end.stopped_by.clone();
                }
                if let (Some(start), Some(cpu_end)) = (cpu_start, ClientUsage::cpu_now()) {
                    let sim_end = ClientUsage::threads_cpu_now(crate::sim::THREAD_PREFIX);
                    let simulator_cpu_s = sim_end.map(|end| (end - sim_start.unwrap_or(0.0)).max(0.0));
                    let cpu_s = (cpu_end - start - simulator_cpu_s.unwrap_or(0.0)).max(0.0);
                    summary.client = Some(ClientUsage {
                        simulator_cpu_s,
                        cpu_s,
                        cpu_us_per_request: if summary.requests > 0 {
                            cpu_s * 1e6 / summary.requests as f64
                        } else {
                            0.0
                        },
                        peak_rss_mib: ClientUsage::peak_rss_mib().unwrap_or(0.0),
                    });
                }
                let summary_json = serde_json::to_string(&summary)?;
                let mut meta = vec![(key::SUMMARY.to_owned(), summary_json)];
                meta.push((
                    key::REQUESTS_NOT_REACHED.to_owned(),
                    summary.not_reached.to_string(),
                ));
                if let Some(why) = &summary.stopped_by {
                    meta.push((key::STOPPED_BY.to_owned(), why.clone()));
                }
                let rows = writer.close(&meta)?;
                Ok(Recorded {
                    rows,
                    summary,
                    path,
                })
            })?;
        Ok(Self { handle })
    }

    /// Waits for the thread (call after every row sender is dropped).
    pub fn join(self) -> anyhow::Result<Recorded> {
        self.handle.join().map_err(|_| {
            anyhow::anyhow!("the recorder thread panicked; the results file may lack its last rows")
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_are_a_second_apart_until_footers_grow() {
        assert_eq!(checkpoint_interval(0), Duration::from_secs(1));
        assert_eq!(checkpoint_interval(1 << 20), Duration::from_secs(1));
        assert_eq!(checkpoint_interval(8 << 20), Duration::from_secs(4));
    }
}
