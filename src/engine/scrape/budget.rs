//! Where the engine scrape's memory is bounded: every cap on what outside
//! input (DNS answers, replicas' pages) can grow, and the series budget
//! that cached rounds share. Bodies being read are bounded by the HTTP
//! client's body budget (`engine::http::BodyBudget`, [`BODY_BUDGET_BYTES`]
//! across all rounds) and by [`crate::engine::http::MAX_BODY_BYTES`] each;
//! what a round keeps of them is bounded here, each endpoint and
//! namespace to its share of it. Knows nothing of HTTP or DNS.

use std::sync::{Arc, Mutex};

use crate::engine::share::{Fit, Holder, Ledger};

/// The most series of one family kept per page: an engine page has a few
/// per model and data-parallel rank.
pub const MAX_SERIES_KEPT: usize = 256;
/// Replicas read at once, by every round together (the readers' pool);
/// the rest wait for a free reader within their round's deadline.
pub const MAX_PARALLEL: usize = 64;
/// Rounds running at once (the rounds' pool).
pub const MAX_ROUNDS: usize = 64;
/// DNS lookups running at once (the lookups' pool); a lookup that waits
/// past its round's deadline counts as unresolved for that round.
pub const MAX_LOOKUPS: usize = 8;
/// Bytes that page bodies being read at once may hold, across all rounds.
pub const BODY_BUDGET_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of parsed series and names that cached rounds may hold, across
/// all endpoints; a replica whose page would go over is missing. A
/// histogram keeps every bucket of every series: vLLM's TTFT with 6
/// data-parallel engines is ~43 KB a page, so an endpoint's quarter holds
/// ~95 such replicas (~570 with one engine each).
pub const SERIES_BUDGET_BYTES: usize = 16 * 1024 * 1024;
/// Replicas read per endpoint; addresses beyond are missing.
pub const MAX_REPLICAS: usize = 1024;
/// Endpoints the cache remembers; the one asked for least recently goes
/// first.
pub const MAX_CACHED_ENDPOINTS: usize = 1024;
/// Family names kept per page for "the page has … instead" messages.
pub const MAX_SIMILAR: usize = 16;

/// The bytes of parsed series every cached round holds together, against
/// a limit, with each endpoint and namespace held to its share
/// ([`crate::engine::share`]).
#[derive(Debug, Clone)]
pub struct SeriesBudget {
    used: Arc<Mutex<Ledger>>,
    limit: usize,
}

impl SeriesBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            used: Arc::new(Mutex::new(Ledger::default())),
            limit,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now by every share.
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        lock(&self.used).total()
    }

    /// An empty share for `holder`'s round that replaces one holding
    /// `predecessor` bytes: those count as free, since they are given
    /// back once the new round lands.
    pub fn open_share(&self, holder: Holder, predecessor: usize) -> SeriesShare {
        SeriesShare {
            bytes: 0,
            used: Some(Arc::clone(&self.used)),
            holder,
            limit: self.limit,
            predecessor,
        }
    }
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|e| e.into_inner())
}

/// One round's bytes of the [`SeriesBudget`], given back when dropped.
#[derive(Debug, Default)]
pub struct SeriesShare {
    bytes: usize,
    used: Option<Arc<Mutex<Ledger>>>,
    holder: Holder,
    limit: usize,
    /// What the replaced round holds.
    predecessor: usize,
}

impl SeriesShare {
    /// Takes `bytes` more, if the budget, the endpoint's share and the
    /// namespace's share have room for them.
    pub fn take(&mut self, bytes: usize) -> bool {
        let Some(used) = &self.used else {
            return false;
        };
        let mut ledger = lock(used);
        let fits = ledger.fits_freeing(
            &self.holder,
            self.bytes,
            bytes,
            self.limit,
            self.predecessor,
        ) == Fit::Now;
        if fits {
            ledger.add(&self.holder, bytes);
            self.bytes += bytes;
        }
        fits
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for SeriesShare {
    fn drop(&mut self) {
        if let Some(used) = &self.used {
            lock(used).remove(&self.holder, self.bytes);
        }
    }
}

/// `8 MiB`, `512 KiB`, `100 bytes`.
pub fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_takes_up_to_its_endpoints_and_namespaces_part_and_gives_back() {
        // 400 bytes: 100 an endpoint, 200 a namespace.
        let budget = SeriesBudget::new(400);
        let holder = |namespace: &str, endpoint: &str| Holder {
            namespace: namespace.into(),
            endpoint: endpoint.into(),
        };
        let mut first = budget.open_share(holder("a", "a1"), 0);
        assert!(first.take(60));
        assert!(!first.take(41), "60 + 41 is over an endpoint's 100");
        assert!(first.take(40));
        let mut second = budget.open_share(holder("a", "a2"), 0);
        assert!(second.take(100));
        // The namespace's half is full; another namespace is not.
        assert!(!budget.open_share(holder("a", "a3"), 0).take(1));
        assert!(budget.open_share(holder("b", "b1"), 0).take(100));
        // A round replacing `first` may use first's bytes as well.
        let mut replacing = budget.open_share(holder("a", "a1"), first.bytes());
        assert!(replacing.take(100));
        drop(first);
        drop(second);
        assert_eq!(budget.in_use(), 100);
        drop(replacing);
        assert_eq!(budget.in_use(), 0);
        assert!(!SeriesShare::default().take(1));
    }
}
