//! What a watched import has done so far: rows written, and its phase.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Rows written so far, and the phase, of runs that someone watches, by run id. A step reports
/// what it does and what it wrote; a caller in the same process reads it (a progress bar). A run
/// recovered by another process reports to no one.
#[derive(Debug, Default)]
pub struct Progress {
    runs: Mutex<HashMap<String, Arc<Watched>>>,
}

#[derive(Debug)]
struct Watched {
    count: AtomicU64,
    /// Rows the plan will write (0 until it is made).
    total: AtomicU64,
    phase: Mutex<&'static str>,
}

impl Progress {
    /// Starts following `run`, in the phase "recording the run" (the engine writes its input);
    /// followed until the returned watch is dropped.
    pub fn watch(self: &Arc<Self>, run: &str) -> ProgressWatch {
        let watched = Arc::new(Watched {
            count: AtomicU64::new(0),
            total: AtomicU64::new(0),
            phase: Mutex::new("recording the run"),
        });
        self.lock().insert(run.to_owned(), Arc::clone(&watched));
        ProgressWatch {
            board: Arc::clone(self),
            run: run.to_owned(),
            watched,
        }
    }

    pub(super) fn advance(&self, run: &str, n: usize) {
        if let Some(w) = self.lock().get(run) {
            w.count.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    pub(super) fn total(&self, run: &str, n: usize) {
        if let Some(w) = self.lock().get(run) {
            w.total.store(n as u64, Ordering::Relaxed);
        }
    }

    pub(super) fn phase(&self, run: &str, phase: &'static str) {
        if let Some(w) = self.lock().get(run) {
            *w.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Watched>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What one watched run has done so far.
#[derive(Debug)]
pub struct ProgressWatch {
    board: Arc<Progress>,
    run: String,
    watched: Arc<Watched>,
}

impl ProgressWatch {
    /// Rows written.
    pub fn count(&self) -> u64 {
        self.watched.count.load(Ordering::Relaxed)
    }

    /// Rows the run will write, once its plan is made (0 before).
    pub fn total(&self) -> u64 {
        self.watched.total.load(Ordering::Relaxed)
    }

    /// What the run is doing.
    pub fn phase(&self) -> &'static str {
        *self.watched.phase.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ProgressWatch {
    fn drop(&mut self) {
        self.board.lock().remove(&self.run);
    }
}
