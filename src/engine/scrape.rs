//! The shared scrape of engine endpoints. Each endpoint is resolved to all
//! its addresses and every address is read in parallel, at most once per
//! sample interval however many triggers and streams ask (single flight:
//! callers that arrive while a round runs share it). A round runs on its
//! own threads with one deadline; callers get a future and never block a
//! gRPC thread. Pages are parsed as they arrive and only the families
//! asked for are kept; bodies read at once share one memory budget.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use crate::engine::endpoint::Endpoint;
use crate::engine::http::{self, Budget};
use crate::engine::prom::{self, Family, Want};
use crate::engine::resolve::{self, Resolved};

/// The most series of one family kept per page: an engine page has a few
/// per model and data-parallel rank.
pub const MAX_SERIES_PER_FAMILY: usize = 256;
/// Replicas read at once in one round; the rest wait for a free worker
/// (within the same deadline).
pub const MAX_PARALLEL: usize = 64;
/// Bytes that pages being read at once may hold, across all rounds.
pub const BUDGET_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of parsed series and names that cached rounds may keep, across
/// all endpoints; a replica whose page would go over is missing.
pub const KEPT_BYTES: usize = 8 * 1024 * 1024;
/// Replicas read per endpoint; addresses beyond are missing.
pub const MAX_REPLICAS: usize = 1024;
/// Names kept per page for "the page has … instead" messages.
const MAX_SIMILAR: usize = 16;
/// Endpoints remembered; the one asked for least recently goes first.
pub const MAX_ENDPOINTS: usize = 1024;
/// How long a replica's last answer may stand in for it once it stops
/// answering (see `scaling/replicas.rs`). Kubernetes takes a pod that
/// stopped answering out of its Service after its readiness probe fails
/// `failureThreshold` times (3 × 10 s by default): until then DNS still
/// names it, and an overloaded replica that missed one deadline most
/// likely still holds the queue it last reported.
pub const LAST_READ_TRUST: Duration = Duration::from_secs(30);
/// An endpoint no trigger asked for in this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);
const WORKER_STACK: usize = 256 * 1024;

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
    pub max_body: usize,
    pub budget_bytes: usize,
    pub kept_bytes: usize,
    pub max_replicas: usize,
    pub resolver: Resolver,
}

impl ScrapeConfig {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            max_body: http::MAX_BODY_BYTES,
            budget_bytes: BUDGET_BYTES,
            kept_bytes: KEPT_BYTES,
            max_replicas: MAX_REPLICAS,
            resolver: Resolver::system(),
        }
    }
}

/// One round over one endpoint: what DNS said and what each replica gave.
#[derive(Debug)]
pub struct Scrape {
    pub endpoint: Endpoint,
    pub completed_at: Instant,
    /// The families (and series) this round kept.
    pub read: BTreeSet<Want>,
    pub resolution: Resolution,
    pub replicas: Vec<Replica>,
    /// When DNS names no address now: the replicas the previous rounds
    /// read, each with its recent earlier page (never read here; for an
    /// endpoint that lost every address while others kept theirs).
    pub vanished: Vec<Replica>,
    /// Bytes of [`KEPT_BYTES`] this round holds, given back when dropped.
    kept: Kept,
}

/// A share of the kept-bytes budget.
#[derive(Debug, Default)]
struct Kept {
    bytes: usize,
    pool: Option<Arc<AtomicUsize>>,
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.fetch_sub(self.bytes, Ordering::SeqCst);
        }
    }
}

/// What DNS said about the endpoint's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// `replicas` holds one entry per address.
    Addresses,
    /// The name exists with no address: no replica is ready.
    NoAddress(String),
    /// DNS does not know the name: a misspelt name, and a headless Service
    /// with no ready pod, alike (cluster DNS answers both NXDOMAIN).
    NoSuchName(String),
    /// The lookup failed or did not answer in time; the replicas are unknown.
    Failed(String),
}

