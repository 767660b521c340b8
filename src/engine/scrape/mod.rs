//! The shared scrape of engine endpoints. Each endpoint is resolved to all
//! its addresses and every address is read in parallel, at most once per
//! sample interval however many triggers and streams ask (single flight:
//! callers that arrive while a round runs share it). A round runs on its
//! own threads with one deadline; callers get a future and never block a
//! gRPC thread. Pages are parsed as they arrive and only the families
//! asked for are kept.
//!
//! One file per concern:
//! - `cache`: the cache of rounds ([`Scraper`]): who waits for which
//!   round, when one is reused, which endpoints are remembered, logging of
//!   changes, shutdown;
//! - `round`: one round: resolve within the deadline, read every address,
//!   keep what fits;
//! - `last_read`: a replica's last read, kept for when it stops answering;
//! - `budget`: where memory is bounded (every cap, and the series budget
//!   that cached rounds share);
//! - `pool`: the bounded thread pools every round shares (rounds, DNS
//!   lookups, replica reads);
//! - `outcome`: how a replica read or a round ends, as types; text only
//!   where shown.
//!
//! This file holds what a round hands on. Nothing here knows about GPUs,
//! triggers or gRPC.

mod budget;
mod cache;
mod last_read;
mod outcome;
mod pool;
mod round;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::engine::endpoint::Endpoint;
use crate::engine::prom::{Family, Want};

pub use budget::{
    SeriesShare, BODY_BUDGET_BYTES, MAX_CACHED_ENDPOINTS, MAX_LOOKUPS, MAX_PARALLEL, MAX_REPLICAS,
    MAX_ROUNDS, MAX_SERIES_KEPT, SERIES_BUDGET_BYTES,
};
pub use cache::{ResolveFn, Resolver, ScrapeConfig, Scraper};
pub use last_read::{Earlier, LAST_READ_TRUST};
pub use outcome::{ReadError, ReadOutcome, RoundFailure};

/// One round over one endpoint: what DNS said and what each replica gave.
#[derive(Debug)]
pub struct Scrape {
    pub endpoint: Endpoint,
    pub completed_at: Instant,
    /// The families (and series) this round kept of each page.
    pub kept_wants: BTreeSet<Want>,
    pub resolution: Resolution,
    pub replicas: Vec<Replica>,
    /// When DNS names no address now: the replicas the previous rounds
    /// read, each with its recent earlier page (never read here; for an
    /// endpoint that lost every address while others kept theirs).
    pub vanished: Vec<Replica>,
    /// This round's share of [`SERIES_BUDGET_BYTES`], given back when
    /// dropped.
    share: SeriesShare,
}

/// What DNS said about the endpoint's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// `replicas` holds one entry per address.
    Addresses,
    /// The name exists with no address: no replica is ready. The text is
    /// the resolver's.
    NoAddress(String),
    /// DNS does not know the name: a misspelt name, and a headless Service
    /// with no ready pod, alike (cluster DNS answers both NXDOMAIN). The
    /// text is the resolver's.
    NoSuchName(String),
    /// The round could not learn the replicas.
    Failed(RoundFailure),
}

/// One replica's page, reduced to the families asked for.
#[derive(Debug)]
pub struct Replica {
    pub address: SocketAddr,
    pub page: Result<Arc<PageFamilies>, ReadError>,
    /// The latest page this address answered with before this round, if
    /// under [`LAST_READ_TRUST`] old: what it last said, should it not
    /// answer now.
    pub earlier: Option<Earlier>,
}

/// What one page kept.
#[derive(Debug)]
pub struct PageFamilies {
    pub families: Vec<Family>,
    /// Families the page declares whose names start like a wanted one's
    /// (at most 16), for "the page has … instead" messages.
    pub declared: Vec<String>,
}

impl PageFamilies {
    /// Roughly what it holds in memory, as counted against the series
    /// budget.
    pub fn bytes(&self) -> usize {
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

impl Scrape {
    /// Bytes of parsed series this round holds of the series budget (while
    /// cached or in use).
    pub fn series_bytes(&self) -> usize {
        self.share.bytes()
    }

    /// A round that read nothing, for `failure`.
    fn failed(endpoint: Endpoint, failure: RoundFailure) -> Self {
        Self {
            endpoint,
            completed_at: Instant::now(),
            kept_wants: BTreeSet::new(),
            resolution: Resolution::Failed(failure),
            replicas: Vec::new(),
            vanished: Vec::new(),
            share: SeriesShare::default(),
        }
    }

    /// Whether this round kept what `wants` ask: each want itself, or its
    /// whole family.
    fn covers(&self, wants: &[Want]) -> bool {
        wants
            .iter()
            .all(|w| self.kept_wants.contains(w) || self.kept_wants.contains(&Want::all(&w.family)))
    }
}

/// A round that read these replicas, for tests of what is made of rounds.
#[cfg(test)]
impl Scrape {
    pub(crate) fn of(endpoint: Endpoint, completed_at: Instant, replicas: Vec<Replica>) -> Self {
        Self {
            endpoint,
            completed_at,
            kept_wants: BTreeSet::new(),
            resolution: Resolution::Addresses,
            replicas,
            vanished: Vec::new(),
            share: SeriesShare::default(),
        }
    }
}

#[cfg(test)]
mod tests;
