//! A background worker, off the streaming thread: one named thread that takes jobs from a
//! bounded queue and answers on a channel that the runtime polls at frame boundaries. What the
//! jobs are (edge requests, submodel swaps) is [`crate::remote`]'s. A generation counter shared with the element cancels work on flush and stop: a
//! job or answer from an older generation is dropped, and a wait for an answer ends the moment
//! the generation moves (each worker's answer channel is woken). Dropping a [`Worker`] closes
//! its queue and abandons its thread without waiting: the job in flight (a request bounded by
//! `timeout-ms`, a compile) ends on its own and its late answer is dropped.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// Called when the generation moves: wakes one worker's waiting reader.
type Waker = Box<dyn Fn() + Send + Sync>;

/// Flush/stop generation, shared by the element, the runtime and the workers, and the number
/// of swaps asked of the swap worker and not finished yet.
#[derive(Clone, Default)]
pub struct Generation {
    generation: Arc<AtomicU64>,
    swaps: Arc<AtomicUsize>,
    /// The workers' wakers, by worker id.
    wakers: Arc<Mutex<Vec<(u64, Waker)>>>,
    ids: Arc<AtomicU64>,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("generation", &self.current())
            .field("swaps", &self.swaps_pending())
            .finish()
    }
}

impl Generation {
    pub fn current(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
    /// Cancel everything requested so far; a wait for an answer returns at once.
    pub fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for (_, wake) in self.wakers.lock().unwrap().iter() {
            wake();
        }
    }
    /// Register (or replace) worker `id`'s waker.
    fn set_waker(&self, id: u64, wake: Waker) {
        let mut w = self.wakers.lock().unwrap();
        w.retain(|(i, _)| *i != id);
        w.push((id, wake));
    }
    fn remove_waker(&self, id: u64) {
        self.wakers.lock().unwrap().retain(|(i, _)| *i != id);
    }
    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }
    /// Swaps (fetch + compile) queued or running on the swap worker.
    pub fn swaps_pending(&self) -> usize {
        self.swaps.load(Ordering::Acquire)
    }
    /// The counter of swaps in flight, for the swap worker.
    pub fn swaps_counter(&self) -> Arc<AtomicUsize> {
        self.swaps.clone()
    }
}

/// A job tagged with the generation it was asked in.
struct Tagged<T> {
    generation: u64,
    value: T,
}

/// What a worker's answer channel carries.
enum Event<D> {
    Answer(Tagged<D>),
    /// The generation moved (a flush or a stop): a waiting reader looks again.
    Wake,
    /// The thread ended (a job panicked).
    Ended,
}

/// Sends [`Event::Ended`] when the worker thread ends, panicking or not.
struct EndGuard<D>(Sender<Event<D>>);

impl<D> Drop for EndGuard<D> {
    fn drop(&mut self) {
        let _ = self.0.send(Event::Ended);
    }
}

/// One background thread with a bounded job queue.
pub struct Worker<J: Send + 'static, D: Send + 'static> {
    name: &'static str,
    id: u64,
    jobs: Option<SyncSender<Tagged<J>>>,
    done: Receiver<Event<D>>,
    handle: Option<JoinHandle<()>>,
    run: Arc<dyn Fn(J, u64) -> D + Send + Sync>,
    generation: Generation,
    queue: usize,
    /// Counts this worker's unfinished jobs where the element can read it (swap worker).
    busy: Option<Arc<AtomicUsize>>,
    /// Jobs sent and not answered yet.
    pub pending: usize,
}

impl<J: Send + 'static, D: Send + 'static> Worker<J, D> {
    pub fn spawn(
        name: &'static str,
        generation: Generation,
        queue: usize,
        busy: Option<Arc<AtomicUsize>>,
        run: impl Fn(J, u64) -> D + Send + Sync + 'static,
    ) -> Worker<J, D> {
        let run: Arc<dyn Fn(J, u64) -> D + Send + Sync> = Arc::new(run);
        let id = generation.next_id();
        let (jobs, done, handle) = Self::start(
            name,
            id,
            queue,
            run.clone(),
            generation.clone(),
            busy.clone(),
        );
        Worker {
            name,
            id,
            jobs: Some(jobs),
            done,
            handle: Some(handle),
            run,
            generation,
            queue,
            busy,
            pending: 0,
        }
    }

