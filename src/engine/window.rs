//! Windowed engine signals: what a counter or a histogram on one replica's
//! page reads as (`Reading`), a replica's reads kept over time with
//! counter resets folded in (`History`), and the arithmetic over a window
//! of them: increases, rates, and quantiles of merged histograms
//! interpolated as Prometheus' `histogram_quantile` does. Pure: pages and
//! times in, numbers out; no I/O, no clock.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::engine::prom::{parse_number, Family, Kind, Want};
use crate::engine::signals::{
    check_value, one_per_series, selects, series_key, Query, Series, SeriesKey, Unread,
};
use crate::untrusted::plain;

/// `engineWindow` when none is given.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// The longest `engineWindow`.
pub const MAX_WINDOW: Duration = Duration::from_secs(600);
/// Reads kept per replica and trigger: beyond it, the read closest to its
/// predecessor is dropped (resets are folded into the totals first, so no
/// increase is lost; only the times the window can start at thin out).
pub const MAX_POINTS: usize = 32;
/// Distinct bucket bounds per histogram; a page with more is refused.
pub const MAX_BUCKETS: usize = 64;

/// `percentile`: a quantile strictly between 0 and 1, or the mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Percentile {
    Quantile(f64),
    Mean,
}

impl Percentile {
    pub const DEFAULT: Percentile = Percentile::Quantile(0.9);
}

impl fmt::Display for Percentile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Percentile::Mean => f.write_str("mean"),
            Percentile::Quantile(q) => {
                let percent = format!("{:.4}", q * 100.0);
                let percent = percent.trim_end_matches('0').trim_end_matches('.');
                write!(f, "p{percent}")
            }
        }
    }
}

/// What a windowed trigger reads from each page.
#[derive(Debug, Clone, PartialEq)]
pub enum WindowSource {
    /// A counter: its names in order of preference (each as a `# TYPE`
    /// line may spell it, with and without `_total`).
    Counter(Vec<Series>),
    /// A histogram: its names in order of preference.
    Histogram(Vec<Series>),
    /// Two counters whose increases give a mean: a total of durations
    /// (scaled to seconds) and the count of what they time (Triton's
    /// `nv_inference_queue_duration_us` over `nv_inference_request_success`).
    Ratio { sum: Series, count: Series },
    /// `engineMetric`: a counter or a histogram, as the page's `# TYPE`
    /// says; a gauge is read as a gauge (not through a window).
    Typed(Vec<Series>),
}

/// A windowed trigger's reads: what each page gives, and the engine's
/// waiting and running gauges, which tell an idle workload from a stuck
/// one when nothing finished in the window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowQuery {
    pub source: WindowSource,
    pub model: Option<(String, String)>,
    /// As [`Query::breakdown`].
    pub breakdown: Option<&'static str>,
    pub percentile: Percentile,
    /// Whether `percentile` was given (an `engineMetric` that turns out a
    /// counter must not have one).
    pub percentile_given: bool,
    pub window: Duration,
    pub waiting: Option<Query>,
    pub running: Option<Query>,
}

/// One page's read for a windowed trigger.
#[derive(Debug, Clone, PartialEq)]
pub enum PageRead {
    Reading(Reading),
    /// An `engineMetric` whose family is a gauge: read it as one.
    Gauge,
}

/// A counter's or a histogram's value on one page, summed over the
/// replica's series (data-parallel engines, finish reasons, streaming or
/// not; rank copies once).
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    Counter(f64),
    Histogram(Histogram),
}

/// A histogram as cumulative counts by upper bound.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Finite upper bounds, ascending.
    pub bounds: Vec<f64>,
    /// The cumulative count at each bound, then at `+Inf` (one more than
    /// `bounds`).
    pub counts: Vec<f64>,
    pub sum: f64,
}

impl Histogram {
    /// Observations: the `+Inf` bucket's count.
    pub fn count(&self) -> f64 {
        self.counts.last().copied().unwrap_or(0.0)
    }
}

