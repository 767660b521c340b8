//! The cache of rounds ([`Scraper`]): single flight per endpoint. A call
//! gets the endpoint's cached round while it is younger than one interval
//! and kept what the call wants; else it waits, as a future, for the next
//! round, which it shares with every caller that arrives meanwhile. Here
//! too: which endpoints are remembered (at most
//! [`MAX_CACHED_ENDPOINTS`], forgotten when idle), the read counters, the
//! log of replicas that start or stop failing (once per change), and
//! shutdown. The round itself is `round`'s.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use crate::engine::endpoint::Endpoint;
use crate::engine::http::{self, BodyBudget};
use crate::engine::policy::EndpointPolicy;
use crate::engine::prom::Want;
use crate::engine::resolve::{self, Resolved};

use super::budget::{
    SeriesBudget, BODY_BUDGET_BYTES, MAX_CACHED_ENDPOINTS, MAX_LOOKUPS, MAX_PARALLEL, MAX_REPLICAS,
    MAX_ROUNDS, SERIES_BUDGET_BYTES,
};
use super::outcome::{ReadOutcome, RoundFailure};
use super::pool::Pool;
use super::{Resolution, Scrape};

/// The stack of every pool thread.
pub(super) const WORKER_STACK: usize = 256 * 1024;

/// An endpoint no trigger asked for in this long is forgotten.
pub(super) const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Resolves a host to its addresses: glibc's `getaddrinfo` in
/// production, a table in tests that need what cluster DNS answers.
#[derive(Clone)]
pub struct Resolver(pub Arc<ResolveFn>);

/// `(host, port)` to what DNS says.
pub type ResolveFn = dyn Fn(&str, u16) -> Resolved + Send + Sync;

impl Resolver {
    pub fn system() -> Self {
        Resolver(Arc::new(resolve::resolve))
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

/// How scrapes run.
#[derive(Clone)]
pub struct ScrapeConfig {
    /// A round younger than this is reused.
    pub interval: Duration,
    /// The most body bytes of one page.
    pub max_body: usize,
    /// Body bytes that pages being read at once may hold together.
    pub body_budget_bytes: usize,
    /// Bytes of parsed series that cached rounds may hold together.
    pub series_budget_bytes: usize,
    pub max_replicas: usize,
    pub resolver: Resolver,
    /// Which addresses may be read.
    pub policy: EndpointPolicy,
}

impl ScrapeConfig {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            max_body: http::MAX_BODY_BYTES,
            body_budget_bytes: BODY_BUDGET_BYTES,
            series_budget_bytes: SERIES_BUDGET_BYTES,
            max_replicas: MAX_REPLICAS,
            resolver: Resolver::system(),
            policy: EndpointPolicy::default(),
        }
    }
}

pub struct Scraper {
    pub(super) config: ScrapeConfig,
    /// Page bodies being read.
    pub(super) bodies: BodyBudget,
    /// Parsed series of cached rounds.
    pub(super) series: SeriesBudget,
    /// Threads for rounds, DNS lookups and replica reads, shared by all.
    pub(super) rounds_pool: Arc<Pool>,
    pub(super) lookups: Arc<Pool>,
    pub(super) readers: Arc<Pool>,
    /// `config.policy`, with this scaler's own listeners once bound.
    pub(super) policy: RwLock<EndpointPolicy>,
    state: Mutex<State>,
    idle: Condvar,
    rounds: AtomicU64,
    /// Replica reads by [`ReadOutcome`].
    outcomes: [AtomicU64; ReadOutcome::ALL.len()],
    pub(super) running: AtomicUsize,
}

#[derive(Default)]
struct State {
    entries: HashMap<Endpoint, Entry>,
    stopped: bool,
}

pub(super) struct Entry {
    wanted: BTreeSet<Want>,
    last: Option<Arc<Scrape>>,
    pub(super) running: bool,
    waiters: Vec<Waiter>,
    pub(super) last_asked: Instant,
    /// What each failing address gave last, to log changes once.
    failing: HashMap<SocketAddr, String>,
    /// The last resolution problem logged.
    unresolved: Option<String>,
}

struct Waiter {
    wants: Vec<Want>,
    timeout: Duration,
    sender: oneshot::Sender<Arc<Scrape>>,
}

