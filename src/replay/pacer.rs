//! Waiting for absolute deadlines.
//!
//! tokio's timer wheel has 1 ms granularity: at thousands of requests per
//! second, sleeping on it under-delivers and bunches requests. The
//! [`TimerPacer`] waits on a Linux `timerfd` registered with the engine
//! thread's own event loop: the kernel's high-resolution timer wakes the
//! loop at the deadline (no timer slack applies to timerfd), and the request
//! is written by the same thread that woke, without crossing to another.
//! [`TokioPacer`] waits on tokio's clock: the fallback off Linux, and what
//! tests pause and advance deterministically.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Waits until a deadline.
pub trait Pacer: Send {
    /// Returns at or after `deadline` (at once if it has passed).
    fn wait_until(&mut self, deadline: Instant) -> impl Future<Output = ()> + Send;
}

/// Requests due within this much of now leave at once: waiting for less
/// costs more than it gains (a wake-up takes tens of microseconds).
const EARLY_SEND: Duration = Duration::from_micros(20);

/// Pacing on tokio's clock (1 ms granularity; exact under paused time).
#[derive(Debug, Default)]
pub struct TokioPacer;

impl Pacer for TokioPacer {
    #[allow(clippy::manual_async_fn)]
    fn wait_until(&mut self, deadline: Instant) -> impl Future<Output = ()> + Send {
        tokio::time::sleep_until(deadline)
    }
}

#[cfg(target_os = "linux")]
pub use timer::TimerPacer;

#[cfg(target_os = "linux")]
mod timer {
    use std::future::Future;

    use rustix::fd::OwnedFd;
    use rustix::time::{
        Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
        timerfd_settime,
    };
    use tokio::io::unix::AsyncFd;
    use tokio::time::Instant;

    use super::{EARLY_SEND, Pacer};

    /// Sub-millisecond pacing inside a tokio event loop: a one-shot
    /// `timerfd` (CLOCK_MONOTONIC, the clock of [`Instant`]) armed for each
    /// deadline and awaited like a socket. Between deadlines the thread
    /// serves its requests' I/O; it never sleeps through one.
    #[derive(Debug)]
    pub struct TimerPacer {
        fd: AsyncFd<OwnedFd>,
    }

    impl TimerPacer {
        /// A pacer for the current runtime (call inside it).
        pub fn new() -> std::io::Result<Self> {
            let fd = timerfd_create(
                TimerfdClockId::Monotonic,
                TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
            )?;
            // `AsyncFd::new` is deprecated for inners whose descriptor may
            // change under it; an `OwnedFd` holds one descriptor for its
            // whole life, which is the condition `register` asks callers to
            // promise, without the `unsafe` this crate forbids.
            #[allow(deprecated)]
            let fd = AsyncFd::new(fd)?;
            Ok(Self { fd })
        }

        /// Arms the timer `wait` from now, then waits for it to fire.
        async fn fire_in(&mut self, wait: std::time::Duration) -> std::io::Result<()> {
            let spec = Itimerspec {
                it_interval: Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: Timespec {
                    tv_sec: i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
                    // A zero value would disarm the timer.
                    tv_nsec: i64::from(wait.subsec_nanos().max(1)),
                },
            };
            timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::empty(), &spec)?;
            loop {
                let mut ready = self.fd.readable().await?;
                let mut ticks = [0u8; 8];
                match ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut ticks)?)) {
                    Ok(read) => return read.map(|_| ()),
                    // A readiness left from an earlier deadline: wait on.
                    Err(_would_block) => continue,
                }
            }
        }
    }

    impl Pacer for TimerPacer {
        #[allow(clippy::manual_async_fn)]
        fn wait_until(&mut self, deadline: Instant) -> impl Future<Output = ()> + Send {
            async move {
                let now = Instant::now();
                if deadline <= now + EARLY_SEND {
                    return;
                }
                if let Err(e) = self.fire_in(deadline - now).await {
                    // Never seen in practice; tokio's clock still keeps the
                    // schedule, at millisecond granularity.
                    tracing::warn!("timerfd failed ({e}); pacing on tokio's timer");
                    tokio::time::sleep_until(deadline).await;
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[tokio::test(flavor = "current_thread")]
        async fn wakes_after_each_deadline_and_not_long_after() {
            let mut pacer = TimerPacer::new().unwrap();
            for micros in [300u64, 50, 2_000, 0] {
                let deadline = Instant::now() + std::time::Duration::from_micros(micros);
                pacer.wait_until(deadline).await;
                let now = Instant::now();
                assert!(
                    now + EARLY_SEND >= deadline,
                    "woke {:?} early",
                    deadline - now
                );
            }
            // A deadline already past returns at once.
            pacer.wait_until(Instant::now()).await;
        }
    }
}