/// The waiting and running gauges one read showed (`None`: the page has
/// none).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Busy {
    pub waiting: Option<f64>,
    pub running: Option<f64>,
}

impl WindowQuery {
    /// Every family a page must keep for this query.
    pub fn wants(&self) -> Vec<Want> {
        let mut families: Vec<&Series> = match &self.source {
            WindowSource::Counter(series)
            | WindowSource::Histogram(series)
            | WindowSource::Typed(series) => series.iter().collect(),
            WindowSource::Ratio { sum, count } => vec![sum, count],
        };
        let gauges: Vec<&Series> = [&self.waiting, &self.running]
            .into_iter()
            .flatten()
            .flat_map(|q| &q.series)
            .collect();
        families.extend(gauges);
        let mut wants: Vec<Want> = families
            .into_iter()
            .map(|s| Want {
                family: s.family.clone(),
                only: self.model.clone(),
            })
            .collect();
        wants.sort();
        wants.dedup();
        wants
    }

    /// The page's read: a counter's total, a histogram's buckets, or (for
    /// `engineMetric`) word that the family is a gauge.
    pub fn read(&self, families: &[Family], names: &[String]) -> Result<PageRead, Unread> {
        match &self.source {
            WindowSource::Counter(series) => {
                let (family, wanted) = self.first(series, families, names)?;
                self.counter(family, wanted).map(Reading::Counter)
            }
            WindowSource::Histogram(series) => {
                let (family, wanted) = self.first(series, families, names)?;
                self.histogram(family, wanted).map(Reading::Histogram)
            }
            WindowSource::Ratio { sum, count } => {
                let (sum_family, _) = self.first(std::slice::from_ref(sum), families, names)?;
                let (count_family, _) =
                    self.first(std::slice::from_ref(count), families, names)?;
                let total = self.counter(sum_family, sum)?;
                let count = self.counter(count_family, count)?;
                Ok(Reading::Histogram(Histogram {
                    bounds: Vec::new(),
                    counts: vec![count],
                    sum: total,
                }))
            }
            WindowSource::Typed(series) => {
                let (family, wanted) = self.first(series, families, names)?;
                match family.kind {
                    Kind::Counter => self.counter(family, wanted).map(Reading::Counter),
                    Kind::Histogram => self.histogram(family, wanted).map(Reading::Histogram),
                    Kind::Gauge | Kind::Untyped => return Ok(PageRead::Gauge),
                    Kind::Summary => Err(Unread::WrongKind {
                        family: plain(&family.name),
                        kind: family.kind,
                        wanted: "a gauge, a counter or a histogram (a summary's quantiles are each replica's own and cannot be merged)",
                    }),
                }
            }
        }
        .map(PageRead::Reading)
    }

    /// The waiting and running gauges on the page, where it has them.
    pub fn busy(&self, families: &[Family], names: &[String]) -> Busy {
        let read = |query: &Option<Query>| query.as_ref()?.read(families, names).ok();
        Busy {
            waiting: read(&self.waiting),
            running: read(&self.running),
        }
    }

    /// The first of `series` the page has, with series of its own name.
    fn first<'f, 's>(
        &self,
        series: &'s [Series],
        families: &'f [Family],
        names: &[String],
    ) -> Result<(&'f Family, &'s Series), Unread> {
        for wanted in series {
            if let Some(family) = families.iter().find(|f| f.name == wanted.family) {
                if !family.samples.is_empty() {
                    return Ok((family, wanted));
                }
            }
        }
        // Worded as a gauge query's absence is, naming the spelling given
        // for `engineMetric` (not the other one looked for).
        let named = match &self.source {
            WindowSource::Typed(_) => &series[..1],
            _ => series,
        };
        let query = Query {
            series: named.to_vec(),
            within: crate::aggregation::Aggregation::Sum,
            model: self.model.clone(),
            gauges_only: false,
            breakdown: self.breakdown,
        };
        match query.read(families, names) {
            Err(unread) => Err(unread),
            Ok(_) => Err(Unread::Absent {
                asked: named.iter().map(|s| s.to_string()).collect(),
                instead: crate::engine::signals::Instead::Series(Vec::new()),
            }),
        }
    }

