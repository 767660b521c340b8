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
use crate::engine::prom::Kind;

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
                    page: gauges_of(page),
                    at: previous.completed_at,
                },
                Err(_) => replica.earlier.clone()?,
            };
            (now.saturating_duration_since(earlier.at) < LAST_READ_TRUST)
                .then_some((replica.address, earlier))
        })
        .collect()
}

/// The page's gauge (and untyped) families: what a last read stands in
/// for. Counters and histograms are read over a window, whose reads
/// (`scaling::windows`) already hold what a replica showed, so they are
/// not carried (a histogram's buckets are most of a page's kept bytes).
fn gauges_of(page: &Arc<PageFamilies>) -> Arc<PageFamilies> {
    let windowed = |kind: Kind| matches!(kind, Kind::Counter | Kind::Histogram | Kind::Summary);
    if !page.families.iter().any(|f| windowed(f.kind)) {
        return Arc::clone(page);
    }
    Arc::new(PageFamilies {
        families: page
            .families
            .iter()
            .filter(|f| !windowed(f.kind))
            .cloned()
            .collect(),
        declared: page.declared.clone(),
    })
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::engine::endpoint::Endpoint;
    use crate::engine::scrape::{ReadError, Replica};

    fn page() -> Arc<PageFamilies> {
        Arc::new(PageFamilies {
            families: Vec::new(),
            declared: Vec::new(),
        })
    }

    fn round(completed_at: Instant, replicas: Vec<Replica>) -> Scrape {
        let endpoint = Endpoint {
            host: "vllm".into(),
            port: 8000,
            path: "/metrics".into(),
        };
        Scrape::of(endpoint, completed_at, replicas)
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

    #[test]
    fn a_last_read_carries_gauges_not_histograms_or_counters() {
        let page = "# TYPE vllm:num_requests_waiting gauge\n\
            vllm:num_requests_waiting 3\n\
            # TYPE vllm:time_to_first_token_seconds histogram\n\
            vllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 4\n\
            vllm:time_to_first_token_seconds_sum 1\n\
            # TYPE vllm:request_success_total counter\n\
            vllm:request_success_total 9\n";
        let wanted = [
            "vllm:num_requests_waiting",
            "vllm:time_to_first_token_seconds",
            "vllm:request_success_total",
        ];
        let (families, declared) =
            crate::engine::prom::families_and_names(page, &wanted, 100).unwrap();
        assert_eq!(families.len(), 3);
        let full = Arc::new(PageFamilies { families, declared });
        let now = Instant::now();
        let a: SocketAddr = "10.0.0.1:8000".parse().unwrap();
        let previous = round(
            now,
            vec![Replica {
                address: a,
                page: Ok(Arc::clone(&full)),
                earlier: None,
            }],
        );
        let kept = earlier_pages(Some(&previous), now);
        let names: Vec<&str> = kept[&a]
            .page
            .families
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(names, ["vllm:num_requests_waiting"]);
        assert!(kept[&a].page.bytes() < full.bytes());
    }
}
