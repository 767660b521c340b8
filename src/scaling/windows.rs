//! Windowed engine triggers (rates, latencies, and `engineMetric`
//! counters and histograms): every new round's reads recorded per trigger
//! and replica, within one byte budget shared fairly (each endpoint and
//! namespace to its share), and the trigger's value over its window:
//! replicas' increases added up (rates) or merged by bucket (latencies),
//! with the gauge rules for replicas that cannot be read now. Holds state
//! behind one lock; no I/O, no clock (the caller says when "now" is).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::scrape::{Scrape, LAST_READ_TRUST};
use crate::engine::share::{Fit, Holder, Ledger};
use crate::engine::signals::{Unread, Windowed};
use crate::engine::window::{
    self, Busy, History, PageRead, Percentile, Reading, Span, WindowQuery,
};
use crate::scaling::duration::format_duration;
use crate::scaling::outcome::{
    Detail, EvalError, Fault, Note, NoteKind, Outcome, ReplicaLine, ReplicaStatus, WindowLine,
    WindowNow,
};
use crate::scaling::replicas::{
    no_replica, none_read, outcome_of, resolution, with_missing, WithMissing,
};
use crate::scaling::trigger::{Aggregation, EngineReads, EngineSource, Trigger};

/// Bytes every windowed trigger's reads may hold together.
pub const WINDOW_BUDGET_BYTES: usize = 8 * 1024 * 1024;
/// Windowed triggers remembered; the one asked for least recently goes
/// first.
pub const MAX_WINDOWED_TRIGGERS: usize = 1024;
/// What one trigger's entry holds besides its key (counted twice: the map
/// and the evaluation's copy) and its reads.
const ENTRY_BYTES: usize = 256;

/// The reads of every windowed trigger.
pub struct Windows {
    state: Mutex<State>,
    limit: usize,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    ledger: Ledger,
}

/// One trigger's reads (triggers asking the same of the same endpoints
/// share one).
struct Entry {
    last_used: Instant,
    window: Duration,
    /// Who its own bytes (its key, its bookkeeping) are counted against,
    /// and how many: a key holds the trigger's endpoints and query, which
    /// a ScaledObject's author writes.
    holder: Holder,
    bytes: usize,
    /// The completion time of the last round recorded, per endpoint: a
    /// round shared by several calls is recorded once.
    recorded: HashMap<String, Instant>,
    replicas: BTreeMap<(String, SocketAddr), Kept>,
}

struct Kept {
    history: History,
    holder: Holder,
    bytes: usize,
}

/// What became of a replica in this evaluation's rounds.
#[derive(Debug, Clone)]
enum NowStatus {
    Read,
    Failed(Fault),
}