/// One replica's page, reduced to the families asked for.
#[derive(Debug)]
pub struct Replica {
    pub address: SocketAddr,
    pub page: Result<Arc<PageFamilies>, String>,
    /// The latest page this address answered with before this round, if
    /// under [`LAST_READ_TRUST`] old: what it last said, should it not
    /// answer now.
    pub earlier: Option<Earlier>,
}

/// A replica's page from an earlier round.
#[derive(Debug, Clone)]
pub struct Earlier {
    pub page: Arc<PageFamilies>,
    /// When the round that read it ended.
    pub at: Instant,
}

#[derive(Debug)]
pub struct PageFamilies {
    pub families: Vec<Family>,
    /// Families the page declares whose names start like a wanted one's
    /// (at most 16), for "the page has … instead" messages.
    pub declared: Vec<String>,
}

impl PageFamilies {
    /// Roughly what it holds in memory.
    fn bytes(&self) -> usize {
        let series: usize = self
            .families
            .iter()
            .flat_map(|f| f.samples.iter().chain(&f.unkept_examples))
            .map(|s| {
                48 + s.name.len()
                    + s.labels
                        .iter()
                        .map(|(n, v)| 48 + n.len() + v.len())
                        .sum::<usize>()
            })
            .sum();
        series + self.declared.iter().map(|n| 24 + n.len()).sum::<usize>()
    }
}

pub struct Scraper {
    config: ScrapeConfig,
    budget: Budget,
    kept: Arc<AtomicUsize>,
    state: Mutex<State>,
    idle: Condvar,
    rounds: AtomicU64,
    /// Replica reads by [`ReadOutcome`].
    outcomes: [AtomicU64; ReadOutcome::ALL.len()],
    running: AtomicUsize,
}

/// How one replica read ended, for the `/metrics` page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// A page of Prometheus text.
    Ok,
    /// No answer before the deadline.
    Timeout,
    /// Connecting, sending or reading failed (refused, reset).
    ConnectionError,
    /// An HTTP status other than 200.
    HttpStatus,
    /// Not HTTP as the client reads it, or larger than allowed.
    BadAnswer,
    /// HTTP 200 with a body that is not Prometheus text.
    NotPrometheus,
    /// The round's deadline passed before this replica's turn.
    NotRead,
}

impl ReadOutcome {
    pub const ALL: [ReadOutcome; 7] = [
        Self::Ok,
        Self::Timeout,
        Self::ConnectionError,
        Self::HttpStatus,
        Self::BadAnswer,
        Self::NotPrometheus,
        Self::NotRead,
    ];

    /// The `outcome` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Timeout => "timeout",
            Self::ConnectionError => "connection_error",
            Self::HttpStatus => "http_status",
            Self::BadAnswer => "bad_answer",
            Self::NotPrometheus => "not_prometheus",
            Self::NotRead => "not_read",
        }
    }

    fn of_http(error: &http::HttpError) -> Self {
        match error {
            http::HttpError::Timeout => Self::Timeout,
            http::HttpError::Io(_) => Self::ConnectionError,
            http::HttpError::Status { .. } => Self::HttpStatus,
            http::HttpError::Malformed(_) | http::HttpError::TooLarge(_) => Self::BadAnswer,
        }
    }
}

#[derive(Default)]
struct State {
    entries: HashMap<Endpoint, Entry>,
    stopped: bool,
}