    #[allow(clippy::type_complexity)]
    fn start(
        name: &'static str,
        id: u64,
        queue: usize,
        run: Arc<dyn Fn(J, u64) -> D + Send + Sync>,
        generation: Generation,
        busy: Option<Arc<AtomicUsize>>,
    ) -> (SyncSender<Tagged<J>>, Receiver<Event<D>>, JoinHandle<()>) {
        let (jobs, job_rx) = std::sync::mpsc::sync_channel::<Tagged<J>>(queue);
        let (done_tx, done) = std::sync::mpsc::channel();
        let wake = done_tx.clone();
        generation.set_waker(
            id,
            Box::new(move || {
                let _ = wake.send(Event::Wake);
            }),
        );
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _end = EndGuard(done_tx.clone());
                let finished = || {
                    if let Some(b) = &busy {
                        b.fetch_sub(1, Ordering::AcqRel);
                    }
                };
                for job in job_rx {
                    if job.generation != generation.current() {
                        finished();
                        continue; // asked before a flush: not worth doing
                    }
                    let value = run(job.value, job.generation);
                    let sent = done_tx.send(Event::Answer(Tagged {
                        generation: job.generation,
                        value,
                    }));
                    finished();
                    if sent.is_err() {
                        break;
                    }
                }
            })
            .expect("spawn a cachenet worker thread");
        (jobs, done, handle)
    }

    /// Queue a job; false when the queue is full.
    pub fn submit(&mut self, job: J) -> Result<bool, String> {
        let tagged = Tagged {
            generation: self.generation.current(),
            value: job,
        };
        let sent = match self.jobs.as_ref() {
            Some(tx) => tx.try_send(tagged),
            None => return Err(format!("{} worker is stopped", self.name)),
        };
        match sent {
            Ok(()) => {
                self.pending += 1;
                if let Some(b) = &self.busy {
                    b.fetch_add(1, Ordering::AcqRel);
                }
                Ok(true)
            }
            Err(TrySendError::Full(_)) => Ok(false),
            Err(TrySendError::Disconnected(_)) => Err(self.restart()),
        }
    }

    /// Replace a dead thread (it panicked): later jobs run again. Returns the warning to post.
    fn restart(&mut self) -> String {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        if let Some(b) = &self.busy {
            b.store(0, Ordering::Release);
        }
        let (jobs, done, handle) = Self::start(
            self.name,
            self.id,
            self.queue,
            self.run.clone(),
            self.generation.clone(),
            self.busy.clone(),
        );
        self.jobs = Some(jobs);
        self.done = done;
        self.handle = Some(handle);
        self.pending = 0;
        format!("the {} worker thread stopped; restarted it", self.name)
    }

    /// An answer of the current generation, if one is ready. `Err` carries a warning when the
    /// thread died (it has been restarted).
    pub fn try_next(&mut self) -> Result<Option<D>, String> {
        loop {
            match self.done.try_recv() {
                Ok(Event::Answer(d)) => {
                    self.pending = self.pending.saturating_sub(1);
                    if d.generation == self.generation.current() {
                        return Ok(Some(d.value));
                    }
                }
                Ok(Event::Wake) => {}
                Ok(Event::Ended) => return Err(self.restart()),
                Err(TryRecvError::Empty) => return Ok(None),
                Err(TryRecvError::Disconnected) => return Err(self.restart()),
            }
        }
    }

    /// Wait for the next answer of generation `at` (the one the job was asked in) until
    /// `deadline`, giving up the moment the generation moves past it (a flush or a stop, also
    /// one between asking and waiting). `Ok(None)`: timed out or cancelled.
    pub fn wait(&mut self, at: u64, deadline: Instant) -> Result<Option<D>, String> {
        loop {
            let now = Instant::now();
            if now >= deadline || self.generation.current() != at {
                return Ok(None);
            }
            match self.done.recv_timeout(deadline - now) {
                Ok(Event::Answer(d)) => {
                    self.pending = self.pending.saturating_sub(1);
                    if d.generation == self.generation.current() {
                        return Ok(Some(d.value));
                    }
                }
                Ok(Event::Wake) => {}
                Ok(Event::Ended) => return Err(self.restart()),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(self.restart()),
            }
        }
    }
}

