//! Parsed triggers, remembered by ScaledObject and metadata. KEDA repeats
//! the same calls (GetMetricSpec, GetMetrics, IsActive) every polling
//! interval with the same metadata, so parsing, naming the metric and
//! logging the trigger happen once per change instead of on every call.
//! Bounded; holds no GPU data.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use crate::engine::policy::EndpointPolicy;
use crate::scaling::trigger::{self, ConfigError, Source, Trigger};

/// Entries kept; past this the cache starts again (and each trigger is
/// parsed and logged once more).
pub const MAX_TRIGGERS: usize = 10_000;

/// A trigger with what every call needs from it.
#[derive(Debug)]
pub struct Parsed {
    pub trigger: Trigger,
    /// The name GetMetricSpec gives (and GetMetrics must ask for).
    pub metric_name: String,
}

struct Entry {
    namespace: String,
    name: String,
    metadata: HashMap<String, String>,
    parsed: Result<Arc<Parsed>, ConfigError>,
}

pub struct TriggerCache {
    hasher: RandomState,
    entries: Mutex<HashMap<u64, Arc<Entry>>>,
    /// Which engine endpoints a ScaledObject may name.
    policy: EndpointPolicy,
}

impl Default for TriggerCache {
    fn default() -> Self {
        Self::new(EndpointPolicy::default())
    }
}

impl TriggerCache {
    pub fn new(policy: EndpointPolicy) -> Self {
        Self {
            hasher: RandomState::new(),
            entries: Mutex::new(HashMap::new()),
            policy,
        }
    }

    /// The ScaledObject's trigger: from the cache when the same
    /// ScaledObject sent the same metadata before, else parsed now and
    /// logged (its first request, or a change).
    pub fn get(
        &self,
        namespace: &str,
        name: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<Arc<Parsed>, ConfigError> {
        // Order-independent, as the map's iteration order is arbitrary.
        let key = metadata
            .iter()
            .fold(self.hasher.hash_one((namespace, name)), |sum, entry| {
                sum.wrapping_add(self.hasher.hash_one(entry))
            });
        let cached = self.lock().get(&key).cloned();
        if let Some(entry) =
            cached.filter(|e| e.namespace == namespace && e.name == name && &e.metadata == metadata)
        {
            return entry.parsed.clone();
        }
        let parsed = trigger::parse(metadata, namespace)
            .and_then(|trigger| self.admit(trigger, namespace))
            .map(|trigger| {
                Arc::new(Parsed {
                    metric_name: trigger.metric_name(),
                    trigger,
                })
            });
        match &parsed {
            Ok(p) => log::info!("ScaledObject {namespace}/{name}: trigger {}", p.trigger),
            Err(e) => log::warn!("ScaledObject {namespace}/{name}: rejected metadata: {e}"),
        }
        let entry = Arc::new(Entry {
            namespace: namespace.to_string(),
            name: name.to_string(),
            metadata: metadata.clone(),
            parsed: parsed.clone(),
        });
        let mut entries = self.lock();
        if entries.len() >= MAX_TRIGGERS {
            entries.clear();
        }
        entries.insert(key, entry);
        parsed
    }

    /// The trigger with each engine endpoint checked against the policy,
    /// a bare Service name expanded to the ScaledObject's namespace.
    fn admit(&self, mut trigger: Trigger, namespace: &str) -> Result<Trigger, ConfigError> {
        if let Source::Engine(source) = &mut trigger.source {
            for endpoint in &mut source.endpoints {
                endpoint.host = self
                    .policy
                    .check_host(&endpoint.host, namespace)
                    .map_err(|e| ConfigError(format!("invalid engineEndpoints: {e}")))?;
            }
            // `vllm` and `vllm.<namespace>.svc.<domain>` are one endpoint now.
            let mut seen = Vec::new();
            source.endpoints.retain(|endpoint| {
                let new = !seen.contains(endpoint);
                if new {
                    seen.push(endpoint.clone());
                }
                new
            });
        }
        Ok(trigger)
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_same_metadata_is_parsed_once_and_a_change_again() {
        let cache = TriggerCache::default();
        let first = cache
            .get("ml", "vllm", &metadata(&[("aggregation", "avg")]))
            .unwrap();
        let again = cache
            .get("ml", "vllm", &metadata(&[("aggregation", "avg")]))
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(first.metric_name, "gpu-utilization-avg");
        let changed = cache
            .get("ml", "vllm", &metadata(&[("aggregation", "max")]))
            .unwrap();
        assert_eq!(changed.metric_name, "gpu-utilization-max");
        // Another ScaledObject with the same metadata has its own entry.
        let other = cache
            .get("ml", "other", &metadata(&[("aggregation", "avg")]))
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn rejected_metadata_is_remembered_as_rejected() {
        let cache = TriggerCache::default();
        let bad = metadata(&[("aggregation", "median")]);
        for _ in 0..2 {
            let error = cache.get("ml", "vllm", &bad).unwrap_err();
            assert!(error.0.contains("invalid aggregation"), "{error}");
        }
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = TriggerCache::default();
        for i in 0..MAX_TRIGGERS + 5 {
            let name = format!("so-{i}");
            cache.get("ml", &name, &metadata(&[])).unwrap();
        }
        assert!(cache.len() <= MAX_TRIGGERS, "{}", cache.len());
        assert_eq!(cache.len(), 5);
    }
}
