//! Fair shares of a byte budget: whoever holds bytes (a namespace, and an
//! endpoint in it) may hold at most [`NAMESPACE_SHARE`] of the budget per
//! namespace and [`ENDPOINT_SHARE`] per endpoint, so one replica, or one
//! tenant, can exhaust only its own share and fail only its own reads.
//! Used by both engine budgets: page bodies being read (`http`) and
//! parsed series kept (`scrape::budget`). Pure bookkeeping; the callers
//! lock.

use std::collections::HashMap;
use std::fmt;

use crate::engine::endpoint::Endpoint;

/// The most of a budget one namespace's endpoints may hold together.
pub const NAMESPACE_SHARE: f64 = 0.5;
/// The most of a budget one endpoint may hold.
pub const ENDPOINT_SHARE: f64 = 0.25;

/// Who holds bytes of a budget.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Holder {
    /// The endpoint's namespace (`SVC.NAMESPACE…`); empty for an IP
    /// address or a name outside the cluster's Services.
    pub namespace: String,
    /// The endpoint as configured.
    pub endpoint: String,
}

impl Holder {
    pub fn of(endpoint: &Endpoint) -> Self {
        let is_ip = endpoint.host.parse::<std::net::IpAddr>().is_ok();
        let namespace = match endpoint.host.split('.').collect::<Vec<_>>().as_slice() {
            [_, namespace, ..] if !is_ip => namespace.to_string(),
            _ => String::new(),
        };
        Self {
            namespace,
            endpoint: endpoint.to_string(),
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "endpoint {}", self.endpoint)
        } else {
            write!(
                f,
                "endpoint {} (namespace {})",
                self.endpoint, self.namespace
            )
        }
    }
}

/// Whether bytes fit a holder's shares now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    Now,
    /// Not now: others (or this holder's other reads) hold the room.
    Later,
    /// Never: more than the holder's share, or the whole budget.
    Never,
}

/// Bytes held, in all and by namespace and endpoint.
#[derive(Debug, Default)]
pub struct Ledger {
    total: usize,
    by_namespace: HashMap<String, usize>,
    by_endpoint: HashMap<String, usize>,
}

/// `fraction` of `cap`, at least one byte.
fn part(cap: usize, fraction: f64) -> usize {
    ((cap as f64 * fraction) as usize).max(1)
}

impl Ledger {
    pub fn total(&self) -> usize {
        self.total
    }

    /// Whether `holder`, holding `held` of these bytes already, may take
    /// `bytes` more under `cap`.
    pub fn fits(&self, holder: &Holder, held: usize, bytes: usize, cap: usize) -> Fit {
        self.fits_freeing(holder, held, bytes, cap, 0)
    }

    /// As [`Ledger::fits`], counting `freeing` bytes the holder's endpoint
    /// holds elsewhere as free (they are given back once these land: a
    /// round replacing the endpoint's previous one).
    pub fn fits_freeing(
        &self,
        holder: &Holder,
        held: usize,
        bytes: usize,
        cap: usize,
        freeing: usize,
    ) -> Fit {
        let endpoint_cap = part(cap, ENDPOINT_SHARE);
        let namespace_cap = part(cap, NAMESPACE_SHARE);
        if held.saturating_add(bytes) > endpoint_cap {
            return Fit::Never;
        }
        let endpoint = self
            .by_endpoint
            .get(&holder.endpoint)
            .copied()
            .unwrap_or(0)
            .saturating_sub(freeing);
        let namespace = self
            .by_namespace
            .get(&holder.namespace)
            .copied()
            .unwrap_or(0)
            .saturating_sub(freeing);
        let total = self.total.saturating_sub(freeing);
        let fits = total.saturating_add(bytes) <= cap
            && endpoint.saturating_add(bytes) <= endpoint_cap
            && namespace.saturating_add(bytes) <= namespace_cap;
        if fits {
            Fit::Now
        } else {
            Fit::Later
        }
    }

    pub fn add(&mut self, holder: &Holder, bytes: usize) {
        self.total += bytes;
        *self
            .by_namespace
            .entry(holder.namespace.clone())
            .or_default() += bytes;
        *self.by_endpoint.entry(holder.endpoint.clone()).or_default() += bytes;
    }

    pub fn remove(&mut self, holder: &Holder, bytes: usize) {
        self.total = self.total.saturating_sub(bytes);
        for (map, key) in [
            (&mut self.by_namespace, &holder.namespace),
            (&mut self.by_endpoint, &holder.endpoint),
        ] {
            if let Some(held) = map.get_mut(key) {
                *held = held.saturating_sub(bytes);
                if *held == 0 {
                    map.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(namespace: &str, endpoint: &str) -> Holder {
        Holder {
            namespace: namespace.into(),
            endpoint: endpoint.into(),
        }
    }

    #[test]
    fn one_endpoint_or_namespace_fills_only_its_share() {
        let mut ledger = Ledger::default();
        let (a1, a2, a3) = (holder("a", "a1"), holder("a", "a2"), holder("a", "a3"));
        let b = holder("b", "b1");
        // An endpoint up to a quarter of 100.
        assert_eq!(ledger.fits(&a1, 0, 25, 100), Fit::Now);
        ledger.add(&a1, 25);
        assert_eq!(ledger.fits(&a1, 25, 1, 100), Fit::Never);
        // The namespace up to a half, across its endpoints.
        ledger.add(&a2, 25);
        assert_eq!(ledger.fits(&a3, 0, 1, 100), Fit::Later);
        // Another namespace still has its room.
        assert_eq!(ledger.fits(&b, 0, 25, 100), Fit::Now);
        ledger.add(&b, 25);
        assert_eq!(ledger.total(), 75);
        ledger.remove(&a1, 25);
        assert_eq!(ledger.fits(&a3, 0, 25, 100), Fit::Now);
        ledger.remove(&a2, 25);
        ledger.remove(&b, 25);
        assert_eq!(ledger.total(), 0);
        assert!(ledger.by_namespace.is_empty() && ledger.by_endpoint.is_empty());
    }

    #[test]
    fn the_namespace_is_the_second_label_of_a_service_name() {
        let at = |host: &str| Endpoint {
            host: host.into(),
            port: 8000,
            path: "/metrics".into(),
        };
        assert_eq!(Holder::of(&at("vllm.ml.svc.cluster.local")).namespace, "ml");
        assert_eq!(Holder::of(&at("vllm.ml")).namespace, "ml");
        assert_eq!(Holder::of(&at("10.0.0.1")).namespace, "");
        assert_eq!(Holder::of(&at("localhost")).namespace, "");
    }
}