struct Entry {
    wanted: BTreeSet<Want>,
    last: Option<Arc<Scrape>>,
    running: bool,
    waiters: Vec<Waiter>,
    last_asked: Instant,
    /// The error each failing address gave last, to log changes once.
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
struct Plan {
    endpoint: Endpoint,
    wanted: BTreeSet<Want>,
    timeout: Duration,
    /// Kept bytes of the round this one replaces (released once it lands).
    replacing: usize,
    /// The round this one replaces, for each replica's earlier page.
    previous: Option<Arc<Scrape>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Scraper {
    pub fn new(config: ScrapeConfig) -> Arc<Self> {
        Arc::new(Self {
            budget: Budget::new(config.budget_bytes),
            kept: Arc::new(AtomicUsize::new(0)),
            config,
            state: Mutex::new(State::default()),
            idle: Condvar::new(),
            rounds: AtomicU64::new(0),
            outcomes: Default::default(),
            running: AtomicUsize::new(0),
        })
    }

    /// Rounds run so far (one per endpoint per interval at most).
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Replica reads so far, by how they ended.
    pub fn reads(&self) -> [(ReadOutcome, u64); ReadOutcome::ALL.len()] {
        ReadOutcome::ALL.map(|o| (o, self.outcomes[o as usize].load(Ordering::Relaxed)))
    }

    fn count(&self, outcome: ReadOutcome) {
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
                    Arc::new(Scrape::failed(endpoint, "keda-gpu-scaler is shutting down"))
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
                "keda-gpu-scaler is shutting down",
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
            replacing: entry.last.as_ref().map_or(0, |last| last.kept.bytes),
            previous: entry.last.clone(),
        })
    }

