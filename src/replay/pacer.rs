//! Waiting for absolute deadlines.
//!
//! tokio's timer wheel has 1 ms granularity: at thousands of requests per
//! second, sleeping on it under-delivers and bunches requests. The
//! [`ThreadPacer`] runs on a thread of its own (the dispatcher's) and
//! sleeps with the OS's high-resolution timer (`nanosleep`, tens of
//! microseconds of slack), so it holds sub-millisecond precision without
//! spinning a core. [`TokioPacer`] waits on tokio's clock, which tests pause
//! and advance deterministically.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Waits until a deadline.
pub trait Pacer: Send {
    /// Returns at or after `deadline` (at once if it has passed).
    fn wait_until(&mut self, deadline: Instant) -> impl Future<Output = ()> + Send;
}

/// High-resolution pacing for a dedicated thread: blocks that thread in
/// `std::thread::sleep`. Only for a runtime that runs nothing else.
#[derive(Debug, Default)]
pub struct ThreadPacer;

/// Requests due within this much of now leave at once: sleeping for less
/// costs more than it gains (the OS timer's slack is about 50 µs).
const EARLY_SEND: Duration = Duration::from_micros(20);

impl Pacer for ThreadPacer {
    #[allow(clippy::manual_async_fn)]
    fn wait_until(&mut self, deadline: Instant) -> impl Future<Output = ()> + Send {
        async move {
            let now = Instant::now();
            if deadline > now + EARLY_SEND {
                std::thread::sleep(deadline - now);
            }
        }
    }
}

/// Pacing on tokio's clock (1 ms granularity; exact under paused time).
#[derive(Debug, Default)]
pub struct TokioPacer;

impl Pacer for TokioPacer {
    #[allow(clippy::manual_async_fn)]
    fn wait_until(&mut self, deadline: Instant) -> impl Future<Output = ()> + Send {
        tokio::time::sleep_until(deadline)
    }
}
