//! The simulated engine: continuous batching with a KV-cache token budget.
//!
//! One task owns the state. Each step it admits waiting requests that fit
//! (batch size and KV budget: a sequence reserves its prompt plus its
//! `max_tokens` for its whole life), charges their prefill, then runs one
//! decode step that emits a token to every running sequence. A step costs
//! `prefill_us_per_token × new prompt tokens + decode_base_us +
//! decode_per_seq_us × batch size`, so TTFT climbs and throughput flattens
//! as the offered load passes capacity, as on a real GPU.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Engine parameters (from `SimConfig`).
#[derive(Debug, Clone, Copy)]
pub struct EngineParams {
    /// Most sequences decoded together.
    pub max_batch: usize,
    /// KV-cache budget in tokens.
    pub kv_tokens: u64,
    /// Prefill cost per prompt token, µs.
    pub prefill_us_per_token: f64,
    /// Fixed cost of a decode step, µs.
    pub decode_base_us: f64,
    /// Extra cost of a decode step per running sequence, µs.
    pub decode_per_seq_us: f64,
}

impl EngineParams {
    fn zero_cost(&self) -> bool {
        self.prefill_us_per_token <= 0.0
            && self.decode_base_us <= 0.0
            && self.decode_per_seq_us <= 0.0
    }
}

/// A request for the engine: its sizes and where its tokens go.
#[derive(Debug)]
pub struct Job {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Tokens to generate.
    pub max_tokens: u64,
    /// One message per generated token; dropped when done.
    pub tokens: mpsc::UnboundedSender<()>,
}

/// Live gauges and counters for `/metrics`.
#[derive(Debug, Default)]
pub struct EngineGauges {
    /// Sequences decoding.
    pub running: AtomicU64,
    /// Requests waiting for admission.
    pub waiting: AtomicU64,
    /// KV tokens reserved.
    pub kv_used: AtomicU64,
    /// Prompt tokens prefilled, total.
    pub prompt_tokens_total: AtomicU64,
    /// Tokens generated, total.
    pub generation_tokens_total: AtomicU64,
}

struct Running {
    job: Job,
    emitted: u64,
    reserved: u64,
}

