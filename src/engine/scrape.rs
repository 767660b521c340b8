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
use crate::engine::prom::{self, Family};
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
    pub resolver: Resolver,
}

impl ScrapeConfig {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            max_body: http::MAX_BODY_BYTES,
            budget_bytes: BUDGET_BYTES,
            kept_bytes: KEPT_BYTES,
            resolver: Resolver::system(),
        }
    }
}

/// One round over one endpoint: what DNS said and what each replica gave.
#[derive(Debug)]
pub struct Scrape {
    pub endpoint: Endpoint,
    pub completed_at: Instant,
    /// The families this round parsed.
    pub read: BTreeSet<String>,
    pub resolution: Resolution,
    pub replicas: Vec<Replica>,
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
    /// DNS does not know the name. `resolved_before`: it had addresses
    /// earlier in this process's life (the workload went to zero), as
    /// opposed to a name that never resolved (a typo, or a workload that
    /// was at zero when this scaler started).
    NoSuchName {
        error: String,
        resolved_before: bool,
    },
    /// The lookup failed; the replicas are unknown.
    Failed(String),
}

/// One replica's page, reduced to the families asked for.
#[derive(Debug)]
pub struct Replica {
    pub address: SocketAddr,
    pub page: Result<PageFamilies, String>,
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
            .flat_map(|f| &f.samples)
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
    fetches: AtomicU64,
    running: AtomicUsize,
}

#[derive(Default)]
struct State {
    entries: HashMap<Endpoint, Entry>,
    stopped: bool,
}

struct Entry {
    wanted: BTreeSet<String>,
    last: Option<Arc<Scrape>>,
    running: bool,
    waiters: Vec<Waiter>,
    last_asked: Instant,
    resolved_before: bool,
    /// The error each failing address gave last, to log changes once.
    failing: HashMap<SocketAddr, String>,
    /// The last resolution problem logged.
    unresolved: Option<String>,
}