    /// A counter's total over the replica's series.
    fn counter(&self, family: &Family, wanted: &Series) -> Result<f64, Unread> {
        if !matches!(family.kind, Kind::Counter | Kind::Untyped) {
            return Err(Unread::WrongKind {
                family: plain(&family.name),
                kind: family.kind,
                wanted: "a counter",
            });
        }
        let total_name = format!("{}_total", family.name);
        let names = [family.name.as_str(), total_name.as_str()];
        let values = one_per_series(family, &names, wanted, self.model.as_ref(), self.breakdown)?;
        if values.is_empty() {
            return Err(Unread::Absent {
                asked: vec![self.with_model(wanted)],
                instead: crate::engine::signals::Instead::Series(Vec::new()),
            });
        }
        Ok(values.iter().sum::<f64>() * wanted.scale)
    }

    /// A histogram's buckets summed over the replica's series by bound.
    fn histogram(&self, family: &Family, wanted: &Series) -> Result<Histogram, Unread> {
        if family.kind != Kind::Histogram {
            return Err(Unread::WrongKind {
                family: plain(&family.name),
                kind: family.kind,
                wanted: "a histogram",
            });
        }
        let (bucket_name, sum_name) = (
            format!("{}_bucket", family.name),
            format!("{}_sum", family.name),
        );
        let malformed = |why: String| Unread::Malformed {
            family: plain(&family.name),
            why,
        };
        // (series key, bound, count), rank copies once.
        let mut buckets: Vec<(SeriesKey<'_>, f64, f64)> = Vec::new();
        let mut sums: Vec<(SeriesKey<'_>, f64)> = Vec::new();
        for sample in &family.samples {
            if !selects(sample, wanted, self.model.as_ref(), self.breakdown) {
                continue;
            }
            if sample.name == bucket_name {
                check_value(sample)?;
                let le = sample
                    .label("le")
                    .ok_or_else(|| malformed(String::from("a bucket has no le label")))?;
                let bound = parse_bound(le).ok_or_else(|| {
                    malformed(format!("a bucket's le {:?} is not a number", plain(le)))
                })?;
                let key = series_key(sample, Some("le"));
                match buckets
                    .iter_mut()
                    .find(|(k, b, _)| *k == key && b.total_cmp(&bound).is_eq())
                {
                    Some((_, _, count)) => *count = count.max(sample.value),
                    None => buckets.push((key, bound, sample.value)),
                }
            } else if sample.name == sum_name {
                let key = series_key(sample, None);
                match sums.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, value)) => *value = value.max(sample.value),
                    None => sums.push((key, sample.value)),
                }
            }
        }
        if buckets.is_empty() {
            return Err(Unread::Absent {
                asked: vec![format!("{}_bucket", self.with_model(wanted))],
                instead: crate::engine::signals::Instead::Series(Vec::new()),
            });
        }
        let mut keys: Vec<&SeriesKey<'_>> = buckets.iter().map(|(k, _, _)| k).collect();
        keys.sort();
        keys.dedup();
        for key in &keys {
            if !buckets
                .iter()
                .any(|(k, b, _)| k == *key && *b == f64::INFINITY)
            {
                return Err(malformed(String::from(
                    "a series has no le=\"+Inf\" bucket",
                )));
            }
        }
        let mut bounds: Vec<f64> = buckets
            .iter()
            .map(|(_, b, _)| *b)
            .filter(|b| b.is_finite())
            .collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        if bounds.len() > MAX_BUCKETS {
            return Err(malformed(format!(
                "it has more than {MAX_BUCKETS} bucket bounds"
            )));
        }
        let mut counts = vec![0.0; bounds.len() + 1];
        for (_, bound, count) in &buckets {
            let index = if bound.is_finite() {
                bounds.partition_point(|b| b < bound)
            } else {
                bounds.len()
            };
            counts[index] += count;
        }
        let sum: f64 = sums.iter().map(|(_, v)| v).sum();
        if !sum.is_finite() {
            return Err(malformed(format!("its _sum reads {sum}")));
        }
        Ok(Histogram {
            bounds: bounds.iter().map(|b| b * wanted.scale).collect(),
            counts: monotonic(counts),
            sum: sum * wanted.scale,
        })
    }

    fn with_model(&self, wanted: &Series) -> String {
        let mut series = wanted.clone();
        if let Some(model) = &self.model {
            series.matchers.push(model.clone());
        }
        series.to_string()
    }
}

