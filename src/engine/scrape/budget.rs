//! Where the engine scrape's memory is bounded: every cap on what outside
//! input (DNS answers, replicas' pages) can grow, and the series budget
//! that cached rounds share. Bodies being read are bounded by the HTTP
//! client's body budget (`engine::http::BodyBudget`, [`BODY_BUDGET_BYTES`]
//! across all rounds) and by [`crate::engine::http::MAX_BODY_BYTES`] each;
//! what a round keeps of them is bounded here. Knows nothing of HTTP or
//! DNS.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The most series of one family kept per page: an engine page has a few
/// per model and data-parallel rank.
pub const MAX_SERIES_KEPT: usize = 256;
/// Replicas read at once in one round; the rest wait for a free worker
/// (within the same deadline).
pub const MAX_PARALLEL: usize = 64;
/// Bytes that page bodies being read at once may hold, across all rounds.
pub const BODY_BUDGET_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of parsed series and names that cached rounds may hold, across
/// all endpoints; a replica whose page would go over is missing.
pub const SERIES_BUDGET_BYTES: usize = 8 * 1024 * 1024;
/// Replicas read per endpoint; addresses beyond are missing.
pub const MAX_REPLICAS: usize = 1024;
/// Endpoints the cache remembers; the one asked for least recently goes
/// first.
pub const MAX_CACHED_ENDPOINTS: usize = 1024;
/// Family names kept per page for "the page has … instead" messages.
pub const MAX_SIMILAR: usize = 16;

/// The bytes of parsed series every cached round holds together, against
/// a limit.
#[derive(Debug, Clone)]
pub struct SeriesBudget {
    used: Arc<AtomicUsize>,
    limit: usize,
}

impl SeriesBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            used: Arc::new(AtomicUsize::new(0)),
            limit,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now by every share.
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// An empty share for a round that replaces one holding
    /// `predecessor` bytes: those count as free, since they are given
    /// back once the new round lands.
    pub fn open_share(&self, predecessor: usize) -> SeriesShare {
        SeriesShare {
            bytes: 0,
            used: Some(Arc::clone(&self.used)),
            cap: self.limit + predecessor,
        }
    }
}

/// One round's bytes of the [`SeriesBudget`], given back when dropped.
#[derive(Debug, Default)]
pub struct SeriesShare {
    bytes: usize,
    used: Option<Arc<AtomicUsize>>,
    /// The budget's limit plus what the replaced round holds.
    cap: usize,
}

impl SeriesShare {
    /// Takes `bytes` more, if the budget has room for them.
    pub fn take(&mut self, bytes: usize) -> bool {
        let Some(used) = &self.used else {
            return false;
        };
        let cap = self.cap;
        let fits = used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                now.checked_add(bytes).filter(|total| *total <= cap)
            })
            .is_ok();
        if fits {
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
            used.fetch_sub(self.bytes, Ordering::SeqCst);
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
    fn a_share_takes_up_to_the_limit_and_gives_back_when_dropped() {
        let budget = SeriesBudget::new(100);
        let mut first = budget.open_share(0);
        assert!(first.take(60));
        let mut second = budget.open_share(0);
        assert!(!second.take(41), "60 + 41 is over 100");
        assert!(second.take(40));
        assert_eq!(budget.in_use(), 100);
        // A round replacing `first` may use first's bytes as well.
        let mut replacing = budget.open_share(first.bytes());
        assert!(replacing.take(60));
        drop(first);
        drop(second);
        assert_eq!(budget.in_use(), 60);
        drop(replacing);
        assert_eq!(budget.in_use(), 0);
        assert!(!SeriesShare::default().take(1));
    }
}