    fn start_round(self: &Arc<Self>, plan: Plan) {
        let endpoint = plan.endpoint.clone();
        let scraper = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("engine-scrape".into())
            .spawn(move || {
                let endpoint = plan.endpoint.clone();
                // A panic in a round (or a worker) must still answer its
                // waiters and let shutdown finish.
                let round =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scraper.round(plan)));
                let scrape = round.unwrap_or_else(|_| {
                    Scrape::failed(
                        endpoint,
                        "the scrape failed unexpectedly (a panic; see the log)",
                    )
                });
                scraper.finish(scrape);
            });
        if let Err(e) = spawned {
            log::error!("cannot start an engine scrape thread: {e}");
            let failed = Scrape::failed(endpoint, &format!("cannot start a scrape thread: {e}"));
            self.finish(failed);
        }
    }

    /// Resolves the endpoint and reads every address before the deadline.
    fn round(&self, plan: Plan) -> Scrape {
        let Plan {
            endpoint,
            wanted,
            timeout,
            replacing,
            previous,
        } = plan;
        let deadline = Instant::now() + timeout;
        let (resolution, addresses) = match self.resolve(&endpoint, deadline) {
            Resolved::Addresses(addresses) => (Resolution::Addresses, one_family(addresses)),
            Resolved::NoAddress(error) => (Resolution::NoAddress(error), Vec::new()),
            Resolved::NoSuchName(error) => (Resolution::NoSuchName(error), Vec::new()),
            Resolved::Failed(error) => (
                Resolution::Failed(format!("DNS lookup failed: {error}")),
                Vec::new(),
            ),
        };
        let wants: Vec<Want> = wanted.iter().cloned().collect();
        let read = addresses.len().min(self.config.max_replicas);
        let mut pages = self.read_all(&endpoint, &addresses[..read], &wants, deadline, timeout);
        let limit = self.config.max_replicas;
        pages.extend((read..addresses.len()).map(|_| {
            Err(format!(
                "not read: the name has more than {limit} addresses"
            ))
        }));
        let started = Instant::now();
        let earlier = earlier_pages(previous.as_deref(), started);
        drop(previous);
        let mut replicas: Vec<Replica> = addresses
            .iter()
            .zip(pages)
            .map(|(address, page)| Replica {
                address: *address,
                page: page.map(Arc::new),
                earlier: earlier.get(address).cloned(),
            })
            .collect();
        let mut vanished: Vec<Replica> = Vec::new();
        if addresses.is_empty() {
            let mut known: Vec<(&SocketAddr, &Earlier)> = earlier.iter().collect();
            known.sort_by_key(|(address, _)| **address);
            vanished = known
                .into_iter()
                .map(|(address, earlier)| Replica {
                    address: *address,
                    page: Err(String::from("no longer named by DNS")),
                    earlier: Some(earlier.clone()),
                })
                .collect();
        }
        // Keep what fits the budget (this endpoint's previous round, which
        // this one replaces, counts as free); a page over it is missing,
        // and an earlier page over it is forgotten.
        let cap = self.config.kept_bytes + replacing;
        let mut kept = Kept {
            bytes: 0,
            pool: Some(Arc::clone(&self.kept)),
        };
        let mut fits = |bytes: usize| {
            let fits = self
                .kept
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                    used.checked_add(bytes).filter(|total| *total <= cap)
                })
                .is_ok();
            if fits {
                kept.bytes += bytes;
            }
            fits
        };
        for replica in replicas.iter_mut().chain(vanished.iter_mut()) {
            if let Ok(parsed) = &replica.page {
                if !fits(parsed.bytes()) {
                    replica.page = Err(format!(
                        "not kept: its series would go over the {} all engine scrapes may hold",
                        size(self.config.kept_bytes)
                    ));
                }
            }
            if let Some(earlier) = &replica.earlier {
                if !fits(earlier.page.bytes()) {
                    replica.earlier = None;
                }
            }
        }
        Scrape {
            replicas,
            vanished,
            endpoint,
            completed_at: Instant::now(),
            read: wanted,
            resolution,
            kept,
        }
    }

    /// The resolver's answer, or `Failed` when it does not come before the
    /// deadline (`getaddrinfo` cannot be interrupted; its thread finishes
    /// on its own and its answer is dropped).
    fn resolve(&self, endpoint: &Endpoint, deadline: Instant) -> Resolved {
        let (sender, receiver) = std::sync::mpsc::channel();
        let resolver = self.config.resolver.clone();
        let (host, port) = (endpoint.host.clone(), endpoint.port);
        let spawned = std::thread::Builder::new()
            .name("engine-dns".into())
            .stack_size(WORKER_STACK)
            .spawn(move || {
                let _ = sender.send((resolver.0)(&host, port));
            });
        if let Err(e) = spawned {
            return Resolved::Failed(format!("cannot start a DNS thread: {e}"));
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(wait) {
            Ok(resolved) => resolved,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Resolved::Failed(format!(
                "no answer within the engineTimeout ({}ms left of it)",
                wait.as_millis()
            )),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Resolved::Failed(String::from("the lookup failed unexpectedly (see the log)"))
            }
        }
    }

    /// Every address, at most `MAX_PARALLEL` at once, in address order.
    fn read_all(
        &self,
        endpoint: &Endpoint,
        addresses: &[SocketAddr],
        wants: &[Want],
        deadline: Instant,
        timeout: Duration,
    ) -> Vec<Result<PageFamilies, String>> {
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<PageFamilies, String>>>> =
            Mutex::new((0..addresses.len()).map(|_| None).collect());
        let host = endpoint.host_header();
        let work = || loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(address) = addresses.get(index) else {
                return;
            };
            let read = if Instant::now() >= deadline {
                Err((
                    ReadOutcome::NotRead,
                    format!(
                        "not read: the {}ms engineTimeout passed while other replicas were read",
                        timeout.as_millis()
                    ),
                ))
            } else {
                self.read_one(*address, &host, &endpoint.path, wants, deadline)
            };
            self.count(match &read {
                Ok(_) => ReadOutcome::Ok,
                Err((outcome, _)) => *outcome,
            });
            lock(&results)[index] = Some(read.map_err(|(_, why)| why));
        };
        let workers = addresses.len().min(MAX_PARALLEL);
        std::thread::scope(|scope| {
            let mut spawned = 0;
            for _ in 1..workers {
                let started = std::thread::Builder::new()
                    .name("engine-read".into())
                    .stack_size(WORKER_STACK)
                    .spawn_scoped(scope, work);
                if started.is_ok() {
                    spawned += 1;
                }
            }
            log::trace!("engine scrape of {endpoint}: {} workers", spawned + 1);
            // This thread works too, so a round always makes progress.
            work();
        });
        results
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(String::from("not read"))))
            .collect()
    }

    fn read_one(
        &self,
        address: SocketAddr,
        host: &str,
        path: &str,
        wants: &[Want],
        deadline: Instant,
    ) -> Result<PageFamilies, (ReadOutcome, String)> {
        let page = http::get(
            address,
            host,
            path,
            deadline,
            self.config.max_body,
            &self.budget,
        )
        .map_err(|e| (ReadOutcome::of_http(&e), e.to_string()))?;
        let (found, declared) = prom::families_wanted(&page.text, wants, MAX_SERIES_PER_FAMILY)
            .map_err(|e| {
                (
                    ReadOutcome::NotPrometheus,
                    format!("the page is not Prometheus text: {e}"),
                )
            })?;
        let families: Vec<&str> = wants.iter().map(|w| w.family.as_str()).collect();
        let prefixes: Vec<&str> = families_prefixes(&families);
        let declared = declared
            .into_iter()
            .filter(|name| prefixes.iter().any(|p| name.starts_with(p)))
            .take(MAX_SIMILAR)
            .collect();
        Ok(PageFamilies {
            families: found,
            declared,
        })
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
                    if scrape.covers(&waiter.wants) || stopped || scrape.read.is_empty() {
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
    }
}