impl<J: Send + 'static, D: Send + 'static> Drop for Worker<J, D> {
    /// Cancels what was asked, closes the queue and lets the thread go without waiting for
    /// the job it runs (it ends after that job; its answer has nowhere to go).
    fn drop(&mut self) {
        self.generation.remove_waker(self.id);
        self.generation.bump();
        self.jobs = None;
        drop(self.handle.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn doubler(g: &Generation, busy: &Arc<AtomicUsize>) -> Worker<u32, u32> {
        Worker::spawn("test", g.clone(), 4, Some(busy.clone()), |j: u32, _| {
            assert_ne!(j, 13, "job 13 kills the worker thread");
            j * 2
        })
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    /// A worker thread that dies (a panic in a job) is noticed by `wait` and by `try_next`,
    /// reported once, restarted, and later jobs run again; its busy count does not leak.
    #[test]
    fn a_dead_worker_thread_is_restarted_with_a_warning() {
        let (g, busy) = (Generation::default(), Arc::new(AtomicUsize::new(0)));
        let mut w = doubler(&g, &busy);
        assert!(w.submit(1).unwrap());
        assert_eq!(w.wait(g.current(), soon()).unwrap(), Some(2));
        // Found by wait.
        assert!(w.submit(13).unwrap());
        let e = w.wait(g.current(), soon()).unwrap_err();
        assert!(e.contains("test worker") && e.contains("restarted"), "{e}");
        assert_eq!(
            (busy.load(Ordering::Acquire), w.pending),
            (0, 0),
            "reset by the restart"
        );
        assert!(w.submit(2).unwrap());
        assert_eq!(w.wait(g.current(), soon()).unwrap(), Some(4));
        // Found by try_next.
        assert!(w.submit(13).unwrap());
        let deadline = soon();
        let e = loop {
            match w.try_next() {
                Ok(None) => {
                    assert!(Instant::now() < deadline, "the death was never noticed");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(Some(v)) => panic!("an answer {v} from a dead thread"),
                Err(e) => break e,
            }
        };
        assert!(e.contains("restarted"), "{e}");
        assert!(w.submit(3).unwrap());
        assert_eq!(w.wait(g.current(), soon()).unwrap(), Some(6));
        // The thread counts a job finished just after sending its answer (so that a zero count
        // means every answer is readable): the count reaches 0 right after.
        let deadline = soon();
        while busy.load(Ordering::Acquire) != 0 {
            assert!(Instant::now() < deadline, "the busy count leaked");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Jobs and answers of an earlier generation (before a flush) are dropped; a wait is cut
    /// short by the flush the moment it comes.
    #[test]
    fn a_flush_drops_earlier_jobs_and_answers() {
        let (g, busy) = (Generation::default(), Arc::new(AtomicUsize::new(0)));
        let mut w = doubler(&g, &busy);
        assert!(w.submit(5).unwrap());
        // Answered (the thread counts a job finished after sending its answer), not read yet.
        let deadline = soon();
        while busy.load(Ordering::Acquire) != 0 {
            assert!(Instant::now() < deadline, "the job never ran");
            std::thread::yield_now();
        }
        g.bump();
        assert_eq!(
            w.try_next().unwrap(),
            None,
            "the answer from before the flush is dropped"
        );
        assert!(w.submit(6).unwrap());
        assert_eq!(w.wait(g.current(), soon()).unwrap(), Some(12));
        // Nothing asked: a flush ends the wait. The flushing thread flushes until the wait
        // has returned, so the wait meets a flush whenever it starts.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g2, stop2) = (g.clone(), stop.clone());
        let t = std::thread::spawn(move || {
            while !stop2.load(Ordering::Acquire) {
                g2.bump();
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        assert_eq!(
            w.wait(g.current(), soon()).unwrap(),
            None,
            "the flush ends the wait"
        );
        stop.store(true, Ordering::Release);
        t.join().unwrap();
    }

    /// Dropping a worker (the element's stop) does not wait for the job in flight: the job
    /// here never ends until the test lets it, after the drop has returned.
    #[test]
    fn a_dropped_worker_does_not_wait_for_its_job() {
        let g = Generation::default();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let started_tx = Mutex::new(started_tx);
        let mut w: Worker<u32, u32> = Worker::spawn("test", g.clone(), 1, None, move |j, _| {
            started_tx.lock().unwrap().send(()).unwrap();
            let _ = release_rx.lock().unwrap().recv();
            j
        });
        assert!(w.submit(1).unwrap());
        started.recv_timeout(Duration::from_secs(30)).unwrap();
        let at = g.current();
        let (dropped_tx, dropped) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(w);
            dropped_tx.send(()).unwrap();
        });
        let waited = dropped.recv_timeout(Duration::from_secs(30));
        release.send(()).unwrap();
        waited.expect("the drop waited for the job in flight");
        assert_ne!(g.current(), at, "the drop cancels what was asked");
    }
}
