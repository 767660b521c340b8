//! The scaler's own counters, for people to look at: gRPC requests by
//! method and code with their latency, and what each ScaledObject was last
//! told and when it last asked. Recorded by the gRPC handlers, read by the
//! `/metrics` page, which also keeps here the GPU library that last
//! answered (so that `driver_up`'s label stays put). Bounded: methods and
//! codes are fixed sets, and trigger entries age out when a ScaledObject
//! stops asking (and are capped).

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

#[derive(Default)]
pub struct Stats {
    requests: Mutex<HashMap<(&'static str, &'static str), Requests>>,
    triggers: Mutex<HashMap<TriggerKey, TriggerState>>,
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
    /// or an error code.
    pub fn trigger(&self, key: TriggerKey, target: f64, answer: TriggerAnswer) {
        let now = Instant::now();
        let asked_at = SystemTime::now();
        let mut triggers = lock(&self.triggers);
        triggers.retain(|_, t| now.duration_since(t.last_asked) < TRIGGER_TTL);
        if triggers.len() >= MAX_TRIGGERS && !triggers.contains_key(&key) {
            return;
        }
        let entry = triggers.entry(key).or_insert_with(|| TriggerState {
            value: None,
            target,
            active: None,
            errors: HashMap::new(),
            last_asked: now,
            asked_at,
        });
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
            .iter()
            .filter(|(_, t)| now.duration_since(t.last_asked) < TRIGGER_TTL)
            .map(|(k, v)| (k.clone(), v.clone()))
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

    #[test]
    fn triggers_are_capped() {
        let stats = Stats::default();
        for i in 0..MAX_TRIGGERS + 5 {
            let key = ("ns".to_string(), format!("so-{i}"), "m".to_string());
            stats.trigger(key, 1.0, TriggerAnswer::Value(2.0));
        }
        assert_eq!(stats.triggers().len(), MAX_TRIGGERS);
    }
}
