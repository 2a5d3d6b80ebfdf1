//! The device's background work, off the streaming thread: edge requests (`offload`) and
//! submodel swaps (`swap`: fetch, verify, store, compile). Each runs on its own named thread,
//! takes jobs from a bounded queue and answers on a channel that the runtime polls at frame
//! boundaries. A generation counter shared with the element cancels work on flush and stop: a
//! job or answer from an older generation is dropped, and a wait for an answer ends the moment
//! the generation moves (each worker's answer channel is woken). Dropping a [`Worker`] closes
//! its queue and abandons its thread without waiting: the job in flight (a request bounded by
//! `timeout-ms`, a compile) ends on its own and its late answer is dropped.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cachenet_core::engine::Model;
use cachenet_core::manifest::Manifest;
use cachenet_core::modelset::load_classifier_timed;
use cachenet_core::proto;
use cachenet_core::sha256_hex;

use crate::edge::{EdgeClient, EdgeError, Traffic};
use crate::store::Store;

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
}

/// An answer of the edge to one frame.
#[derive(Debug)]
pub struct InferOutcome {
    pub response: proto::InferResponse,
    pub traffic: Traffic,
    pub took: Duration,
}

/// Where the time of one swap went (device side, microseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SwapTimings {
    /// Network: request to last byte (0 when `cache-dir` had it).
    pub download_us: u64,
    /// sha256 of the bytes.
    pub verify_us: u64,
    /// Writing to `cache-dir` (or reading from it).
    pub store_us: u64,
    /// ONNX parse, checks and typing.
    pub parse_us: u64,
    /// Building the runnable plan (the engine's own, or tract's optimisation).
    pub optimise_us: u64,
    /// The first run on a zero frame (allocations, caches).
    pub first_run_us: u64,
    /// The device's CPU time for verify, store, parse, optimise and first run: what the swap
    /// worker's thread ran (0 where the system does not report it). The phases above are wall
    /// clock: under a CPU quota they also hold the periods the device was throttled.
    pub cpu_us: u64,
}

impl SwapTimings {
    pub fn total_us(&self) -> u64 {
        self.download_us
            + self.verify_us
            + self.store_us
            + self.parse_us
            + self.optimise_us
            + self.first_run_us
    }
}

/// A compiled submodel, ready to become active.
#[derive(Debug)]
pub struct Fetched {
    pub id: u32,
    pub model: Model,
    pub timings: SwapTimings,
    pub traffic: Traffic,
    /// Why the download could not be written to cache-dir, if it could not.
    pub store_error: Option<String>,
}

/// An edge's answer checked against the manifest before anything of it is used: a class id and
/// a probability distribution over the manifest's labels, an entropy in range, and a submodel
/// the manifest lists with the manifest's sha256.
pub fn check_response(manifest: &Manifest, response: &proto::InferResponse) -> Result<(), String> {
    let classes = manifest.labels.len();
    if response.class_id as usize >= classes {
        return Err(format!(
            "edge answered class {} out of range",
            response.class_id
        ));
    }
    // A distribution over the manifest's classes (softmax output: sums to 1 up to rounding),
    // and its entropy, between 0 and ln(classes).
    let sum: f32 = response.probabilities.iter().sum();
    if response.probabilities.len() != classes
        || !response
            .probabilities
            .iter()
            .all(|p| (0.0..=1.0).contains(p))
        || (sum - 1.0).abs() > 1e-3
    {
        return Err("edge answered malformed probabilities".into());
    }
    if !(0.0..=(classes as f32).ln() + 1e-3).contains(&response.entropy) {
        return Err(format!(
            "edge answered entropy {} out of range",
            response.entropy
        ));
    }
    let id = response.submodel_id;
    let spec = manifest
        .submodel(id)
        .ok_or_else(|| format!("edge selected unknown submodel {id}"))?;
    if !spec.sha256.eq_ignore_ascii_case(&response.submodel_sha256) {
        return Err(format!(
            "edge selected submodel {id} with sha256 {:?}, the manifest says {}",
            response.submodel_sha256, spec.sha256
        ));
    }
    Ok(())
}