struct Waiter {
    families: Vec<String>,
    sender: oneshot::Sender<Arc<Scrape>>,
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
            fetches: AtomicU64::new(0),
            running: AtomicUsize::new(0),
        })
    }

    /// Rounds run so far (one per endpoint per interval at most).
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Replica GETs made so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The endpoint's latest round with `families` parsed: the cached one
    /// while younger than one interval, else the next, shared with every
    /// caller waiting for it. `timeout` bounds a round this call starts.
    pub fn scrape(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        families: &[&str],
        timeout: Duration,
    ) -> impl Future<Output = Arc<Scrape>> + Send + 'static {
        let ready = self.request(endpoint, families, timeout);
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
        families: &[&str],
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
        entry.wanted.extend(families.iter().map(|f| f.to_string()));
        if let Some(last) = &entry.last {
            if now.duration_since(last.completed_at) < self.config.interval && last.covers(families)
            {
                return Ok(Arc::clone(last));
            }
        }
        let (sender, receiver) = oneshot::channel();
        entry.waiters.push(Waiter {
            families: families.iter().map(|f| f.to_string()).collect(),
            sender,
        });
        if !entry.running {
            entry.running = true;
            let wanted = entry.wanted.clone();
            let resolved_before = entry.resolved_before;
            drop(state);
            self.start_round(endpoint.clone(), wanted, resolved_before, timeout);
        }
        Err(receiver)
    }

    fn start_round(
        self: &Arc<Self>,
        endpoint: Endpoint,
        wanted: BTreeSet<String>,
        resolved_before: bool,
        timeout: Duration,
    ) {
        self.running.fetch_add(1, Ordering::SeqCst);
        let scraper = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("engine-scrape".into())
            .spawn(move || {
                let scrape = scraper.round(endpoint, wanted, resolved_before, timeout);
                scraper.finish(scrape, timeout);
            });
        if let Err(e) = spawned {
            log::error!("cannot start an engine scrape thread: {e}");
            self.running.fetch_sub(1, Ordering::SeqCst);
            // The waiters' senders drop with the entry's next round; fail them now.
            let mut state = lock(&self.state);
            for entry in state.entries.values_mut() {
                if entry.running && entry.last.is_none() {
                    entry.running = false;
                    entry.waiters.clear();
                }
            }
        }
    }

    /// Resolves the endpoint and reads every address before the deadline.
    fn round(
        &self,
        endpoint: Endpoint,
        wanted: BTreeSet<String>,
        resolved_before: bool,
        timeout: Duration,
    ) -> Scrape {
        let deadline = Instant::now() + timeout;
        let (resolution, addresses) = match (self.config.resolver.0)(&endpoint.host, endpoint.port)
        {
            Resolved::Addresses(addresses) => (Resolution::Addresses, addresses),
            Resolved::NoAddress(error) => (Resolution::NoAddress(error), Vec::new()),
            Resolved::NoSuchName(error) => (
                Resolution::NoSuchName {
                    error,
                    resolved_before,
                },
                Vec::new(),
            ),
            Resolved::Failed(error) => (Resolution::Failed(error), Vec::new()),
        };
        let families: Vec<&str> = wanted.iter().map(String::as_str).collect();
        let read = addresses.len().min(MAX_REPLICAS);
        let mut pages = self.read_all(&endpoint, &addresses[..read], &families, deadline, timeout);
        pages.extend((read..addresses.len()).map(|_| {
            Err(format!(
                "not read: the name has more than {MAX_REPLICAS} addresses"
            ))
        }));
        // Keep what fits the budget; a page over it is a missing replica.
        let mut kept = Kept {
            bytes: 0,
            pool: Some(Arc::clone(&self.kept)),
        };
        for page in &mut pages {
            let Ok(parsed) = page else { continue };
            let bytes = parsed.bytes();
            let fits = self
                .kept
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                    used.checked_add(bytes)
                        .filter(|total| *total <= self.config.kept_bytes)
                })
                .is_ok();
            if fits {
                kept.bytes += bytes;
            } else {
                *page = Err(format!(
                    "not kept: its series would go over the {} MiB all engine scrapes may hold",
                    self.config.kept_bytes >> 20
                ));
            }
        }
        Scrape {
            replicas: addresses
                .into_iter()
                .zip(pages)
                .map(|(address, page)| Replica { address, page })
                .collect(),
            endpoint,
            completed_at: Instant::now(),
            read: wanted,
            resolution,
            kept,
        }
    }

    /// Every address, at most `MAX_PARALLEL` at once, in address order.
    fn read_all(
        &self,
        endpoint: &Endpoint,
        addresses: &[SocketAddr],
        families: &[&str],
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
            let page = if Instant::now() >= deadline {
                Err(format!(
                    "not read: the {}ms engineTimeout passed while other replicas were read",
                    timeout.as_millis()
                ))
            } else {
                self.fetches.fetch_add(1, Ordering::Relaxed);
                self.read_one(*address, &host, &endpoint.path, families, deadline)
            };
            lock(&results)[index] = Some(page);
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
        families: &[&str],
        deadline: Instant,
    ) -> Result<PageFamilies, String> {
        let page = http::get(
            address,
            host,
            path,
            deadline,
            self.config.max_body,
            &self.budget,
        )
        .map_err(|e| e.to_string())?;
        let (found, declared) =
            prom::families_and_names(&page.text, families, MAX_SERIES_PER_FAMILY)
                .map_err(|e| format!("the page is not Prometheus text: {e}"))?;
        let prefixes: Vec<&str> = families_prefixes(families);
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
    fn finish(self: &Arc<Self>, scrape: Scrape, timeout: Duration) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        let scrape = Arc::new(scrape);
        let mut again = None;
        {
            let mut state = lock(&self.state);
            if let Some(entry) = state.entries.get_mut(&scrape.endpoint) {
                entry.log_changes(&scrape);
                if scrape.resolution == Resolution::Addresses {
                    entry.resolved_before = true;
                }
                entry.running = false;
                entry.last = Some(Arc::clone(&scrape));
                let mut later = Vec::new();
                for waiter in entry.waiters.drain(..) {
                    let families: Vec<&str> = waiter.families.iter().map(String::as_str).collect();
                    if scrape.covers(&families) {
                        let _ = waiter.sender.send(Arc::clone(&scrape));
                    } else {
                        later.push(waiter);
                    }
                }
                entry.waiters = later;
                if !entry.waiters.is_empty() && !state.stopped {
                    let entry = state.entries.get_mut(&scrape.endpoint).expect("present");
                    entry.running = true;
                    again = Some((entry.wanted.clone(), entry.resolved_before));
                }
            }
        }
        if let Some((wanted, resolved_before)) = again {
            self.start_round(scrape.endpoint.clone(), wanted, resolved_before, timeout);
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        let _state = lock(&self.state);
        self.idle.notify_all();
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
            kept: Kept::default(),
        }
    }

    fn covers(&self, families: &[&str]) -> bool {
        families.iter().all(|f| self.read.contains(*f))
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
            resolved_before: false,
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
            Resolution::NoSuchName { error, .. } => Some(format!("unknown to DNS ({error})")),
            Resolution::Failed(e) => Some(format!("lookup failed ({e})")),
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

    fn scrape(scraper: &Arc<Scraper>, endpoint: &Endpoint, families: &[&str]) -> Arc<Scrape> {
        futures_executor::block_on(scraper.scrape(endpoint, families, Duration::from_secs(5)))
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
            matches!(page, Err(e) if e.contains("that scrapes running at once may hold is in use")),
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
            matches!(page, Err(e) if e.contains("would go over the 0 MiB")),
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