/// What a round is to do.
pub(super) struct Plan {
    pub endpoint: Endpoint,
    pub wanted: BTreeSet<Want>,
    pub timeout: Duration,
    /// Series bytes of the round this one replaces (given back once it
    /// lands, so counted as free).
    pub predecessor_bytes: usize,
    /// The round this one replaces, for each replica's last read.
    pub previous: Option<Arc<Scrape>>,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Scraper {
    pub fn new(config: ScrapeConfig) -> Arc<Self> {
        Arc::new(Self {
            bodies: BodyBudget::new(config.body_budget_bytes),
            series: SeriesBudget::new(config.series_budget_bytes),
            policy: RwLock::new(config.policy.clone()),
            rounds_pool: Pool::new("engine-scrape", MAX_ROUNDS, WORKER_STACK),
            lookups: Pool::new("engine-dns", MAX_LOOKUPS, WORKER_STACK),
            readers: Pool::new("engine-read", MAX_PARALLEL, WORKER_STACK),
            config,
            state: Mutex::new(State::default()),
            idle: Condvar::new(),
            rounds: AtomicU64::new(0),
            outcomes: Default::default(),
            running: AtomicUsize::new(0),
        })
    }

    /// Refuses this scaler's own listening `ports` on `addresses` (and on
    /// loopback) from now on.
    pub fn listening_on(&self, ports: Vec<u16>, addresses: Vec<IpAddr>) {
        let mut policy = self.policy.write().unwrap_or_else(|e| e.into_inner());
        policy.own_ports = ports;
        policy.own_addresses = addresses;
    }

    /// Rounds run so far (one per endpoint per interval at most).
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Replica reads so far, by how they ended.
    pub fn reads(&self) -> [(ReadOutcome, u64); ReadOutcome::ALL.len()] {
        ReadOutcome::ALL.map(|o| (o, self.outcomes[o as usize].load(Ordering::Relaxed)))
    }

    pub(super) fn count(&self, outcome: ReadOutcome) {
        self.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The endpoint's latest round with `wants` kept: the cached one
    /// while younger than one interval, else the next, shared with every
    /// caller waiting for it. `timeout` bounds a round this call starts.
    pub fn scrape(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        wants: &[Want],
        timeout: Duration,
    ) -> impl Future<Output = Arc<Scrape>> + Send + 'static {
        let ready = self.request(endpoint, wants, timeout);
        let endpoint = endpoint.clone();
        async move {
            match ready {
                Ok(scrape) => scrape,
                Err(receiver) => receiver.await.unwrap_or_else(|_| {
                    Arc::new(Scrape::failed(endpoint, RoundFailure::ShuttingDown))
                }),
            }
        }
    }

    fn request(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        wants: &[Want],
        timeout: Duration,
    ) -> Result<Arc<Scrape>, oneshot::Receiver<Arc<Scrape>>> {
        let now = Instant::now();
        let mut state = lock(&self.state);
        if state.stopped {
            return Ok(Arc::new(Scrape::failed(
                endpoint.clone(),
                RoundFailure::ShuttingDown,
            )));
        }
        forget_old(&mut state.entries, endpoint, now);
        let entry = state
            .entries
            .entry(endpoint.clone())
            .or_insert_with(|| Entry::new(now));
        entry.last_asked = now;
        entry.wanted.extend(wants.iter().cloned());
        if let Some(last) = &entry.last {
            if now.duration_since(last.completed_at) < self.config.interval && last.covers(wants) {
                return Ok(Arc::clone(last));
            }
        }
        let (sender, receiver) = oneshot::channel();
        entry.waiters.push(Waiter {
            wants: wants.to_vec(),
            timeout,
            sender,
        });
        let plan = self.plan(endpoint, entry);
        drop(state);
        if let Some(plan) = plan {
            self.start_round(plan);
        }
        Err(receiver)
    }

    /// The next round for an entry with waiters, unless one is running.
    /// Called under the state lock, so that `shutdown` sees it counted.
    fn plan(&self, endpoint: &Endpoint, entry: &mut Entry) -> Option<Plan> {
        if entry.running || entry.waiters.is_empty() {
            return None;
        }
        entry.running = true;
        self.running.fetch_add(1, Ordering::SeqCst);
        Some(Plan {
            endpoint: endpoint.clone(),
            wanted: entry.wanted.clone(),
            // The longest deadline among the triggers waiting for it.
            timeout: entry.waiters.iter().map(|w| w.timeout).max()?,
            predecessor_bytes: entry.last.as_ref().map_or(0, |last| last.series_bytes()),
            previous: entry.last.clone(),
        })
    }

    fn start_round(self: &Arc<Self>, plan: Plan) {
        let endpoint = plan.endpoint.clone();
        let scraper = Arc::clone(self);
        let submitted = self.rounds_pool.submit(Box::new(move || {
            let endpoint = plan.endpoint.clone();
            // A panic in a round (or a worker) must still answer its
            // waiters and let shutdown finish.
            let round =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scraper.round(plan)));
            let scrape = round.unwrap_or_else(|_| Scrape::failed(endpoint, RoundFailure::Panicked));
            scraper.finish(scrape);
        }));
        if let Err(refused) = submitted {
            log::error!("cannot start an engine scrape round: {refused}");
            let failed = Scrape::failed(endpoint, RoundFailure::NoThread(refused.to_string()));
            self.finish(failed);
        }
    }

    /// Publishes a round: to the cache and its waiters; starts another
    /// when a waiter asked for families this round did not parse.
    fn finish(self: &Arc<Self>, scrape: Scrape) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        let scrape = Arc::new(scrape);
        let mut again = None;
        {
            let mut state = lock(&self.state);
            let stopped = state.stopped;
            if let Some(entry) = state.entries.get_mut(&scrape.endpoint) {
                entry.log_changes(&scrape);
                entry.running = false;
                entry.last = Some(Arc::clone(&scrape));
                let mut later = Vec::new();
                for waiter in entry.waiters.drain(..) {
                    // A round that failed before reading (a panic, no
                    // thread) answers everyone rather than trying again.
                    if scrape.covers(&waiter.wants) || stopped || scrape.kept_wants.is_empty() {
                        let _ = waiter.sender.send(Arc::clone(&scrape));
                    } else {
                        later.push(waiter);
                    }
                }
                entry.waiters = later;
                again = self.plan(&scrape.endpoint, entry);
            }
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.idle.notify_all();
        }
        if let Some(plan) = again {
            self.start_round(plan);
        }
    }

    /// Refuses new scrapes and waits for rounds in flight (each bounded
    /// by its deadline) to end.
    pub fn shutdown(&self) {
        let mut state = lock(&self.state);
        state.stopped = true;
        while self.running.load(Ordering::SeqCst) > 0 {
            state = self
                .idle
                .wait_timeout(state, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        for entry in state.entries.values_mut() {
            entry.waiters.clear();
        }
        for pool in [&self.rounds_pool, &self.lookups, &self.readers] {
            pool.stop();
        }
    }
}

impl Entry {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            wanted: BTreeSet::new(),
            last: None,
            running: false,
            waiters: Vec::new(),
            last_asked: now,
            failing: HashMap::new(),
            unresolved: None,
        }
    }

    /// Logs each replica that starts or stops failing, and DNS changes, once.
    fn log_changes(&mut self, scrape: &Scrape) {
        let endpoint = &scrape.endpoint;
        let unresolved = match &scrape.resolution {
            Resolution::Addresses => None,
            Resolution::NoAddress(e) => Some(format!("no address ({e})")),
            Resolution::NoSuchName(e) => Some(format!("unknown to DNS ({e})")),
            Resolution::Failed(e) => Some(e.to_string()),
        };
        if unresolved != self.unresolved {
            match &unresolved {
                Some(what) => log::warn!("engine endpoint {endpoint}: {what}"),
                None => log::info!(
                    "engine endpoint {endpoint}: resolves to {} address(es)",
                    scrape.replicas.len()
                ),
            }
            self.unresolved = unresolved;
        }
        let mut failing = HashMap::new();
        for replica in &scrape.replicas {
            let previous = self.failing.remove(&replica.address);
            match (&replica.page, previous) {
                (Err(error), previous) => {
                    let error = error.to_string();
                    if previous.as_deref() != Some(error.as_str()) {
                        log::warn!(
                            "engine endpoint {endpoint}: replica {} cannot be read: {error}",
                            replica.address
                        );
                    }
                    failing.insert(replica.address, error);
                }
                (Ok(_), Some(_)) => {
                    log::info!(
                        "engine endpoint {endpoint}: replica {} answers again",
                        replica.address
                    )
                }
                (Ok(_), None) => {}
            }
        }
        self.failing = failing;
    }
}

/// Drops entries nobody asked for lately, and the least recently asked
/// when [`MAX_CACHED_ENDPOINTS`] is reached (keeping `keep` and running
/// rounds).
pub(super) fn forget_old(entries: &mut HashMap<Endpoint, Entry>, keep: &Endpoint, now: Instant) {
    entries.retain(|endpoint, entry| {
        entry.running || endpoint == keep || now.duration_since(entry.last_asked) < FORGET_AFTER
    });
    while entries.len() >= MAX_CACHED_ENDPOINTS && !entries.contains_key(keep) {
        let oldest = entries
            .iter()
            .filter(|(_, e)| !e.running)
            .min_by_key(|(_, e)| e.last_asked)
            .map(|(endpoint, _)| endpoint.clone());
        match oldest {
            Some(endpoint) => {
                entries.remove(&endpoint);
            }
            None => break,
        }
    }
}