/// Each address's latest answered page before this round, from the round
/// it replaces, if under [`LAST_READ_TRUST`] old at `now`.
fn earlier_pages(previous: Option<&Scrape>, now: Instant) -> HashMap<SocketAddr, Earlier> {
    let Some(previous) = previous else {
        return HashMap::new();
    };
    previous
        .replicas
        .iter()
        .chain(&previous.vanished)
        .filter_map(|replica| {
            let earlier = match &replica.page {
                Ok(page) => Earlier {
                    page: Arc::clone(page),
                    at: previous.completed_at,
                },
                Err(_) => replica.earlier.clone()?,
            };
            (now.saturating_duration_since(earlier.at) < LAST_READ_TRUST)
                .then_some((replica.address, earlier))
        })
        .collect()
}

/// One address per pod: a dual-stack headless Service answers with an
/// IPv4 and an IPv6 address for each, which would count every replica
/// twice. IPv4 when there is any, else IPv6.
fn one_family(addresses: Vec<SocketAddr>) -> Vec<SocketAddr> {
    if addresses.iter().any(SocketAddr::is_ipv4) {
        addresses.into_iter().filter(SocketAddr::is_ipv4).collect()
    } else {
        addresses
    }
}

/// `8 MiB`, `512 KiB`, `100 bytes`.
fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// `vllm:` of `vllm:num_requests_waiting`, `nv_` of `nv_inference_…`.
pub fn prefix(name: &str) -> &str {
    match name.find([':', '_']) {
        Some(end) => &name[..=end],
        None => name,
    }
}

fn families_prefixes<'a>(families: &[&'a str]) -> Vec<&'a str> {
    families.iter().map(|f| prefix(f)).collect()
}

impl Scrape {
    /// Bytes of parsed series this round keeps (while cached or in use).
    pub fn kept_bytes(&self) -> usize {
        self.kept.bytes
    }

    fn failed(endpoint: Endpoint, reason: &str) -> Self {
        Self {
            endpoint,
            completed_at: Instant::now(),
            read: BTreeSet::new(),
            resolution: Resolution::Failed(reason.to_string()),
            replicas: Vec::new(),
            vanished: Vec::new(),
            kept: Kept::default(),
        }
    }

    /// Whether this round kept what `wants` ask: each want itself, or its
    /// whole family.
    fn covers(&self, wants: &[Want]) -> bool {
        wants
            .iter()
            .all(|w| self.read.contains(w) || self.read.contains(&Want::all(&w.family)))
    }
}

