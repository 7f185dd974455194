//! The prefetching batch loader: worker threads decode and transform slices of upcoming batches
//! while the caller works on the current one.
//!
//! Work is split into units of ⌈batch / threads⌉ samples, claimed in order by the workers, but
//! only for batches less than [`AHEAD`] past the one the caller holds. Finished units go through
//! an unbounded channel (the window bounds what is in flight) and are reassembled in order.
//! Dropping the iterator cancels the window, wakes every worker and joins them; a worker never
//! blocks on a send, so this cannot deadlock.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::{Dataset, Transform};
use crate::error::{Error, Result};

/// Batches prepared beyond the one the caller holds.
const AHEAD: usize = 2;

/// NCHW samples `start..start + shape[0]` of the requested order (positions in `indices`, or
/// dataset indices without them), with their labels when the dataset has labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub start: usize,
    pub input: Vec<f32>,
    pub shape: [usize; 4],
    pub labels: Option<Vec<usize>>,
}

/// What the workers share: the job description and the claim window.
struct Job {
    dataset: Dataset,
    transform: Transform,
    indices: Vec<usize>,
    batch: usize,
    /// Samples per work unit, and units per batch.
    unit: usize,
    units_per_batch: usize,
    window: Mutex<Window>,
    wake: Condvar,
}

struct Window {
    next_unit: usize,
    /// Batches handed to the caller so far.
    consumed: usize,
    cancelled: bool,
}

/// One transformed sample: CHW shape and values.
type Sample = ([usize; 3], Vec<f32>);