/// Everything the workers need.
#[derive(Clone)]
pub struct Remote {
    pub edge: EdgeClient,
    pub store: Option<Store>,
    pub manifest: Arc<Manifest>,
}

impl Remote {
    /// One edge request; the answer is checked against the manifest.
    pub fn infer(
        &self,
        hwc: Vec<u8>,
        cached: Vec<u32>,
        request_id: String,
    ) -> Result<InferOutcome, EdgeError> {
        let t = Instant::now();
        let spec = &self.manifest.input;
        let req = proto::InferRequest {
            api_version: proto::API_VERSION,
            request_id,
            image: Some(proto::infer_request::Image::Raw(proto::RawFrame {
                pixels: hwc,
                width: spec.width as u32,
                height: spec.height as u32,
                channels: spec.channels as u32,
            })),
            cached_submodels: cached,
        };
        let (response, traffic) = self.edge.infer(&req)?;
        check_response(&self.manifest, &response)?;
        Ok(InferOutcome {
            response,
            traffic,
            took: t.elapsed(),
        })
    }

    /// Fetch (cache-dir, else the edge), verify, store and compile submodel `id`. Gives up
    /// between phases once `generation` has moved past `at` (the worker then drops the answer
    /// as one of an older generation).
    pub fn fetch(&self, id: u32, generation: &Generation, at: u64) -> Result<Fetched, String> {
        let cancelled = || -> Result<(), String> {
            if generation.current() != at {
                Err("cancelled".into())
            } else {
                Ok(())
            }
        };
        let spec = self
            .manifest
            .submodel(id)
            .ok_or_else(|| format!("unknown submodel {id}"))?;
        let mut timings = SwapTimings::default();
        let mut traffic = Traffic::default();
        let mut store_error = None;
        let mut cpu_start = thread_cpu_ns();
        let t = Instant::now();
        let stored = self.store.as_ref().and_then(|s| s.load(&spec.sha256));
        let bytes = match stored {
            Some(b) => {
                timings.store_us = t.elapsed().as_micros() as u64;
                b
            }
            None => {
                let (b, tr) = self.edge.submodel(id, spec.size)?;
                traffic = tr;
                timings.download_us = t.elapsed().as_micros() as u64;
                cancelled()?;
                cpu_start = thread_cpu_ns();
                let t = Instant::now();
                let actual = sha256_hex(&b);
                timings.verify_us = t.elapsed().as_micros() as u64;
                if !actual.eq_ignore_ascii_case(&spec.sha256) {
                    return Err(format!(
                        "submodel {id} download rejected: sha256 {actual} does not match the \
                         manifest's {}",
                        spec.sha256
                    ));
                }
                // A download that cannot be kept (read-only or full cache-dir) is still used.
                if let Some(s) = &self.store {
                    let t = Instant::now();
                    store_error = s.save(&spec.sha256, &b).err();
                    timings.store_us = t.elapsed().as_micros() as u64;
                }
                b
            }
        };
        cancelled()?;
        let (model, load) = load_classifier_timed(&self.manifest, &spec.file, &bytes)
            .map_err(|e| format!("submodel {id} rejected: {e}"))?;
        timings.parse_us = load.parse_us;
        timings.optimise_us = load.optimise_us;
        cancelled()?;
        let t = Instant::now();
        let zeros = vec![0.0f32; model.input_len()];
        model
            .run(&zeros)
            .map_err(|e| format!("submodel {id} rejected: {e}"))?;
        timings.first_run_us = t.elapsed().as_micros() as u64;
        if let (Some(a), Some(b)) = (cpu_start, thread_cpu_ns()) {
            timings.cpu_us = b.saturating_sub(a) / 1000;
        }
        Ok(Fetched {
            id,
            model,
            timings,
            traffic,
            store_error,
        })
    }
}

