//! The element's added latency: what the latency query answers, and when to tell the pipeline
//! that it grew.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The element's added latency: what the latency query answers (a first estimate from one
/// model run at start, then the 95th percentile of the last frames' processing times), and
/// when to tell the pipeline that it grew.
#[derive(Default)]
pub(super) struct LatencyMeter {
    recent: VecDeque<u64>,
    /// Sorted copy of `recent`, reused.
    sorted: Vec<u64>,
    frames: u64,
    last_post: Option<Instant>,
}

impl LatencyMeter {
    const WINDOW: usize = 100;

    /// Record one frame's processing time; true when the reported latency should grow (the
    /// recent 95th percentile is a quarter and 1 ms above it; at most every 2 s).
    pub(super) fn record(&mut self, took: Duration, reported: &AtomicU64) -> bool {
        if self.recent.len() == Self::WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(took.as_nanos() as u64);
        self.frames += 1;
        // The percentile every 10th frame, from 20 frames on.
        if self.recent.len() < 20
            || !self.frames.is_multiple_of(10)
            || self
                .last_post
                .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return false;
        }
        self.sorted.clear();
        self.sorted.extend(self.recent.iter().copied());
        self.sorted.sort_unstable();
        let p95 = self.sorted[self.sorted.len() * 95 / 100];
        let now = reported.load(Ordering::Relaxed);
        if p95 > now + now / 4 && p95 > now + 1_000_000 {
            reported.store(p95, Ordering::Relaxed);
            self.last_post = Some(Instant::now());
            return true;
        }
        false
    }
}