/// An `le` value: a number in the text format's grammar, or `+Inf`; not
/// `NaN` nor `-Inf`.
fn parse_bound(le: &str) -> Option<f64> {
    parse_number(le).filter(|b| !b.is_nan() && *b != f64::NEG_INFINITY)
}

/// Cumulative counts made non-decreasing, as Prometheus does before
/// interpolating (`ensureMonotonicAndIgnoreSmallDeltas`: a dip is raised
/// to the count before it).
fn monotonic(mut counts: Vec<f64>) -> Vec<f64> {
    for i in 1..counts.len() {
        if counts[i] < counts[i - 1] {
            counts[i] = counts[i - 1];
        }
    }
    counts
}

impl Reading {
    /// `after − before`, or, when a count went down (a restarted replica),
    /// `after` itself, as Prometheus' `increase()` counts a reset; `None`
    /// when the two cannot be compared (a counter and a histogram, or
    /// histograms with other bounds).
    fn increase_to(&self, after: &Reading) -> Option<(Reading, bool)> {
        match (self, after) {
            (Reading::Counter(a), Reading::Counter(b)) if b < a => {
                Some((Reading::Counter(*b), true))
            }
            (Reading::Counter(a), Reading::Counter(b)) => Some((Reading::Counter(b - a), false)),
            (Reading::Histogram(a), Reading::Histogram(b)) if a.bounds == b.bounds => {
                if a.counts.iter().zip(&b.counts).any(|(x, y)| y < x) {
                    return Some((after.clone(), true));
                }
                Some((
                    Reading::Histogram(Histogram {
                        bounds: b.bounds.clone(),
                        counts: a.counts.iter().zip(&b.counts).map(|(x, y)| y - x).collect(),
                        sum: (b.sum - a.sum).max(0.0),
                    }),
                    false,
                ))
            }
            _ => None,
        }
    }

    /// `self + other` (same kind and bounds; the caller checked).
    fn plus(&self, other: &Reading) -> Reading {
        match (self, other) {
            (Reading::Counter(a), Reading::Counter(b)) => Reading::Counter(a + b),
            (Reading::Histogram(a), Reading::Histogram(b)) => Reading::Histogram(Histogram {
                bounds: a.bounds.clone(),
                counts: a.counts.iter().zip(&b.counts).map(|(x, y)| x + y).collect(),
                sum: a.sum + b.sum,
            }),
            _ => self.clone(),
        }
    }

    /// `self − earlier`, both running totals of one history.
    fn minus(&self, earlier: &Reading) -> Reading {
        match (self, earlier) {
            (Reading::Counter(a), Reading::Counter(b)) => Reading::Counter((a - b).max(0.0)),
            (Reading::Histogram(a), Reading::Histogram(b)) => Reading::Histogram(Histogram {
                bounds: a.bounds.clone(),
                counts: a
                    .counts
                    .iter()
                    .zip(&b.counts)
                    .map(|(x, y)| (x - y).max(0.0))
                    .collect(),
                sum: (a.sum - b.sum).max(0.0),
            }),
            _ => self.clone(),
        }
    }