/// CPU time the calling thread has run, in nanoseconds (the thread's CPU clock).
pub fn thread_cpu_ns() -> Option<u64> {
    let t = cpu_time::ThreadTime::try_now().ok()?;
    u64::try_from(t.as_duration().as_nanos()).ok()
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

/// The offload worker's job: a frame for the edge.
pub struct InferJob {
    pub hwc: Vec<u8>,
    pub cached: Vec<u32>,
    pub request_id: String,
}

/// Answers carry their request id, so that a late answer is never taken for a newer request's.
pub type OffloadWorker = Worker<InferJob, (String, Result<InferOutcome, EdgeError>)>;
pub type SwapWorker = Worker<u32, (u32, Result<Fetched, String>)>;

pub fn offload_worker(remote: Remote, generation: Generation) -> OffloadWorker {
    Worker::spawn(
        "cachenet-offload",
        generation,
        1,
        None,
        move |j: InferJob, _| {
            let id = j.request_id.clone();
            (id, remote.infer(j.hwc, j.cached, j.request_id))
        },
    )
}

pub fn swap_worker(remote: Remote, generation: Generation) -> SwapWorker {
    let g = generation.clone();
    let busy = Some(generation.swaps.clone());
    Worker::spawn("cachenet-swap", generation, 8, busy, move |id: u32, at| {
        (id, remote.fetch(id, &g, at))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_time_counts_this_threads_work_only() {
        let before = thread_cpu_ns().expect("the thread CPU clock");
        // Another thread's work is not this thread's.
        std::thread::spawn(|| (0..2_000_000u64).map(std::hint::black_box).sum::<u64>())
            .join()
            .unwrap();
        let idle = thread_cpu_ns().unwrap() - before;
        let sum: u64 = (0..20_000_000u64).map(std::hint::black_box).sum();
        assert!(sum > 0);
        let busy = thread_cpu_ns().unwrap() - before - idle;
        assert!(busy > idle, "busy {busy} ns, idle {idle} ns");
    }

    #[test]
    fn edge_answers_are_checked_against_the_manifest() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny");
        let m = Manifest::load(&dir).unwrap();
        let sub = &m.submodels[1];
        let n = m.labels.len();
        let good = proto::InferResponse {
            class_id: 1,
            probabilities: (0..n)
                .map(|i| if i == 1 { 0.9 } else { 0.1 / (n - 1) as f32 })
                .collect(),
            entropy: 0.3,
            submodel_id: sub.id,
            submodel_sha256: sub.sha256.to_uppercase(),
            ..Default::default()
        };
        check_response(&m, &good).unwrap();
        let bad = |f: &dyn Fn(&mut proto::InferResponse)| {
            let mut r = good.clone();
            f(&mut r);
            check_response(&m, &r).unwrap_err()
        };
        assert!(bad(&|r| r.class_id = n as u32).contains("class"));
        assert!(bad(&|r| r.probabilities.truncate(n - 1)).contains("probabilities"));
        assert!(bad(&|r| r.probabilities[0] = f32::NAN).contains("probabilities"));
        // Finite but not a distribution: negative, above 1, not summing to 1.
        assert!(bad(&|r| r.probabilities[0] = -1e30).contains("probabilities"));
        assert!(bad(&|r| r.probabilities[1] = 3.0).contains("probabilities"));
        assert!(bad(&|r| r.probabilities[1] = 0.5).contains("probabilities"));
        assert!(bad(&|r| r.entropy = f32::INFINITY).contains("entropy"));
        assert!(bad(&|r| r.entropy = (n as f32).ln() + 0.1).contains("entropy"));
        assert!(bad(&|r| r.submodel_id = 99).contains("unknown submodel"));
        assert!(bad(&|r| r.submodel_sha256 = "00".into()).contains("sha256"));
    }

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
