//! Bounded thread pools, shared by every round: one runs rounds, one runs
//! DNS lookups, one reads replicas. A pool starts threads as work comes,
//! up to its size, and keeps them; past that, work waits in a bounded
//! queue. So however many triggers, endpoints and replicas there are, and
//! however long `getaddrinfo` outlives its deadline, the scrape never holds
//! more threads than the pools' sizes together.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

/// Work a pool runs.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Jobs waiting, at most, in one pool.
const MAX_QUEUED: usize = 4096;

pub struct Pool {
    name: &'static str,
    size: usize,
    stack: usize,
    state: Mutex<State>,
    ready: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
    stopped: bool,
}

/// Why a job was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The queue is full.
    Full {
        name: &'static str,
        queued: usize,
    },
    /// The pool has no thread and cannot start one.
    NoThread {
        name: &'static str,
        error: String,
    },
    Stopped,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Full { name, queued } => {
                write!(f, "the {name} pool has {queued} jobs waiting already")
            }
            Refused::NoThread { name, error } => {
                write!(f, "the {name} pool cannot start a thread: {error}")
            }
            Refused::Stopped => f.write_str("keda-gpu-scaler is shutting down"),
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    /// A pool of at most `size` threads named `name`, each with `stack`
    /// bytes of stack.
    pub fn new(name: &'static str, size: usize, stack: usize) -> Arc<Self> {
        Arc::new(Self {
            name,
            size: size.max(1),
            stack,
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
        })
    }

    /// Queues `job`, starting a thread for it if none is idle and the
    /// pool has room for one.
    pub fn submit(self: &Arc<Self>, job: Job) -> Result<(), Refused> {
        let mut state = lock(&self.state);
        if state.stopped {
            return Err(Refused::Stopped);
        }
        if state.queue.len() >= MAX_QUEUED {
            return Err(Refused::Full {
                name: self.name,
                queued: state.queue.len(),
            });
        }
        state.queue.push_back(job);
        if state.idle >= state.queue.len() || state.threads >= self.size {
            self.ready.notify_one();
            return Ok(());
        }
        state.threads += 1;
        drop(state);
        let pool = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(self.name.into())
            .stack_size(self.stack)
            .spawn(move || pool.work());
        if let Err(error) = spawned {
            let mut state = lock(&self.state);
            state.threads -= 1;
            log::warn!("the {} pool cannot start a thread: {error}", self.name);
            if state.threads == 0 {
                // Nobody will run it: take it back.
                state.queue.pop_back();
                return Err(Refused::NoThread {
                    name: self.name,
                    error: error.to_string(),
                });
            }
        }
        Ok(())
    }

    fn work(&self) {
        let mut state = lock(&self.state);
        loop {
            if let Some(job) = state.queue.pop_front() {
                drop(state);
                // A panicking job must not take the thread's count with it.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    log::error!("a job of the {} pool panicked", self.name);
                }
                state = lock(&self.state);
                continue;
            }
            if state.stopped {
                state.threads -= 1;
                return;
            }
            state.idle += 1;
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
            state.idle -= 1;
        }
    }

    /// Threads started so far and alive.
    #[cfg(test)]
    pub fn threads(&self) -> usize {
        lock(&self.state).threads
    }

    /// Lets idle threads end; queued jobs still run.
    pub fn stop(&self) {
        lock(&self.state).stopped = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn no_more_threads_than_its_size_and_every_job_runs() {
        let pool = Pool::new("test", 3, 64 * 1024);
        let (release, gate) = mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let (done, finished) = mpsc::channel();
        for i in 0..10 {
            let gate = Arc::clone(&gate);
            let done = done.clone();
            pool.submit(Box::new(move || {
                // Every job blocks until released: the pool must queue.
                let _ = gate.lock().unwrap().recv();
                done.send(i).unwrap();
            }))
            .unwrap();
        }
        assert_eq!(pool.threads(), 3);
        for _ in 0..10 {
            release.send(()).unwrap();
        }
        let mut ran: Vec<i32> = (0..10)
            .map(|_| finished.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        ran.sort();
        assert_eq!(ran, (0..10).collect::<Vec<_>>());
        assert_eq!(pool.threads(), 3);
        // A panicking job leaves its thread working.
        pool.submit(Box::new(|| panic!("a bug in a job"))).unwrap();
        let done = done.clone();
        pool.submit(Box::new(move || done.send(99).unwrap()))
            .unwrap();
        assert_eq!(finished.recv_timeout(Duration::from_secs(10)), Ok(99));
        assert_eq!(pool.threads(), 3);
        pool.stop();
        assert_eq!(pool.submit(Box::new(|| {})), Err(Refused::Stopped));
    }
}