    /// Finished events: a counter's value, a histogram's observations.
    pub fn events(&self) -> f64 {
        match self {
            Reading::Counter(v) => *v,
            Reading::Histogram(h) => h.count(),
        }
    }

    /// Roughly what it holds in memory.
    pub fn bytes(&self) -> usize {
        match self {
            Reading::Counter(_) => 16,
            Reading::Histogram(h) => 56 + 8 * (h.bounds.len() + h.counts.len()),
        }
    }
}

/// One kept read: the running total since the history began (every
/// increase added, resets folded in), so that dropping reads in between
/// loses none of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub at: Instant,
    pub total: Reading,
    /// Resets seen since the history began.
    pub resets: u32,
    pub busy: Busy,
}

/// One replica's reads for one trigger, oldest first, at most
/// [`MAX_POINTS`].
#[derive(Debug, Clone)]
pub struct History {
    /// The latest read as the page had it (for the next increase).
    last: Reading,
    points: VecDeque<Point>,
}

/// How a read joined a history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    Continued,
    /// The read could not follow the one before (other bucket bounds, or
    /// another type): the history starts again from it.
    Restarted,
}

impl History {
    pub fn new(at: Instant, reading: Reading, busy: Busy) -> Self {
        let mut points = VecDeque::new();
        points.push_back(Point {
            at,
            total: reading.clone(),
            resets: 0,
            busy,
        });
        Self {
            last: reading,
            points,
        }
    }

    pub fn points(&self) -> &VecDeque<Point> {
        &self.points
    }

    pub fn latest(&self) -> &Point {
        self.points.back().expect("a history has a read")
    }

    /// Adds a read taken at `at` (after the latest).
    pub fn push(&mut self, at: Instant, reading: Reading, busy: Busy) -> Joined {
        let Some((increase, reset)) = self.last.increase_to(&reading) else {
            *self = History::new(at, reading, busy);
            return Joined::Restarted;
        };
        let latest = self.latest();
        let point = Point {
            at,
            total: latest.total.plus(&increase),
            resets: latest.resets + u32::from(reset),
            busy,
        };
        self.points.push_back(point);
        self.last = reading;
        if self.points.len() > MAX_POINTS {
            self.thin();
        }
        Joined::Continued
    }

    /// Drops reads taken before `oldest`, keeping the latest.
    pub fn forget_before(&mut self, oldest: Instant) {
        while self.points.len() > 1 && self.points[0].at < oldest {
            self.points.pop_front();
        }
    }

    /// Drops the inner read closest in time to the one before it.
    fn thin(&mut self) {
        let closest = (1..self.points.len() - 1).min_by_key(|&i| {
            self.points[i]
                .at
                .saturating_duration_since(self.points[i - 1].at)
        });
        if let Some(i) = closest {
            // Its busy gauges still count for "every read in the window".
            let busy = self.points[i].busy;
            self.points.remove(i);
            let next = &mut self.points[i].busy;
            next.waiting = max_option(next.waiting, busy.waiting);
            next.running = max_option(next.running, busy.running);
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        64 + self.last.bytes()
            + self
                .points
                .iter()
                .map(|p| 48 + p.total.bytes())
                .sum::<usize>()
    }

    /// This history's part of a window starting at `from`: its reads in
    /// it, and the increase between its first and last.
    pub fn span(&self, from: Instant) -> Option<Span<'_>> {
        let inside: Vec<&Point> = self.points.iter().filter(|p| p.at >= from).collect();
        let (first, last) = (*inside.first()?, *inside.last()?);
        Some(Span {
            reads: inside.len(),
            first,
            last,
            increase: last.total.minus(&first.total),
            resets: last.resets - first.resets,
            busiest: inside.iter().fold(Busy::default(), |b, p| Busy {
                waiting: max_option(b.waiting, p.busy.waiting),
                running: max_option(b.running, p.busy.running),
            }),
            all_busy_known: inside
                .iter()
                .all(|p| p.busy.waiting.is_some() || p.busy.running.is_some()),
        })
    }
}