impl Windows {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            limit,
        })
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().ledger.total()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The trigger's value over its window, recording the rounds' new
    /// reads first. `None` when its `engineMetric` is a gauge: the caller
    /// reads it as one.
    #[allow(clippy::too_many_arguments)]
    pub fn outcome(
        &self,
        trigger: &Trigger,
        source: &EngineSource,
        query: &WindowQuery,
        scrapes: &[Arc<Scrape>],
        pods: Option<Result<Vec<String>, String>>,
        detail: Detail,
        now: Instant,
    ) -> Option<Outcome> {
        let mut lines = Vec::new();
        let mut notes = Vec::new();
        let value = self.evaluate(
            trigger, source, query, scrapes, pods, now, &mut lines, &mut notes,
        )?;
        Some(outcome_of(value, lines, notes, detail))
    }

    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &self,
        trigger: &Trigger,
        source: &EngineSource,
        query: &WindowQuery,
        scrapes: &[Arc<Scrape>],
        pods: Option<Result<Vec<String>, String>>,
        now: Instant,
        lines: &mut Vec<ReplicaLine>,
        notes: &mut Vec<Note>,
    ) -> Option<Result<f64, EvalError>> {
        // This round's read of every replica.
        let mut current: BTreeMap<(String, SocketAddr), NowStatus> = BTreeMap::new();
        let mut fresh: Vec<(String, Instant, Holder, SocketAddr, Reading, Busy)> = Vec::new();
        let mut empty = Vec::new();
        // What the page's reading is (a rate or a latency), as read now.
        let mut measured: Option<Measure> = None;
        for scrape in scrapes {
            let endpoint = scrape.endpoint.to_string();
            match resolution(scrape, lines) {
                Ok(Some(what)) => empty.push(what),
                Ok(None) => {}
                Err(error) => return Some(Err(error)),
            }
            for replica in &scrape.replicas {
                let key = (endpoint.clone(), replica.address);
                let status = match &replica.page {
                    Err(error) => NowStatus::Failed(Fault::Read(error.clone())),
                    Ok(page) => match query.read(&page.families, &page.declared) {
                        Ok(PageRead::Gauge) => return None,
                        Ok(PageRead::Reading(reading)) => {
                            if let Some(refusal) = misfit(source, query, &reading) {
                                return Some(Err(EvalError::InvalidArgument(refusal)));
                            }
                            measured.get_or_insert(Measure::of(&reading));
                            let busy = query.busy(&page.families, &page.declared);
                            fresh.push((
                                endpoint.clone(),
                                scrape.completed_at,
                                Holder::of(&scrape.endpoint),
                                replica.address,
                                reading,
                                busy,
                            ));
                            NowStatus::Read
                        }
                        Err(wrong @ Unread::WrongKind { .. }) => {
                            return Some(Err(EvalError::InvalidArgument(format!(
                                "invalid {}: {wrong} (replica {} of {endpoint})",
                                source.reads, replica.address
                            ))))
                        }
                        Err(unread) => NowStatus::Failed(Fault::Unread(unread)),
                    },
                };
                current.insert(key, status);
            }
        }
        let end = scrapes
            .iter()
            .map(|s| s.completed_at)
            .max()
            .unwrap_or(now)
            .max(now);
        let from = end.checked_sub(query.window).unwrap_or(end);

        let mut state = self.lock();
        let key = key_of(source, query);
        let state = &mut *state;
        forget_idle(state, now);
        if !state.entries.contains_key(&key) {
            let holder = source.endpoints.first().map(Holder::of).unwrap_or_default();
            let bytes = ENTRY_BYTES + 2 * key.len();
            if state.ledger.fits(&holder, 0, bytes, self.limit) != Fit::Now {
                return Some(Err(EvalError::Unavailable(format!(
                    "cannot keep the reads of {}: {}",
                    source.reads,
                    Fault::WindowFull { budget: self.limit }
                ))));
            }
            state.ledger.add(&holder, bytes);
            state.entries.insert(
                key.clone(),
                Entry {
                    last_used: now,
                    window: query.window,
                    holder,
                    bytes,
                    recorded: HashMap::new(),
                    replicas: BTreeMap::new(),
                },
            );
        }
        let entry = state.entries.get_mut(&key).expect("inserted above");
        entry.last_used = now;
        // Record each endpoint's round once.
        let mut recorded_now: HashMap<String, Instant> = HashMap::new();
        let mut not_kept: Vec<(String, SocketAddr)> = Vec::new();
        for (endpoint, at, holder, address, reading, busy) in fresh {
            if entry.recorded.get(&endpoint) == Some(&at) {
                continue;
            }
            recorded_now.insert(endpoint.clone(), at);
            let slot = (endpoint, address);
            let (history, old_bytes) = match entry.replicas.get(&slot) {
                Some(kept) => {
                    let mut history = kept.history.clone();
                    history.push(at, reading, busy);
                    (history, kept.bytes)
                }
                None => (History::new(at, reading, busy), 0),
            };
            let bytes = history.bytes();
            let growth = bytes.saturating_sub(old_bytes);
            let fits = growth == 0 || state.ledger.fits(&holder, 0, growth, self.limit) == Fit::Now;
            if fits {
                state.ledger.add(&holder, bytes);
                state.ledger.remove(&holder, old_bytes);
                entry.replicas.insert(
                    slot,
                    Kept {
                        history,
                        holder,
                        bytes,
                    },
                );
            } else {
                if let Some(old) = entry.replicas.remove(&slot) {
                    state.ledger.remove(&old.holder, old.bytes);
                }
                not_kept.push(slot);
            }
        }
        entry.recorded.extend(recorded_now);
        // Forget what the window no longer holds.
        entry.replicas.retain(|_, kept| {
            kept.history.forget_before(from);
            let keep = kept.history.latest().at >= from;
            let bytes = kept.history.bytes();
            state.ledger.remove(&kept.holder, kept.bytes);
            if keep {
                state.ledger.add(&kept.holder, bytes);
                kept.bytes = bytes;
            }
            keep
        });
        for slot in not_kept {
            current.insert(
                slot,
                NowStatus::Failed(Fault::WindowFull { budget: self.limit }),
            );
        }
        let entry = state.entries.get(&key).expect("inserted above");
        // A metricType says; an engineMetric's page does (now, or in the
        // reads kept when no replica answers now).
        let what = source
            .windowed()
            .map(Measure::from)
            .or(measured)
            .or_else(|| {
                entry
                    .replicas
                    .values()
                    .next()
                    .map(|k| Measure::of(&k.history.latest().total))
            })
            .unwrap_or(Measure::Latency);
        let value = value_over(
            trigger, source, query, entry, &current, &empty, pods, end, from, what, lines, notes,
        );
        // Least recently asked triggers go past the count cap.
        while state.entries.len() > MAX_WINDOWED_TRIGGERS {
            let oldest = state
                .entries
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            if let Some(gone) = state.entries.remove(&oldest) {
                gone.release(&mut state.ledger);
            }
        }
        Some(value)
    }
}

