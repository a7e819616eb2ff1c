//! The recorder: one thread that owns the results writer and the running
//! summary. Request tasks only send it plain rows; it writes them in batches
//! and checkpoints the file so a killed run leaves a readable one.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::record::{ResultRow, ResultsWriter};
use crate::report::summary::{ClientUsage, Summary, SummaryBuilder};

/// Checkpoint when this many rows are pending...
const CHECKPOINT_ROWS: u64 = 65_536;
/// ...or when this long has passed since the last checkpoint. Each
/// checkpoint rewrites a footer that grows with the row groups, so it is not
/// done every second.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

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

impl Recorder {
    /// Starts the thread. It ends when every sender of `rows` is dropped;
    /// then it writes `summary` into the file's metadata and closes it.
    pub fn start(
        mut writer: ResultsWriter,
        path: PathBuf,
        mut rows: mpsc::UnboundedReceiver<ResultRow>,
        summary: SummaryBuilder,
    ) -> std::io::Result<Self> {
        let cpu_start = ClientUsage::cpu_now();
        let handle = std::thread::Builder::new()
            .name("llm-replay-recorder".into())
            .spawn(move || -> anyhow::Result<Recorded> {
                let mut summary = summary;
                let mut last_checkpoint = Instant::now();
                let mut since_checkpoint = 0u64;
                loop {
                    // Wait at most until the next checkpoint is due, so a
                    // quiet period still makes the rows so far durable.
                    let row = match rows.try_recv() {
                        Ok(row) => Some(row),
                        Err(mpsc::error::TryRecvError::Disconnected) => break,
                        Err(mpsc::error::TryRecvError::Empty) => {
                            if since_checkpoint > 0 && last_checkpoint.elapsed() >= CHECKPOINT_EVERY
                            {
                                writer.checkpoint()?;
                                last_checkpoint = Instant::now();
                                since_checkpoint = 0;
                            }
                            std::thread::sleep(Duration::from_millis(2));
                            continue;
                        }
                    };
                    if let Some(row) = row {
                        summary.add(&row);
                        writer.write(&row)?;
                        since_checkpoint += 1;
                        if since_checkpoint >= CHECKPOINT_ROWS
                            || last_checkpoint.elapsed() >= CHECKPOINT_EVERY
                        {
                            writer.checkpoint()?;
                            last_checkpoint = Instant::now();
                            since_checkpoint = 0;
                        }
                    }
                }
                let mut summary = summary.finish();
                if let (Some(start), Some(end)) = (cpu_start, ClientUsage::cpu_now()) {
                    let cpu_s = end - start;
                    summary.client = Some(ClientUsage {
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
                let rows = writer.close(&[("llm_replay.summary".to_owned(), summary_json)])?;
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