impl Job {
    /// Positions in `indices` of work unit `u` (empty past the end).
    fn range(&self, u: usize) -> std::ops::Range<usize> {
        let (b, k) = (u / self.units_per_batch, u % self.units_per_batch);
        // Saturating: `batch` may be as large as usize::MAX (one batch of everything).
        let batch_end = (b + 1).saturating_mul(self.batch).min(self.indices.len());
        let start = b.saturating_mul(self.batch).saturating_add(k * self.unit).min(batch_end);
        start..start.saturating_add(self.unit).min(batch_end)
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sample(&self, position: usize) -> Result<Sample> {
        let index = self.indices[position];
        let image = self.dataset.image(index)?;
        let located = |e: Error| Error::Input(format!("{}: {e}", self.dataset.locate(index)));
        let (h, w) = self.transform.output_size(&image).map_err(located)?;
        let values = self.transform.apply(&image).map_err(located)?;
        Ok(([3, h as usize, w as usize], values))
    }

    /// The next unit the window allows, waiting while it is full; `None` when done or cancelled.
    fn claim(&self) -> Option<usize> {
        let mut window = self.lock();
        loop {
            let u = window.next_unit;
            if window.cancelled || self.range(u).is_empty() {
                return None;
            }
            if u / self.units_per_batch < window.consumed + AHEAD {
                window.next_unit += 1;
                return Some(u);
            }
            window = self.wake.wait(window).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn work(&self, tx: Sender<(usize, Result<Vec<Sample>>)>) {
        while let Some(u) = self.claim() {
            // A panic in a decoder must reach the caller as an error, not leave it waiting.
            let result = catch_unwind(AssertUnwindSafe(|| self.range(u).map(|p| self.sample(p)).collect())).unwrap_or_else(|_| {
                Err(Error::Input(format!("{}: a loader worker panicked on samples {:?}", self.dataset.spec(), self.range(u))))
            });
            if tx.send((u, result)).is_err() {
                return;
            }
        }
    }

    fn cancel(&self) {
        self.lock().cancelled = true;
        self.wake.notify_all();
    }
}

/// Iterator over the batches of [`batches`]; ends after the first error.
pub struct Batches {
    job: Arc<Job>,
    rx: Option<Receiver<(usize, Result<Vec<Sample>>)>>,
    workers: Vec<JoinHandle<()>>,
    /// Finished units that arrived ahead of their turn.
    pending: HashMap<usize, Result<Vec<Sample>>>,
    next: usize,
    /// An error to yield first (bad arguments, no thread could start).
    setup_error: Option<Error>,
    done: bool,
}

/// Decodes and transforms `dataset` (or `indices` of it, in that order) into batches of `batch`
/// samples on `threads` CPU worker threads, prefetching up to 2 batches ahead, so the caller's
/// GPU work on batch i overlaps the decoding of batch i+1. All images of one batch must produce
/// the same shape (error naming the index otherwise). Yields in order; stops after an error.
pub fn batches(dataset: &Dataset, transform: &Transform, indices: Option<&[usize]>, batch: usize, threads: usize) -> Batches {
    let indices = indices.map_or_else(|| (0..dataset.len()).collect(), <[usize]>::to_vec);
    let threads = threads.max(1);
    let unit = batch.div_ceil(threads).max(1);
    let job = Arc::new(Job {
        dataset: dataset.clone(),
        transform: transform.clone(),
        units_per_batch: batch.div_ceil(unit).max(1),
        indices,
        batch: batch.max(1),
        unit,
        window: Mutex::new(Window { next_unit: 0, consumed: 0, cancelled: batch == 0 || threads > crate::limits::MAX_THREADS }),
        wake: Condvar::new(),
    });
    let mut setup_error = if batch == 0 {
        Some(Error::Input("batch size must be at least 1".into()))
    } else if threads > crate::limits::MAX_THREADS {
        Some(Error::Input(format!(
            "{threads} loader threads, over the limit of {} (MAX_THREADS, see `nac::limits`)",
            crate::limits::MAX_THREADS
        )))
    } else {
        None
    };
    let (tx, rx) = channel();
    let total_units = job.indices.len().div_ceil(job.batch) * job.units_per_batch;
    let mut workers = Vec::new();
    let spawn = if setup_error.is_some() { 0 } else { threads.min(total_units) };
    for i in 0..spawn {
        let (job, tx) = (job.clone(), tx.clone());
        match std::thread::Builder::new().name(format!("nac-loader-{i}")).spawn(move || job.work(tx)) {
            Ok(handle) => workers.push(handle),
            Err(e) if workers.is_empty() => {
                setup_error = Some(Error::Input(format!("cannot start a loader thread: {e}")));
                break;
            }
            Err(_) => break,
        }
    }
    Batches { job, rx: Some(rx), workers, pending: HashMap::new(), next: 0, setup_error, done: false }
}

impl Batches {
    /// Work unit `u`, waiting for it if needed.
    fn unit(&mut self, u: usize) -> Result<Vec<Sample>> {
        loop {
            if let Some(result) = self.pending.remove(&u) {
                return result;
            }
            match self.rx.as_ref().map(Receiver::recv) {
                Some(Ok((v, result))) => {
                    self.pending.insert(v, result);
                }
                _ => return Err(Error::Input("the loader workers stopped before finishing".into())),
            }
        }
    }

    fn assemble(&self, start: usize, samples: Vec<Sample>) -> Result<Batch> {
        let job = &self.job;
        let shape = samples[0].0;
        if let Some(k) = samples.iter().position(|(s, _)| *s != shape) {
            return Err(Error::Input(format!(
                "{} transforms to {:?}, but {} of the same batch to {shape:?}; add a resize/center_crop step so all images share one size",
                job.dataset.locate(job.indices[start + k]),
                samples[k].0,
                job.dataset.locate(job.indices[start])
            )));
        }
        let chosen = &job.indices[start..start + samples.len()];
        let labels = job.dataset.labels().map(|l| chosen.iter().map(|&i| l[i]).collect());
        let input = samples.into_iter().flat_map(|(_, values)| values).collect();
        Ok(Batch { start, input, shape: [chosen.len(), shape[0], shape[1], shape[2]], labels })
    }

    /// Stops the workers and waits for them (each finishes at most its current unit).
    fn finish(&mut self) {
        self.done = true;
        self.job.cancel();
        self.rx = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if let Some(e) = self.setup_error.take() {
            self.finish();
            return Some(Err(e));
        }
        let start = self.next.saturating_mul(self.job.batch);
        if self.done || start >= self.job.indices.len() {
            self.finish();
            return None;
        }
        let units = (start..start.saturating_add(self.job.batch).min(self.job.indices.len())).len().div_ceil(self.job.unit);
        let first = self.next * self.job.units_per_batch;
        let mut samples = Vec::new();
        for u in first..first + units {
            match self.unit(u) {
                Ok(s) => samples.extend(s),
                Err(e) => {
                    self.finish();
                    return Some(Err(e));
                }
            }
        }
        self.next += 1;
        self.job.lock().consumed = self.next;
        self.job.wake.notify_all();
        let batch = self.assemble(start, samples);
        if batch.is_err() {
            self.finish();
        }
        Some(batch)
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The whole dataset (or `indices` of it) in one NCHW batch; an error when there are no samples.
pub fn load_all(dataset: &Dataset, transform: &Transform, indices: Option<&[usize]>, threads: usize) -> Result<Batch> {
    let n = indices.map_or(dataset.len(), <[usize]>::len);
    if n == 0 {
        return Err(Error::Input(format!("{}: no samples to load", dataset.spec())));
    }
    batches(dataset, transform, indices, n, threads)
        .next()
        .unwrap_or_else(|| Err(Error::Input(format!("{}: no samples to load", dataset.spec()))))
}
