//! The scaler's own counters, for people to look at: gRPC requests by
//! method and code with their latency, and what each ScaledObject was last
//! told and when it last asked. Recorded by the gRPC handlers, read by the
//! `/metrics` page, which also keeps here the GPU library that last
//! answered (so that `driver_up`'s label stays put). Bounded: methods and
//! codes are fixed sets; trigger entries age out when a ScaledObject stops
//! asking, and anyone who can reach the gRPC port can name triggers, so a
//! full table (or a full namespace) drops its least recently asked entry
//! rather than refusing new ones.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Latency histogram bounds, seconds.
pub const LATENCY_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
];
/// A trigger not asked about for this long is dropped from the page.
pub const TRIGGER_TTL: Duration = Duration::from_secs(600);
/// The most triggers kept.
pub const MAX_TRIGGERS: usize = 1000;
/// The most triggers kept per namespace, so that one namespace cannot
/// push the others off the page.
pub const MAX_TRIGGERS_PER_NAMESPACE: usize = 100;
/// The longest namespace, name or metric kept, in bytes. Kubernetes names
/// are at most 253 characters, so a longer key names no ScaledObject and
/// is not recorded.
pub const MAX_KEY_PART: usize = 253;

#[derive(Debug, Clone, Default)]
pub struct Requests {
    pub count: u64,
    pub sum_seconds: f64,
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`].
    pub buckets: [u64; LATENCY_BUCKETS.len()],
}

/// What one ScaledObject's trigger was last told.
#[derive(Debug, Clone)]
pub struct TriggerState {
    pub value: Option<f64>,
    pub target: f64,
    pub active: Option<bool>,
    /// Errors by gRPC code name.
    pub errors: HashMap<&'static str, u64>,
    /// When it last asked, for the TTL (monotonic).
    pub last_asked: Instant,
    /// The same moment by the wall clock, for the page: which pod KEDA
    /// asked last, when its connection moved.
    pub asked_at: SystemTime,
}

/// `(namespace, scaledobject, metric)`.
pub type TriggerKey = (String, String, String);

/// The trigger table, with the order in which entries were last asked.
#[derive(Default)]
struct Triggers {
    /// Each entry with the sequence number of its latest ask.
    entries: HashMap<TriggerKey, (u64, TriggerState)>,
    next: u64,
}

impl Triggers {
    /// Drops the least recently asked entry among those `in_scope` keeps.
    fn evict_oldest(&mut self, in_scope: impl Fn(&TriggerKey) -> bool) {
        let oldest = self
            .entries
            .iter()
            .filter(|(key, _)| in_scope(key))
            .min_by_key(|(_, (asked, _))| *asked)
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            self.entries.remove(&key);
        }
    }

    /// Makes room for a new entry in `namespace`: its own least recently
    /// asked entry goes when the namespace is full, else the table's when
    /// the table is.
    fn make_room(&mut self, namespace: &str) {
        let in_namespace = self.entries.keys().filter(|key| key.0 == namespace).count();
        if in_namespace >= MAX_TRIGGERS_PER_NAMESPACE {
            self.evict_oldest(|key| key.0 == namespace);
        } else if self.entries.len() >= MAX_TRIGGERS {
            self.evict_oldest(|_| true);
        }
    }
}

#[derive(Default)]
pub struct Stats {
    requests: Mutex<HashMap<(&'static str, &'static str), Requests>>,
    triggers: Mutex<Triggers>,
    /// The GPU library that last answered (`nvml`, `amdsmi`), if any has.
    answered: Mutex<Option<&'static str>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Stats {
    /// One gRPC call: its method, result code and how long it took.
    pub fn request(&self, method: &'static str, code: &'static str, took: Duration) {
        let seconds = took.as_secs_f64();
        let mut requests = lock(&self.requests);
        let entry = requests.entry((method, code)).or_default();
        entry.count += 1;
        entry.sum_seconds += seconds;
        for (bucket, bound) in entry.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
    }

    /// A trigger's answer: a value (GetMetrics), an activity (IsActive),
    /// or an error code. A new trigger in a full table (or namespace)
    /// replaces the least recently asked one.
    pub fn trigger(&self, key: TriggerKey, target: f64, answer: TriggerAnswer) {
        if [&key.0, &key.1, &key.2]
            .iter()
            .any(|part| part.len() > MAX_KEY_PART)
        {
            return;
        }
        let now = Instant::now();
        let asked_at = SystemTime::now();
        let mut triggers = lock(&self.triggers);
        triggers
            .entries
            .retain(|_, (_, t)| now.duration_since(t.last_asked) < TRIGGER_TTL);
        if !triggers.entries.contains_key(&key) {
            triggers.make_room(&key.0);
        }
        let asked = triggers.next;
        triggers.next += 1;
        let (entry_asked, entry) = triggers.entries.entry(key).or_insert_with(|| {
            (
                asked,
                TriggerState {
                    value: None,
                    target,
                    active: None,
                    errors: HashMap::new(),
                    last_asked: now,
                    asked_at,
                },
            )
        });
        *entry_asked = asked;
        entry.target = target;
        entry.last_asked = now;
        entry.asked_at = asked_at;
        match answer {
            TriggerAnswer::Value(value) => entry.value = Some(value),
            TriggerAnswer::Active(active) => entry.active = Some(active),
            TriggerAnswer::Error(code) => *entry.errors.entry(code).or_default() += 1,
        }
    }

    pub fn requests(&self) -> Vec<((&'static str, &'static str), Requests)> {
        let mut all: Vec<_> = lock(&self.requests)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn triggers(&self) -> Vec<(TriggerKey, TriggerState)> {
        let now = Instant::now();
        let mut all: Vec<_> = lock(&self.triggers)
            .entries
            .iter()
            .filter(|(_, (_, t))| now.duration_since(t.last_asked) < TRIGGER_TTL)
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Remembers `backend` as the library that answered, when one did, and
    /// returns the one that last answered (this one, or an earlier one).
    pub fn answered_backend(&self, backend: Option<&'static str>) -> Option<&'static str> {
        let mut answered = lock(&self.answered);
        if backend.is_some() {
            *answered = backend;
        }
        *answered
    }
}

pub enum TriggerAnswer {
    Value(f64),
    Active(bool),
    Error(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_cumulative() {
        let stats = Stats::default();
        stats.request("GetMetrics", "OK", Duration::from_micros(300));
        stats.request("GetMetrics", "OK", Duration::from_millis(20));
        let requests = stats.requests();
        let ((method, code), entry) = &requests[0];
        assert_eq!((*method, *code, entry.count), ("GetMetrics", "OK", 2));
        assert_eq!(entry.buckets[..3], [0, 0, 1]);
        assert_eq!(entry.buckets[LATENCY_BUCKETS.len() - 1], 2);
    }

    fn key(namespace: &str, name: &str) -> TriggerKey {
        (namespace.to_string(), name.to_string(), "m".to_string())
    }

    fn ask(stats: &Stats, namespace: &str, name: &str) {
        stats.trigger(key(namespace, name), 1.0, TriggerAnswer::Value(2.0));
    }

    fn names(stats: &Stats, namespace: &str) -> Vec<String> {
        stats
            .triggers()
            .into_iter()
            .filter(|(k, _)| k.0 == namespace)
            .map(|(k, _)| k.1)
            .collect()
    }

    #[test]
    fn a_full_table_drops_the_least_recently_asked() {
        let stats = Stats::default();
        // Fill the table from many namespaces, none of them full.
        let per = MAX_TRIGGERS_PER_NAMESPACE / 2;
        let spaces = MAX_TRIGGERS / per;
        for n in 0..spaces {
            for i in 0..per {
                ask(&stats, &format!("ns-{n}"), &format!("so-{i}"));
            }
        }
        assert_eq!(stats.triggers().len(), MAX_TRIGGERS);
        // The oldest entry asks again, so the next oldest goes instead.
        ask(&stats, "ns-0", "so-0");
        ask(&stats, "real", "scaledobject");
        let triggers = stats.triggers();
        assert_eq!(triggers.len(), MAX_TRIGGERS);
        let kept = |ns: &str, name: &str| triggers.iter().any(|(k, _)| *k == key(ns, name));
        assert!(kept("real", "scaledobject"), "a new trigger was refused");
        assert!(kept("ns-0", "so-0"), "a trigger just asked was dropped");
        assert!(!kept("ns-0", "so-1"), "the least recently asked was kept");
        // A thousand more from elsewhere: each still gets in.
        for i in 0..MAX_TRIGGERS {
            ask(&stats, &format!("flood-{}", i / per), &format!("so-{i}"));
        }
        ask(&stats, "real", "scaledobject");
        assert_eq!(stats.triggers().len(), MAX_TRIGGERS);
        assert_eq!(names(&stats, "real"), ["scaledobject"]);
    }

    #[test]
    fn a_full_namespace_drops_its_own_least_recently_asked() {
        let stats = Stats::default();
        ask(&stats, "quiet", "so");
        for i in 0..MAX_TRIGGERS_PER_NAMESPACE {
            ask(&stats, "noisy", &format!("so-{i:03}"));
        }
        ask(&stats, "noisy", "so-000");
        // Far more than its share: the namespace keeps only its newest.
        for i in 0..MAX_TRIGGERS {
            ask(&stats, "noisy", &format!("extra-{i:04}"));
        }
        let noisy = names(&stats, "noisy");
        assert_eq!(noisy.len(), MAX_TRIGGERS_PER_NAMESPACE);
        let first_kept = MAX_TRIGGERS - MAX_TRIGGERS_PER_NAMESPACE;
        assert_eq!(noisy[0], format!("extra-{first_kept:04}"));
        // The other namespace, asked before all of it, is untouched.
        assert_eq!(names(&stats, "quiet"), ["so"]);
        assert_eq!(stats.triggers().len(), MAX_TRIGGERS_PER_NAMESPACE + 1);
    }

    #[test]
    fn a_key_longer_than_a_kubernetes_name_is_not_kept() {
        let stats = Stats::default();
        ask(&stats, "ns", &"a".repeat(MAX_KEY_PART + 1));
        ask(&stats, &"n".repeat(MAX_KEY_PART + 1), "so");
        assert!(stats.triggers().is_empty());
        ask(&stats, "ns", &"a".repeat(MAX_KEY_PART));
        assert_eq!(stats.triggers().len(), 1);
    }
}