/// Which reads a trigger keeps: its endpoints and what it reads of them,
/// one history whatever percentile is asked of it.
fn key_of(source: &EngineSource, query: &WindowQuery) -> String {
    let mut reads = query.clone();
    reads.percentile = Percentile::DEFAULT;
    reads.percentile_given = false;
    format!("{:?}|{:?}", source.endpoints, reads)
}

/// Forgets triggers not asked for during their window: their reads would
/// all be outside it when next asked.
fn forget_idle(state: &mut State, now: Instant) {
    let ledger = &mut state.ledger;
    state.entries.retain(|_, entry| {
        let keep = now.saturating_duration_since(entry.last_used) < entry.window;
        if !keep {
            entry.release(ledger);
        }
        keep
    });
}

impl Entry {
    /// Gives back the bytes it and its reads hold.
    fn release(&self, ledger: &mut Ledger) {
        ledger.remove(&self.holder, self.bytes);
        for kept in self.replicas.values() {
            ledger.remove(&kept.holder, kept.bytes);
        }
    }
}

/// Why a reading does not suit the trigger (an `engineMetric` counter
/// given a percentile or an aggregation, a Triton mean asked a quantile).
fn misfit(source: &EngineSource, query: &WindowQuery, reading: &Reading) -> Option<String> {
    let EngineReads::Metric(metric) = &source.reads else {
        return None;
    };
    match reading {
        Reading::Counter(_) if query.percentile_given => Some(format!(
            "invalid percentile for engineMetric {metric}: it is a counter, whose answer is a rate per second; percentile applies to histograms"
        )),
        Reading::Counter(_) if source.worst_replica => Some(format!(
            "invalid aggregation max for engineMetric {metric}: it is a counter, and rates add up across replicas; expected sum (the default)"
        )),
        _ => None,
    }
}