/// Runs the engine until `jobs` closes or `stop` fires.
pub async fn run(
    params: EngineParams,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    gauges: Arc<EngineGauges>,
    stop: CancellationToken,
) {
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut running: Vec<Running> = Vec::new();
    let mut kv_used = 0u64;
    let zero = params.zero_cost();
    loop {
        if running.is_empty() && waiting.is_empty() {
            tokio::select! {
                job = jobs.recv() => match job {
                    Some(j) => waiting.push_back(j),
                    None => return,
                },
                () = stop.cancelled() => return,
            }
        }
        while let Ok(j) = jobs.try_recv() {
            waiting.push_back(j);
        }
        if stop.is_cancelled() {
            return;
        }
        // Admission, first come first served: a request that does not fit
        // blocks those behind it, as vLLM's FCFS scheduler does.
        let mut prefill_tokens = 0u64;
        while let Some(front) = waiting.front() {
            let need = front.prompt_tokens + front.max_tokens;
            if running.len() >= params.max_batch || kv_used + need > params.kv_tokens {
                break;
            }
            let Some(job) = waiting.pop_front() else {
                break;
            };
            kv_used += need;
            prefill_tokens += job.prompt_tokens;
            running.push(Running {
                job,
                emitted: 0,
                reserved: need,
            });
        }
        gauges
            .prompt_tokens_total
            .fetch_add(prefill_tokens, Ordering::Relaxed);
        gauges
            .running
            .store(running.len() as u64, Ordering::Relaxed);
        gauges
            .waiting
            .store(waiting.len() as u64, Ordering::Relaxed);
        gauges.kv_used.store(kv_used, Ordering::Relaxed);
        if running.is_empty() {
            // Everything waiting is larger than the whole budget: the
            // server side refuses those before they get here, so this only
            // waits for the next job.
            continue;
        }
        if zero {
            // No model time: yield so the HTTP side keeps up.
            tokio::task::yield_now().await;
        } else {
            let cost_us = params.prefill_us_per_token * prefill_tokens as f64
                + params.decode_base_us
                + params.decode_per_seq_us * running.len() as f64;
            tokio::select! {
                () = tokio::time::sleep(Duration::from_nanos((cost_us * 1_000.0) as u64)) => {}
                () = stop.cancelled() => return,
            }
        }
        let mut generated = 0u64;
        running.retain_mut(|r| {
            if r.job.tokens.send(()).is_err() {
                // The client went away: free the sequence.
                kv_used -= r.reserved;
                return false;
            }
            r.emitted += 1;
            generated += 1;
            if r.emitted >= r.job.max_tokens {
                kv_used -= r.reserved;
                return false;
            }
            true
        });
        gauges
            .generation_tokens_total
            .fetch_add(generated, Ordering::Relaxed);
        gauges
            .running
            .store(running.len() as u64, Ordering::Relaxed);
        gauges.kv_used.store(kv_used, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> EngineParams {
        EngineParams {
            max_batch: 4,
            kv_tokens: 1_000,
            prefill_us_per_token: 10.0,
            decode_base_us: 1_000.0,
            decode_per_seq_us: 100.0,
        }
    }

    async fn job(
        tx: &mpsc::UnboundedSender<Job>,
        prompt: u64,
        max: u64,
    ) -> mpsc::UnboundedReceiver<()> {
        let (t, r) = mpsc::unbounded_channel();
        tx.send(Job {
            prompt_tokens: prompt,
            max_tokens: max,
            tokens: t,
        })
        .unwrap();
        r
    }

    async fn drain(mut rx: mpsc::UnboundedReceiver<()>) -> (u64, Duration, Duration) {
        let start = tokio::time::Instant::now();
        let mut n = 0;
        let mut first = None;
        while rx.recv().await.is_some() {
            n += 1;
            first.get_or_insert(start.elapsed());
        }
        (n, first.unwrap_or_default(), start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn one_request_costs_prefill_then_decode_steps() {
        let (tx, rx) = mpsc::unbounded_channel();
        let gauges = Arc::new(EngineGauges::default());
        // Whole milliseconds: tokio's timer rounds sleeps up to 1 ms.
        let p = EngineParams {
            decode_base_us: 900.0,
            ..params()
        };
        tokio::spawn(run(p, rx, gauges.clone(), CancellationToken::new()));
        let r = job(&tx, 100, 5).await;
        let (n, ttft, total) = drain(r).await;
        assert_eq!(n, 5);
        // First step: 100 × 10 µs prefill + 900 + 100 µs decode.
        assert_eq!(ttft, Duration::from_micros(2_000));
        assert_eq!(total, Duration::from_micros(2_000 + 4 * 1_000));
        assert_eq!(gauges.generation_tokens_total.load(Ordering::Relaxed), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn kv_budget_makes_requests_wait() {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(
            params(),
            rx,
            Arc::new(EngineGauges::default()),
            CancellationToken::new(),
        ));
        // Each reserves 600 of 1,000 tokens: the second waits for the first.
        let a = job(&tx, 500, 100).await;
        let b = job(&tx, 500, 100).await;
        let (ra, rb) = tokio::join!(drain(a), drain(b));
        assert_eq!((ra.0, rb.0), (100, 100));
        assert!(
            rb.1 >= ra.2,
            "second TTFT {:?} before first finished {:?}",
            rb.1,
            ra.2
        );
    }

    #[tokio::test(start_paused = true)]
    async fn larger_batches_decode_slower_per_step() {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(
            params(),
            rx,
            Arc::new(EngineGauges::default()),
            CancellationToken::new(),
        ));
        let mut all = Vec::new();
        for _ in 0..4 {
            all.push(job(&tx, 10, 10).await);
        }
        let mut results = Vec::new();
        for r in all {
            results.push(tokio::spawn(drain(r)));
        }
        for r in results {
            let (n, _, total) = r.await.unwrap();
            assert_eq!(n, 10);
            // 4 sequences: each step costs 1,000 + 4 × 100 µs.
            assert!(total >= Duration::from_micros(10 * 1_400), "{total:?}");
        }
    }
}
