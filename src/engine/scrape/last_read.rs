//! A replica's last read: each round carries, for every address, the
//! latest page it answered with before, while under [`LAST_READ_TRUST`]
//! old, so that a replica that stops answering counts as what it last said
//! (`scaling/replicas.rs`) rather than as nothing. Held pages count
//! against the series budget like any other (`budget`). Pure.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{PageFamilies, Scrape};

/// How long a replica's last answer may stand in for it once it stops
/// answering. Kubernetes takes a pod that stopped answering out of its
/// Service after its readiness probe fails `failureThreshold` times
/// (3 × 10 s by default): until then DNS still names it, and an overloaded
/// replica that missed one deadline most likely still holds the queue it
/// last reported.
pub const LAST_READ_TRUST: Duration = Duration::from_secs(30);

/// A replica's page from an earlier round.
#[derive(Debug, Clone)]
pub struct Earlier {
    pub page: Arc<PageFamilies>,
    /// When the round that read it ended.
    pub at: Instant,
}

/// Each address's latest answered page before this round, from the round
/// it replaces, if under [`LAST_READ_TRUST`] old at `now`.
pub fn earlier_pages(previous: Option<&Scrape>, now: Instant) -> HashMap<SocketAddr, Earlier> {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::engine::endpoint::Endpoint;
    use crate::engine::scrape::{ReadError, Replica, Resolution, SeriesShare};

    fn page() -> Arc<PageFamilies> {
        Arc::new(PageFamilies {
            families: Vec::new(),
            declared: Vec::new(),
        })
    }

    fn round(completed_at: Instant, replicas: Vec<Replica>) -> Scrape {
        Scrape {
            endpoint: Endpoint {
                host: "vllm".into(),
                port: 8000,
                path: "/metrics".into(),
            },
            completed_at,
            kept_wants: BTreeSet::new(),
            resolution: Resolution::Addresses,
            replicas,
            vanished: Vec::new(),
            share: SeriesShare::default(),
        }
    }

    #[test]
    fn a_last_read_is_trusted_under_thirty_seconds_then_dropped() {
        // A "now" in the future, so that the ages below never reach back
        // before this machine's boot (where Instant cannot go).
        let now = Instant::now() + 2 * LAST_READ_TRUST;
        let (a, b): (SocketAddr, SocketAddr) = (
            "10.0.0.1:8000".parse().unwrap(),
            "10.0.0.2:8000".parse().unwrap(),
        );
        // a answered 29 s ago; b failed then, and last answered 31 s ago.
        let previous = round(
            now - Duration::from_secs(29),
            vec![
                Replica {
                    address: a,
                    page: Ok(page()),
                    earlier: None,
                },
                Replica {
                    address: b,
                    page: Err(ReadError::NoLongerNamed),
                    earlier: Some(Earlier {
                        page: page(),
                        at: now - Duration::from_secs(31),
                    }),
                },
            ],
        );
        let kept = earlier_pages(Some(&previous), now);
        assert_eq!(kept.keys().collect::<Vec<_>>(), [&a]);
        assert_eq!(kept[&a].at, previous.completed_at);
        // At exactly the trust window, a's read goes too.
        let later = previous.completed_at + LAST_READ_TRUST;
        assert!(earlier_pages(Some(&previous), later).is_empty());
        // b's older read carries on while young enough.
        let b_young = now - Duration::from_secs(40);
        assert!(earlier_pages(Some(&previous), b_young).contains_key(&b));
        assert!(earlier_pages(None, now).is_empty());
    }
}