/// The trigger's value from its entry's reads.
#[allow(clippy::too_many_arguments)]
fn value_over(
    trigger: &Trigger,
    source: &EngineSource,
    query: &WindowQuery,
    entry: &Entry,
    current: &BTreeMap<(String, SocketAddr), NowStatus>,
    empty: &[String],
    pods: Option<Result<Vec<String>, String>>,
    end: Instant,
    from: Instant,
    what: Measure,
    lines: &mut Vec<ReplicaLine>,
    notes: &mut Vec<Note>,
) -> Result<f64, EvalError> {
    let window_text = format_duration(query.window);
    let unit = match &source.reads {
        EngineReads::Signal(signal) => signal.unit(),
        EngineReads::Metric(_) => match what {
            Measure::Rate => "events",
            Measure::Latency => "observations",
        },
    };
    if current.is_empty()
        && entry
            .replicas
            .values()
            .all(|k| k.history.span(from).is_none())
    {
        return no_replica(trigger, empty, pods);
    }
    // Every replica with reads in the window, and every replica named now.
    let mut slots: Vec<&(String, SocketAddr)> = entry.replicas.keys().collect();
    slots.extend(current.keys().filter(|k| !entry.replicas.contains_key(*k)));
    slots.sort();
    slots.dedup();

    // Each replica's reads in the window, what it is now, and its line.
    let mut spans: Vec<(Span<'_>, WindowNow, usize)> = Vec::new();
    let mut missing: Vec<usize> = Vec::new();
    let mut unread: Vec<(SocketAddr, Fault)> = Vec::new();
    let mut first_reads = 0;
    for slot in &slots {
        let span = entry.replicas.get(*slot).and_then(|k| k.history.span(from));
        let age = |at: Instant| end.saturating_duration_since(at);
        let now_status = match current.get(*slot) {
            None => WindowNow::Gone,
            Some(NowStatus::Read) => match &span {
                Some(span) if span.reads >= 2 => WindowNow::Read,
                _ => WindowNow::FirstRead,
            },
            Some(NowStatus::Failed(fault)) => {
                unread.push((slot.1, fault.clone()));
                match &span {
                    Some(span) if span.reads >= 2 && age(span.last.at) < LAST_READ_TRUST => {
                        WindowNow::LastRead(fault.clone())
                    }
                    _ => WindowNow::Missing {
                        fault: fault.clone(),
                        stand_in: None,
                    },
                }
            }
        };
        if now_status == WindowNow::FirstRead {
            first_reads += 1;
        }
        if matches!(now_status, WindowNow::Missing { .. }) {
            missing.push(lines.len());
        }
        let line = lines.len();
        let window_line = span.as_ref().map(|span| WindowLine {
            reads: span.reads,
            from_age: age(span.first.at),
            to_age: age(span.last.at),
            increase: span.increase.events(),
            unit,
            resets: span.resets,
            now: now_status.clone(),
        });
        let counts = span.as_ref().is_some_and(|s| s.reads >= 2)
            && !matches!(now_status, WindowNow::Missing { .. });
        lines.push(ReplicaLine {
            endpoint: slot.0.clone(),
            address: slot.1.to_string(),
            value: None,
            counted: counts,
            status: match window_line {
                Some(line) => ReplicaStatus::Window(line),
                None => ReplicaStatus::Window(WindowLine {
                    reads: 0,
                    from_age: Duration::ZERO,
                    to_age: Duration::ZERO,
                    increase: 0.0,
                    unit,
                    resets: 0,
                    now: now_status.clone(),
                }),
            },
        });
        if let Some(span) = span {
            spans.push((span, now_status, line));
        }
    }
    // As for gauges, at least one replica must answer now: recent reads
    // of silent ones do not make a value on their own.
    let read_now = current
        .values()
        .filter(|s| matches!(s, NowStatus::Read))
        .count();
    if read_now == 0 && !unread.is_empty() {
        let names: Vec<String> = source.endpoints.iter().map(ToString::to_string).collect();
        return Err(none_read(&names.join(", "), &unread));
    }
    // The replicas whose reads make the value: two or more in the
    // window, and not missing (those count by the HPA's rule below).
    let counting: Vec<&(Span<'_>, WindowNow, usize)> = spans
        .iter()
        .filter(|(span, now, _)| span.reads >= 2 && !matches!(now, WindowNow::Missing { .. }))
        .collect();
    if counting.is_empty() {
        return Err(EvalError::Unavailable(format!(
            "warming up: {} needs two reads of a replica inside its {window_text} window, and {} replica(s) have one so far (the next read comes one sample interval after the last; KEDA's fallback and the HPA's hold apply meanwhile)",
            source.reads,
            first_reads.max(spans.len())
        )));
    }
    let covered_from = counting.iter().map(|(s, _, _)| s.first.at).min();
    let covered_to = counting.iter().map(|(s, _, _)| s.last.at).max();
    let seconds = match (covered_from, covered_to) {
        (Some(from), Some(to)) => to.saturating_duration_since(from).as_secs_f64(),
        _ => 0.0,
    };
    let finished: f64 = counting.iter().map(|(s, _, _)| s.increase.events()).sum();
    let counted = counting.len();

    // Each counting replica's own value (for --explain, and the HPA's
    // rule), and the trigger's.
    let (value, own): (f64, Vec<Option<f64>>) = if finished <= 0.0 {
        // Nothing finished: idle, or stuck.
        let waiting: f64 = spans.iter().filter_map(|(s, _, _)| s.busiest.waiting).sum();
        let running: f64 = spans.iter().filter_map(|(s, _, _)| s.busiest.running).sum();
        let known = spans.iter().all(|(s, _, _)| s.all_busy_known);
        if waiting > 0.0 || running > 0.0 {
            return Err(EvalError::Unavailable(format!(
                "no request finished in the {window_text} window while {waiting} wait and {running} run across the replicas (at most, per read): a stuck or starved engine, not an idle one; a 0 would scale it down"
            )));
        }
        if !known && matches!(source.reads, EngineReads::Signal(_)) {
            return Err(EvalError::Unavailable(format!(
                "no request finished in the {window_text} window, and the replicas' pages lack the waiting and running gauges that would tell an idle engine from a stuck one"
            )));
        }
        notes.push(window_note(format!(
            "nothing finished in the {window_text} window and nothing waits or runs: idle, 0"
        )));
        (0.0, vec![Some(0.0); counted])
    } else if seconds <= 0.0 {
        return Err(EvalError::Unavailable(format!(
            "warming up: the reads of {} inside its {window_text} window were all taken at one moment",
            source.reads
        )));
    } else {
        match what {
            Measure::Rate => {
                // A replica silent now, read under the trust window ago,
                // stands in at its own rate over the span its reads cover
                // (spread over the whole span it would read low); one that
                // left DNS keeps only what it finished.
                let rates: Vec<Option<f64>> = counting
                    .iter()
                    .map(|(span, now, _)| {
                        let covers = span.covers().as_secs_f64();
                        let over = match now {
                            WindowNow::LastRead(_) if covers > 0.0 => covers,
                            _ => seconds,
                        };
                        Some(span.increase.events() / over)
                    })
                    .collect();
                let total: f64 = rates.iter().flatten().sum();
                notes.push(window_note(format!(
                    "{finished} {unit} finished over {seconds:.3}s covered by {counted} replica(s)' reads: {total:.4}/s"
                )));
                (total, rates)
            }
            Measure::Latency => {
                let histograms: Vec<Option<&window::Histogram>> = counting
                    .iter()
                    .map(|(span, _, _)| match &span.increase {
                        Reading::Histogram(h) => Some(h),
                        Reading::Counter(_) => None,
                    })
                    .collect();
                let answer = |h: &window::Histogram| -> Option<f64> {
                    match query.percentile {
                        Percentile::Mean => window::mean(h),
                        Percentile::Quantile(q) => window::quantile(q, h).map(|a| a.value),
                    }
                };
                let all: Vec<&window::Histogram> = histograms.iter().flatten().copied().collect();
                let merged = window::merge(&all);
                let own: Vec<Option<f64>> = histograms.iter().map(|h| h.and_then(answer)).collect();
                let value = if source.worst_replica {
                    own.iter().flatten().copied().fold(f64::NAN, f64::max)
                } else {
                    answer(&merged).unwrap_or(f64::NAN)
                };
                notes.push(window_note(describe_merged(
                    query.percentile,
                    &merged,
                    seconds,
                )));
                (value, own)
            }
        }
    };
    for ((_, _, line), own) in counting.iter().zip(&own) {
        lines[*line].value = *own;
    }
    // Replicas missing now count by the HPA's rule for pods without
    // metrics, as for gauges: rates as a sum of per-replica rates, a
    // merged latency as the value each counted replica reads.
    let (aggregation, read) = match (what, source.worst_replica) {
        (Measure::Rate, _) => (Aggregation::Sum, own.iter().flatten().copied().collect()),
        (Measure::Latency, true) => (Aggregation::Max, own.iter().flatten().copied().collect()),
        (Measure::Latency, false) => (Aggregation::Avg, vec![value; counted]),
    };
    let with: WithMissing = with_missing(aggregation, trigger.target, &read, missing.len());
    for &i in &missing {
        if let ReplicaStatus::Window(WindowLine {
            now: WindowNow::Missing { stand_in, .. },
            ..
        }) = &mut lines[i].status
        {
            *stand_in = Some(with.stand_in);
        }
    }
    let value = if missing.is_empty() {
        value
    } else {
        with.value
    };
    if !value.is_finite() || value < 0.0 {
        return Err(EvalError::Unavailable(format!(
            "the window's reads gave {value}, which is not a valid metric value"
        )));
    }
    Ok(value)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    Rate,
    Latency,
}

impl Measure {
    fn of(reading: &Reading) -> Measure {
        match reading {
            Reading::Counter(_) => Measure::Rate,
            Reading::Histogram(_) => Measure::Latency,
        }
    }
}

impl From<Windowed> for Measure {
    fn from(windowed: Windowed) -> Measure {
        match windowed {
            Windowed::Rate => Measure::Rate,
            Windowed::Latency => Measure::Latency,
        }
    }
}

fn window_note(text: String) -> Note {
    Note {
        peer: String::new(),
        kind: NoteKind::Window,
        text,
    }
}

/// The merged buckets around the answer, for `--explain`.
fn describe_merged(percentile: Percentile, merged: &window::Histogram, seconds: f64) -> String {
    let count = merged.count();
    let mut text = format!(
        "merged over {seconds:.1}s: {count} observations, sum {:.4}",
        merged.sum
    );
    match percentile {
        Percentile::Mean => {
            if let Some(mean) = window::mean(merged) {
                text.push_str(&format!("; mean = sum / count = {mean:.4}"));
            }
        }
        Percentile::Quantile(q) => {
            if let Some(answer) = window::quantile(q, merged) {
                let rank = q * count;
                let bound = |i: usize| match merged.bounds.get(i) {
                    Some(b) => format!("le={b}"),
                    None => String::from("le=+Inf"),
                };
                let low = answer.bucket.saturating_sub(1);
                let high = (answer.bucket + 1).min(merged.bounds.len());
                let around: Vec<String> = (low..=high)
                    .map(|i| format!("{}: {}", bound(i), merged.counts[i]))
                    .collect();
                text.push_str(&format!(
                    "; rank {rank:.2} of {count} falls in {} ({}); {percentile} = {}{:.4}",
                    bound(answer.bucket),
                    around.join(", "),
                    if answer.at_least { "at least " } else { "" },
                    answer.value
                ));
                if answer.at_least {
                    text.push_str(
                        " (the +Inf bucket: the truth is at least the highest finite bound)",
                    );
                }
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::engine::endpoint::Endpoint;
    use crate::engine::prom::families_wanted;
    use crate::engine::scrape::{PageFamilies, ReadError, Replica};
    use crate::scaling::trigger;

    #[test]
    fn not_kept_faults_name_the_budget() {
        assert_eq!(
            Fault::WindowFull {
                budget: WINDOW_BUDGET_BYTES
            }
            .to_string(),
            "not kept: its reads would go over the 8 MiB windowed triggers may hold (or its endpoint's or namespace's share of it)"
        );
    }

    const A: &str = "10.0.0.1:8000";
    const B: &str = "10.0.0.2:8000";

    fn trigger(pairs: &[(&str, &str)]) -> Trigger {
        let mut metadata: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        metadata.insert("engine".into(), "vllm".into());
        metadata.insert("engineEndpoints".into(), "vllm.ml:8000".into());
        metadata.insert("engineWindow".into(), "120s".into());
        trigger::parse(&metadata, "ml").unwrap()
    }

    /// What a replica answers in one round: finished requests and TTFTs
    /// (all at 0.05 s), and how many wait; `None`: no answer.
    type Answer = Option<(u64, u64)>;

    /// The trigger's outcome after rounds at these seconds, each with
    /// A's and B's answers.
    fn after(trigger: &Trigger, rounds: &[(u64, Answer, Answer)]) -> Outcome {
        let windows = Windows::new(WINDOW_BUDGET_BYTES);
        let source = trigger.engine().unwrap();
        let query = source.window.as_ref().unwrap();
        let wants = source.wants();
        let start = Instant::now();
        let mut outcome = None;
        for (second, a, b) in rounds {
            let at = start + Duration::from_secs(*second);
            let replicas = [(A, a), (B, b)]
                .into_iter()
                .map(|(address, answer)| Replica {
                    address: address.parse().unwrap(),
                    page: match answer {
                        Some((finished, waiting)) => {
                            let page = format!(
                                "# TYPE vllm:request_success_total counter\n\
                                 vllm:request_success_total{{finished_reason=\"stop\"}} {finished}\n\
                                 # TYPE vllm:time_to_first_token_seconds histogram\n\
                                 vllm:time_to_first_token_seconds_bucket{{le=\"0.1\"}} {finished}\n\
                                 vllm:time_to_first_token_seconds_bucket{{le=\"+Inf\"}} {finished}\n\
                                 vllm:time_to_first_token_seconds_sum {}\n\
                                 # TYPE vllm:num_requests_waiting gauge\n\
                                 vllm:num_requests_waiting {waiting}\n\
                                 # TYPE vllm:num_requests_running gauge\n\
                                 vllm:num_requests_running 0\n",
                                *finished as f64 * 0.05
                            );
                            let (families, declared) = families_wanted(&page, &wants, 100).unwrap();
                            Ok(Arc::new(PageFamilies { families, declared }))
                        }
                        None => Err(ReadError::NoLongerNamed),
                    },
                    earlier: None,
                })
                .collect();
            let endpoint = Endpoint {
                host: "vllm.ml".into(),
                port: 8000,
                path: "/metrics".into(),
            };
            let round = Arc::new(Scrape::of(endpoint, at, replicas));
            outcome = windows.outcome(
                trigger,
                source,
                query,
                &[round],
                None,
                Detail::Explained,
                at,
            );
        }
        outcome.unwrap()
    }

    #[test]
    fn a_replica_silent_under_the_trust_window_stands_in_at_its_own_rate() {
        let rate = trigger(&[("metricType", "request_rate"), ("targetValue", "50")]);
        // A: 10 a second over 20 s. B: 10 a second until 10 s, then silent.
        let outcome = after(
            &rate,
            &[
                (0, Some((0, 0)), Some((0, 0))),
                (10, Some((100, 0)), Some((100, 0))),
                (20, Some((200, 0)), None),
            ],
        );
        // Spread over the 20 s of A's reads, B would read 5 a second.
        assert_eq!(outcome.value, Ok(20.0));
    }

    #[test]
    fn a_replica_silent_longer_counts_by_the_hpa_rule_alone() {
        let rate = trigger(&[("metricType", "request_rate"), ("targetValue", "50")]);
        // B answered at 0 and 10 s, then not at 45 and 55 s (past the
        // trust window); A answers from 45 s, 10 a second.
        let outcome = after(
            &rate,
            &[
                (0, None, Some((0, 0))),
                (10, None, Some((100, 0))),
                (45, Some((0, 0)), None),
                (55, Some((100, 0)), None),
            ],
        );
        // A reads 10, under the target of 50: B counts as 50, not as
        // well its own old rate.
        assert_eq!(outcome.value, Ok(60.0));
    }

    #[test]
    fn an_idle_workload_with_a_missing_replica_is_not_zero() {
        let rate = trigger(&[("metricType", "request_rate"), ("targetValue", "50")]);
        let outcome = after(
            &rate,
            &[
                (0, Some((7, 0)), Some((3, 0))),
                (10, Some((7, 0)), Some((3, 0))),
                (45, Some((7, 0)), None),
            ],
        );
        // A finished nothing and nothing waits; B, silent 35 s, counts as
        // the target (without it the answer was 0).
        assert_eq!(outcome.value, Ok(50.0));
    }

    #[test]
    fn no_replica_read_now_is_an_error_whatever_was_read_before() {
        let rate = trigger(&[("metricType", "request_rate"), ("targetValue", "50")]);
        let outcome = after(
            &rate,
            &[
                (0, Some((0, 0)), Some((0, 0))),
                (10, Some((100, 0)), Some((100, 0))),
                (15, None, None),
            ],
        );
        assert!(
            matches!(&outcome.value, Err(EvalError::Unavailable(m)) if m.starts_with("no replica of")),
            "{:?}",
            outcome.value
        );
    }

    #[test]
    fn a_trigger_whose_key_would_go_over_the_budget_is_not_kept() {
        // An author's long label matcher makes a long key: counted, and
        // refused past the endpoint's share, never held unbounded.
        let long = format!("vllm:request_success{{x=\"{}\"}}", "y".repeat(4096));
        let mut metadata: HashMap<String, String> = [
            ("engine", "vllm"),
            ("engineEndpoints", "vllm.ml:8000"),
            ("targetValue", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        metadata.insert("engineMetric".into(), long);
        let trigger = trigger::parse(&metadata, "ml").unwrap();
        let source = trigger.engine().unwrap();
        let endpoint = source.endpoints[0].clone();
        let round = Arc::new(Scrape::of(endpoint, Instant::now(), Vec::new()));
        let windows = Windows::new(16 * 1024);
        let outcome = windows
            .outcome(
                &trigger,
                source,
                source.window.as_ref().unwrap(),
                std::slice::from_ref(&round),
                None,
                Detail::ValueOnly,
                Instant::now(),
            )
            .unwrap();
        assert!(
            matches!(&outcome.value, Err(EvalError::Unavailable(m)) if m.contains("not kept")),
            "{:?}",
            outcome.value
        );
        assert_eq!(windows.bytes(), 0);
        // Within the budget it is kept, and counted; forgotten once idle
        // past its window, it gives every byte back.
        let roomy = Windows::new(WINDOW_BUDGET_BYTES);
        let now = Instant::now();
        let query = source.window.as_ref().unwrap();
        let _ = roomy.outcome(
            &trigger,
            source,
            query,
            std::slice::from_ref(&round),
            None,
            Detail::ValueOnly,
            now,
        );
        assert!(roomy.bytes() > 2 * 4096, "{}", roomy.bytes());
        let other = self::trigger(&[("metricType", "request_rate"), ("targetValue", "5")]);
        let other_source = other.engine().unwrap();
        let later = now + query.window + Duration::from_secs(1);
        let _ = roomy.outcome(
            &other,
            other_source,
            other_source.window.as_ref().unwrap(),
            &[round],
            None,
            Detail::ValueOnly,
            later,
        );
        let one_entry =
            ENTRY_BYTES + 2 * key_of(other_source, other_source.window.as_ref().unwrap()).len();
        assert_eq!(roomy.bytes(), one_entry);
    }

    #[test]
    fn explained_values_stay_with_their_replicas() {
        let ttft = trigger(&[
            ("metricType", "ttft_seconds"),
            ("targetValue", "0.5"),
            ("aggregation", "max"),
        ]);
        // A saw no first token in the window, B saw 10.
        let outcome = after(
            &ttft,
            &[
                (0, Some((5, 0)), Some((0, 0))),
                (10, Some((5, 0)), Some((10, 0))),
            ],
        );
        let value_of = |address: &str| {
            outcome
                .replicas
                .iter()
                .find(|l| l.address == address)
                .unwrap()
                .value
        };
        // Only B has a percentile (rank 9 of 10 in (0, 0.1]); A has none,
        // and B's is not shown on A's line.
        assert_eq!(value_of(A), None);
        assert_eq!(value_of(B), Some(0.09));
        assert_eq!(outcome.value, Ok(0.09));
    }
}