impl Entry {
    fn new(now: Instant) -> Self {
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
            Resolution::Failed(e) => Some(e.clone()),
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
                    if previous.as_deref() != Some(error) {
                        log::warn!(
                            "engine endpoint {endpoint}: replica {} cannot be read: {error}",
                            replica.address
                        );
                    }
                    failing.insert(replica.address, error.clone());
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
/// when `MAX_ENDPOINTS` is reached (keeping `keep` and running rounds).
fn forget_old(entries: &mut HashMap<Endpoint, Entry>, keep: &Endpoint, now: Instant) {
    entries.retain(|endpoint, entry| {
        entry.running || endpoint == keep || now.duration_since(entry.last_asked) < FORGET_AFTER
    });
    while entries.len() >= MAX_ENDPOINTS && !entries.contains_key(keep) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use fake_engine::{Behaviour, Kind, Load, Replica};

    fn scraper(config: impl FnOnce(&mut ScrapeConfig)) -> Arc<Scraper> {
        let mut settings = ScrapeConfig::new(Duration::from_secs(60));
        config(&mut settings);
        Scraper::new(settings)
    }

    fn endpoint(replica: &Replica) -> Endpoint {
        Endpoint {
            host: replica.address().ip().to_string(),
            port: replica.address().port(),
            path: String::from("/metrics"),
        }
    }

    fn busy() -> Behaviour {
        Behaviour::new(
            Kind::Vllm,
            Load {
                waiting: 4,
                ..Load::default()
            },
        )
    }

    fn wants(families: &[&str]) -> Vec<Want> {
        families.iter().map(|f| Want::all(f)).collect()
    }

    fn scrape(scraper: &Arc<Scraper>, endpoint: &Endpoint, families: &[&str]) -> Arc<Scrape> {
        futures_executor::block_on(scraper.scrape(
            endpoint,
            &wants(families),
            Duration::from_secs(5),
        ))
    }

    #[test]
    fn pages_are_capped_each_and_together() {
        let replica = Replica::start("127.0.0.1:0", busy()).unwrap();
        let endpoint = endpoint(&replica);
        let size = fake_engine::page(Kind::Vllm, &busy().load).len();
        // A page exactly at the per-page cap is read; one byte less is not.
        let at_cap = scraper(|c| c.max_body = size);
        let page = &scrape(&at_cap, &endpoint, &["vllm:num_requests_waiting"]).replicas[0].page;
        assert!(page.is_ok(), "{page:?}");
        let below = scraper(|c| c.max_body = size - 1);
        let page = &scrape(&below, &endpoint, &["vllm:num_requests_waiting"]).replicas[0].page;
        assert!(matches!(page, Err(e) if e.contains("over the")), "{page:?}");
        // Pages read at once share the budget: one that does not fit is
        // refused, and the budget is whole again afterwards.
        let small = scraper(|c| c.budget_bytes = size / 2);
        let page = &scrape(&small, &endpoint, &["vllm:num_requests_waiting"]).replicas[0].page;
        assert!(
            matches!(page, Err(e) if e.contains("in use by other pages")),
            "{page:?}"
        );
        assert_eq!(small.budget.in_use(), 0);
        assert_eq!(at_cap.budget.in_use(), 0);
    }

    #[test]
    fn series_kept_across_rounds_are_capped() {
        let replica = Replica::start("127.0.0.1:0", busy()).unwrap();
        let endpoint = endpoint(&replica);
        let wanted = ["vllm:num_requests_waiting"];
        let probe = scraper(|_| {});
        let one = scrape(&probe, &endpoint, &wanted);
        let bytes = one.kept_bytes();
        assert!(bytes > 0 && probe.kept.load(Ordering::SeqCst) == bytes);
        drop(one);
        // The probe's cache still holds the round.
        assert_eq!(probe.kept.load(Ordering::SeqCst), bytes);
        // Room for exactly one page: the first endpoint's round is kept,
        // a second endpoint's replica is missing, saying why.
        let tight = scraper(|c| c.kept_bytes = bytes);
        assert!(scrape(&tight, &endpoint, &wanted).replicas[0].page.is_ok());
        let other = Endpoint {
            host: String::from("localhost"),
            ..endpoint.clone()
        };
        let page = &scrape(&tight, &other, &wanted).replicas[0].page;
        assert!(
            matches!(page, Err(e) if e.contains("would go over the") && e.contains("all engine scrapes may hold")),
            "{page:?}"
        );
    }

    #[test]
    fn a_family_not_read_yet_starts_one_more_round_then_both_are_cached() {
        let replica = Replica::start("127.0.0.1:0", busy()).unwrap();
        let endpoint = endpoint(&replica);
        let scraper = scraper(|_| {});
        let waiting = scrape(&scraper, &endpoint, &["vllm:num_requests_waiting"]);
        assert_eq!(waiting.replicas[0].page.as_ref().unwrap().families.len(), 1);
        let running = scrape(&scraper, &endpoint, &["vllm:num_requests_running"]);
        assert_eq!(scraper.rounds(), 2);
        assert_eq!(running.read.len(), 2, "the second round reads both");
        for families in [
            &["vllm:num_requests_waiting"][..],
            &["vllm:num_requests_running"],
        ] {
            scrape(&scraper, &endpoint, families);
        }
        assert_eq!(scraper.rounds(), 2);
        assert_eq!(replica.hits(), 2);
    }

    #[test]
    fn endpoints_are_forgotten_when_idle_or_past_the_cap() {
        // A "now" in the future, so that the ages below never reach back
        // before this machine's boot (where Instant cannot go).
        let now = Instant::now() + 2 * FORGET_AFTER;
        let endpoint = |i: usize| Endpoint {
            host: format!("h{i}"),
            port: 1,
            path: String::from("/metrics"),
        };
        let mut entries: HashMap<Endpoint, Entry> = HashMap::new();
        for i in 0..MAX_ENDPOINTS {
            let mut entry = Entry::new(now);
            // Endpoint i was last asked for i + 1 ms ago.
            entry.last_asked = now - Duration::from_millis(1 + i as u64);
            entries.insert(endpoint(i), entry);
        }
        // At the cap, a new endpoint makes room by dropping the least
        // recently asked one.
        forget_old(&mut entries, &endpoint(MAX_ENDPOINTS), now);
        assert_eq!(entries.len(), MAX_ENDPOINTS - 1);
        assert!(!entries.contains_key(&endpoint(MAX_ENDPOINTS - 1)));
        // An endpoint nobody asked for in FORGET_AFTER goes; a running one stays.
        entries.get_mut(&endpoint(1)).unwrap().last_asked = now - FORGET_AFTER;
        let running = entries.get_mut(&endpoint(2)).unwrap();
        running.last_asked = now - FORGET_AFTER;
        running.running = true;
        forget_old(&mut entries, &endpoint(3), now);
        assert!(!entries.contains_key(&endpoint(1)));
        assert!(entries.contains_key(&endpoint(2)));
    }

    fn resolver(answer: impl Fn(&str, u16) -> Resolved + Send + Sync + 'static) -> Resolver {
        Resolver(Arc::new(answer))
    }

    #[test]
    fn a_dual_stack_name_counts_each_pod_once() {
        let v4: SocketAddr = "10.0.0.1:8000".parse().unwrap();
        let v6: SocketAddr = "[fd00::1]:8000".parse().unwrap();
        assert_eq!(one_family(vec![v6, v4]), vec![v4]);
        assert_eq!(one_family(vec![v6]), vec![v6]);
    }

    #[test]
    fn dns_is_bounded_by_the_deadline_and_its_failures_are_failures() {
        let endpoint = Endpoint {
            host: String::from("slow.dns"),
            port: 8000,
            path: String::from("/metrics"),
        };
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let blocked = Mutex::new(blocked);
        let slow = scraper(|c| {
            c.resolver = resolver(move |_, _| {
                let _ = blocked.lock().unwrap().recv();
                Resolved::NoAddress(String::from("late"))
            })
        });
        let round = futures_executor::block_on(slow.scrape(
            &endpoint,
            &wants(&["x"]),
            Duration::from_millis(100),
        ));
        assert!(
            matches!(&round.resolution, Resolution::Failed(e) if e.starts_with("DNS lookup failed: no answer within the engineTimeout")),
            "{:?}",
            round.resolution
        );
        drop(release);
        let panicking = scraper(|c| c.resolver = resolver(|_, _| panic!("resolver bug")));
        let round = scrape(&panicking, &endpoint, &["x"]);
        assert!(
            matches!(&round.resolution, Resolution::Failed(e) if e.contains("failed unexpectedly")),
            "{:?}",
            round.resolution
        );
    }

    #[test]
    fn shutdown_waits_for_a_round_in_flight_and_answers_it() {
        let stalled = Replica::start(
            "127.0.0.1:0",
            Behaviour {
                answer: fake_engine::Answer::Stall,
                ..busy()
            },
        )
        .unwrap();
        let scraper = scraper(|_| {});
        let pending = scraper.scrape(
            &endpoint(&stalled),
            &wants(&["vllm:num_requests_waiting"]),
            Duration::from_millis(300),
        );
        // The round is counted before `scrape` returns, so shutdown waits for it.
        assert_eq!(scraper.running.load(Ordering::SeqCst), 1);
        scraper.shutdown();
        assert_eq!(scraper.running.load(Ordering::SeqCst), 0);
        let round = futures_executor::block_on(pending);
        assert!(
            matches!(&round.replicas[0].page, Err(e) if e.contains("no answer before the deadline")),
            "{round:?}"
        );
    }

    #[test]
    fn a_steady_round_replaces_its_predecessor_within_the_cap() {
        let replica = Replica::start("127.0.0.1:0", busy()).unwrap();
        let endpoint = endpoint(&replica);
        let wanted = ["vllm:num_requests_waiting"];
        let bytes = scrape(&scraper(|_| {}), &endpoint, &wanted).kept_bytes();
        // Room for exactly one round, and every call a new round.
        let tight = scraper(|c| {
            c.kept_bytes = bytes;
            c.interval = Duration::ZERO;
        });
        for _ in 0..5 {
            let round = scrape(&tight, &endpoint, &wanted);
            let page = round.replicas[0].page.as_ref();
            let waiting = page.map(|p| p.families[0].samples[0].value);
            assert_eq!(waiting, Ok(4.0), "{round:?}");
        }
        // Five rounds, each a fresh read of the replica (one more sized it).
        assert_eq!(tight.rounds(), 5);
        assert_eq!(replica.hits(), 6);
    }

    #[test]
    fn chunked_pages_are_read() {
        let replica = Replica::start(
            "127.0.0.1:0",
            Behaviour {
                chunked: true,
                ..busy()
            },
        )
        .unwrap();
        let round = scrape(
            &scraper(|_| {}),
            &endpoint(&replica),
            &["vllm:num_requests_waiting"],
        );
        let page = round.replicas[0].page.as_ref().unwrap();
        assert_eq!(page.families[0].samples[0].value, 4.0);
    }

    #[test]
    fn addresses_past_the_replica_cap_are_missing_not_dropped() {
        let replica = Replica::start("127.0.0.1:0", busy()).unwrap();
        let address = replica.address();
        let capped = scraper(|c| {
            c.max_replicas = 1;
            c.resolver = resolver(move |_, _| {
                Resolved::Addresses(vec![
                    address,
                    SocketAddr::new("127.0.0.9".parse().unwrap(), 1),
                ])
            });
        });
        let endpoint = Endpoint {
            host: String::from("two.dns"),
            ..endpoint(&replica)
        };
        let round = scrape(&capped, &endpoint, &["vllm:num_requests_waiting"]);
        assert_eq!(round.replicas.len(), 2);
        assert!(round.replicas[0].page.is_ok());
        assert!(
            matches!(&round.replicas[1].page, Err(e) if e.contains("more than 1 addresses")),
            "{round:?}"
        );
    }

    #[test]
    fn after_shutdown_nothing_is_read() {
        let replica = Replica::start("127.0.0.1:0", busy()).unwrap();
        let scraper = scraper(|_| {});
        scraper.shutdown();
        let scrape = scrape(
            &scraper,
            &endpoint(&replica),
            &["vllm:num_requests_waiting"],
        );
        assert_eq!(
            scrape.resolution,
            Resolution::Failed("keda-gpu-scaler is shutting down".into())
        );
        assert_eq!(replica.hits(), 0);
    }
}