fn max_option(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// A history's reads inside a window.
#[derive(Debug, Clone)]
pub struct Span<'a> {
    pub reads: usize,
    pub first: &'a Point,
    pub last: &'a Point,
    /// Between the first and the last read.
    pub increase: Reading,
    pub resets: u32,
    /// The most waiting and running any of its reads showed.
    pub busiest: Busy,
    /// Whether every read had the gauges.
    pub all_busy_known: bool,
}

impl Span<'_> {
    /// How long its reads cover.
    pub fn covers(&self) -> Duration {
        self.last.at.saturating_duration_since(self.first.at)
    }
}

/// Histogram increases merged by bound, as Prometheus merges series with
/// the same `le`: every bound of every one, sorted, equal bounds added,
/// then made non-decreasing. (With the same bounds everywhere, the usual
/// case, this is exact.)
pub fn merge(histograms: &[&Histogram]) -> Histogram {
    let mut pairs: Vec<(f64, f64)> = Vec::new();
    for histogram in histograms {
        for (i, count) in histogram.counts.iter().enumerate() {
            let bound = histogram.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            pairs.push((bound, *count));
        }
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut bounds: Vec<f64> = Vec::new();
    let mut counts: Vec<f64> = Vec::new();
    for (bound, count) in pairs {
        if bounds.last() == Some(&bound) {
            *counts.last_mut().expect("paired") += count;
        } else {
            bounds.push(bound);
            counts.push(count);
        }
    }
    if bounds.last() == Some(&f64::INFINITY) {
        bounds.pop();
    } else {
        counts.push(0.0);
    }
    Histogram {
        bounds,
        counts: monotonic(counts),
        sum: histograms.iter().map(|h| h.sum).sum(),
    }
}

/// A quantile of a histogram, as Prometheus' `histogram_quantile` answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantileAnswer {
    pub value: f64,
    /// The rank fell in the `+Inf` bucket: the answer is the highest finite
    /// bound, and the truth is at least that.
    pub at_least: bool,
    /// The bucket it fell in (an index into the bounds; `bounds.len()`
    /// for `+Inf`).
    pub bucket: usize,
}

/// The `q`-quantile (0 < q < 1) of `histogram`, interpolated linearly
/// within its bucket as Prometheus' `BucketQuantile` does: from 0 in the
/// lowest bucket when its bound is above 0 (a bound at or below 0 is
/// answered as is), and the highest finite bound when the rank falls in
/// `+Inf`. `None` with no observations or no finite bound.
pub fn quantile(q: f64, histogram: &Histogram) -> Option<QuantileAnswer> {
    let counts = &histogram.counts;
    let bounds = &histogram.bounds;
    let observations = histogram.count();
    if bounds.is_empty() || observations <= 0.0 || !(q > 0.0 && q < 1.0) {
        return None;
    }
    let rank = q * observations;
    let b = (0..bounds.len())
        .find(|&i| counts[i] >= rank)
        .unwrap_or(bounds.len());
    let (value, at_least) = if b == bounds.len() {
        (bounds[bounds.len() - 1], true)
    } else if b == 0 && bounds[0] <= 0.0 {
        (bounds[0], false)
    } else {
        let (start, below) = if b > 0 {
            (bounds[b - 1], counts[b - 1])
        } else {
            (0.0, 0.0)
        };
        let end = bounds[b];
        (
            start + (end - start) * (rank - below) / (counts[b] - below),
            false,
        )
    };
    Some(QuantileAnswer {
        value,
        at_least,
        bucket: b,
    })
}

/// `mean` of a histogram: its sum over its count; `None` with no
/// observations.
pub fn mean(histogram: &Histogram) -> Option<f64> {
    let count = histogram.count();
    (count > 0.0).then(|| histogram.sum / count)
}

#[cfg(test)]
mod tests;
