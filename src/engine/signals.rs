//! What each engine calls its queue, its running requests and its KV-cache
//! use, and how one replica's page turns into one number: the series a
//! trigger reads (`Query`), filtered by model, deduplicated across ranks
//! and combined within the pod. Pure: families in, a value or the reason
//! there is none out.

use std::fmt;

use crate::aggregation::Aggregation;
use crate::engine::prom::{prefix, Family, Kind, Sample, Want};
use crate::engine::window::WindowSource;
use crate::untrusted::plain;

/// The engines with a metrics table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    Vllm,
    Sglang,
    /// `trtllm-serve`, TensorRT-LLM's OpenAI-compatible server.
    Trtllm,
    /// Triton Inference Server, with its TensorRT-LLM backend where present.
    Triton,
}

impl Engine {
    pub const ALL: [Engine; 4] = [Engine::Vllm, Engine::Sglang, Engine::Trtllm, Engine::Triton];

    pub fn name(self) -> &'static str {
        match self {
            Engine::Vllm => "vllm",
            Engine::Sglang => "sglang",
            Engine::Trtllm => "trtllm",
            Engine::Triton => "triton",
        }
    }

    pub fn from_name(name: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The port its metrics are served on when an endpoint leaves it out.
    pub fn default_port(self) -> u16 {
        match self {
            Engine::Vllm | Engine::Trtllm => 8000,
            Engine::Sglang => 30000,
            Engine::Triton => 8002,
        }
    }

    /// The default path of its metrics page.
    pub fn default_path(self) -> &'static str {
        match self {
            // trtllm-serve serves Prometheus text under /prometheus/metrics;
            // its /metrics is JSON.
            Engine::Trtllm => "/prometheus/metrics",
            _ => "/metrics",
        }
    }

    /// The label that names the model a series is about.
    pub fn model_label(self) -> &'static str {
        match self {
            Engine::Vllm | Engine::Sglang | Engine::Trtllm => "model_name",
            Engine::Triton => "model",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The engine `metricType`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    QueueLength,
    RunningRequests,
    KvCacheUsagePercent,
    /// Requests finished per second, over a window.
    RequestRate,
    PromptTokensRate,
    GenerationTokensRate,
    /// Time to first token, a quantile or the mean over a window.
    TtftSeconds,
    ItlSeconds,
    E2eLatencySeconds,
    QueueTimeSeconds,
}

/// What a windowed signal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Windowed {
    /// Per second, the workload's total.
    Rate,
    /// Seconds, a quantile or the mean of the merged distribution.
    Latency,
}

impl Signal {
    pub const ALL: [Signal; 10] = [
        Signal::QueueLength,
        Signal::RunningRequests,
        Signal::KvCacheUsagePercent,
        Signal::RequestRate,
        Signal::PromptTokensRate,
        Signal::GenerationTokensRate,
        Signal::TtftSeconds,
        Signal::ItlSeconds,
        Signal::E2eLatencySeconds,
        Signal::QueueTimeSeconds,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Signal::QueueLength => "queue_length",
            Signal::RunningRequests => "running_requests",
            Signal::KvCacheUsagePercent => "kv_cache_usage_percent",
            Signal::RequestRate => "request_rate",
            Signal::PromptTokensRate => "prompt_tokens_rate",
            Signal::GenerationTokensRate => "generation_tokens_rate",
            Signal::TtftSeconds => "ttft_seconds",
            Signal::ItlSeconds => "itl_seconds",
            Signal::E2eLatencySeconds => "e2e_latency_seconds",
            Signal::QueueTimeSeconds => "queue_time_seconds",
        }
    }

    /// `None` for the gauges, read as they stand.
    pub fn windowed(self) -> Option<Windowed> {
        match self {
            Signal::QueueLength | Signal::RunningRequests | Signal::KvCacheUsagePercent => None,
            Signal::RequestRate | Signal::PromptTokensRate | Signal::GenerationTokensRate => {
                Some(Windowed::Rate)
            }
            Signal::TtftSeconds
            | Signal::ItlSeconds
            | Signal::E2eLatencySeconds
            | Signal::QueueTimeSeconds => Some(Windowed::Latency),
        }
    }

    /// What one of the signal counts, for messages: "requests", "tokens".
    pub fn unit(self) -> &'static str {
        match self {
            Signal::PromptTokensRate | Signal::GenerationTokensRate => "tokens",
            Signal::TtftSeconds
            | Signal::ItlSeconds
            | Signal::E2eLatencySeconds
            | Signal::QueueTimeSeconds => "observations",
            _ => "requests",
        }
    }

    pub fn from_name(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.name() == name)
    }

    /// How one pod's series combine: counts add up (one series per
    /// data-parallel engine), a usage takes the fullest.
    pub fn within_pod(self) -> Aggregation {
        match self {
            Signal::KvCacheUsagePercent => Aggregation::Max,
            _ => Aggregation::Sum,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One family to read, with the label values a series must have.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub family: String,
    pub matchers: Vec<(String, String)>,
    /// Multiplies the value (a 0–1 fraction becomes a percent).
    pub scale: f64,
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.family)?;
        if !self.matchers.is_empty() {
            let matchers: Vec<String> = self
                .matchers
                .iter()
                .map(|(name, value)| format!("{name}={value:?}"))
                .collect();
            write!(f, "{{{}}}", matchers.join(","))?;
        }
        Ok(())
    }
}

/// What a trigger reads from each replica's page.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// In order of preference: the first one a page has is read (a newer
    /// name, then the older one).
    pub series: Vec<Series>,
    pub within: Aggregation,
    /// Keep only series whose `(label, value)` is this.
    pub model: Option<(String, String)>,
    /// Only gauges (and untyped families) may be read.
    pub gauges_only: bool,
    /// A label whose non-empty values break a total down (SGLang's
    /// `priority` under priority scheduling): only the series where it is
    /// empty or missing count, or the total would be counted twice.
    pub breakdown: Option<&'static str>,
}

/// Labels that repeat one engine's series once per tensor- or
/// pipeline-parallel rank; those copies count once.
const RANK_LABELS: [&str; 3] = ["tp_rank", "pp_rank", "moe_ep_rank"];

/// Whether a sample is one of the series `wanted` names: its label
/// matchers and the model's hold, and it is not one line of a breakdown
/// (see [`Query::breakdown`]).
pub(crate) fn selects(
    sample: &Sample,
    wanted: &Series,
    model: Option<&(String, String)>,
    breakdown: Option<&str>,
) -> bool {
    let labels_match = wanted
        .matchers
        .iter()
        .chain(model)
        .all(|(name, value)| sample.label(name) == Some(value.as_str()));
    let in_breakdown =
        breakdown.is_some_and(|label| sample.label(label).is_some_and(|v| !v.is_empty()));
    labels_match && !in_breakdown
}

/// A sample's value must be a finite number >= 0: dropped or summed, any
/// other would read lower than the truth.
pub(crate) fn check_value(sample: &Sample) -> Result<(), Unread> {
    if sample.value.is_finite() && sample.value >= 0.0 {
        return Ok(());
    }
    let labels: Vec<String> = sample
        .labels
        .iter()
        .map(|(n, v)| format!("{n}={v:?}"))
        .collect();
    Err(Unread::Invalid {
        series: plain(&format!("{}{{{}}}", sample.name, labels.join(","))),
        value: sample.value,
    })
}

/// The values of the family's samples named one of `names` that `wanted`
/// selects (see [`selects`]), one per series once rank copies are folded
/// (the largest copy). Any that is not a finite number >= 0 makes the
/// whole read invalid: dropped or summed, it would read lower than the
/// truth.
pub(crate) fn one_per_series(
    family: &Family,
    names: &[&str],
    wanted: &Series,
    model: Option<&(String, String)>,
    breakdown: Option<&str>,
) -> Result<Vec<f64>, Unread> {
    let mut groups: Vec<(SeriesKey<'_>, f64)> = Vec::new();
    for sample in &family.samples {
        if !names.contains(&sample.name.as_str()) || !selects(sample, wanted, model, breakdown) {
            continue;
        }
        check_value(sample)?;
        let key = series_key(sample, None);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, value)) => *value = value.max(sample.value),
            None => groups.push((key, sample.value)),
        }
    }
    Ok(groups.into_iter().map(|(_, value)| value).collect())
}

/// A series' labels less rank labels, sorted (borrowed from its sample).
pub(crate) type SeriesKey<'s> = Vec<&'s (String, String)>;

/// A sample's labels less rank labels (and `skip`, e.g. `le`), sorted:
/// the rank copies of one series share a key.
pub(crate) fn series_key<'s>(sample: &'s Sample, skip: Option<&str>) -> SeriesKey<'s> {
    let mut key: Vec<&(String, String)> = sample
        .labels
        .iter()
        .filter(|(n, _)| !RANK_LABELS.contains(&n.as_str()) && Some(n.as_str()) != skip)
        .collect();
    key.sort();
    key
}

pub(crate) fn series(family: &str, matchers: &[(&str, &str)], scale: f64) -> Series {
    Series {
        family: family.to_string(),
        matchers: matchers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        scale,
    }
}

/// The engine's series for a gauge signal, newest name first; none for a
/// windowed one (see [`window_source`]).
pub fn table(engine: Engine, signal: Signal) -> Vec<Series> {
    use Engine::*;
    use Signal::*;
    match (engine, signal) {
        (_, RequestRate | PromptTokensRate | GenerationTokensRate) => Vec::new(),
        (_, TtftSeconds | ItlSeconds | E2eLatencySeconds | QueueTimeSeconds) => Vec::new(),
        (Vllm, QueueLength) => vec![series("vllm:num_requests_waiting", &[], 1.0)],
        (Vllm, RunningRequests) => vec![series("vllm:num_requests_running", &[], 1.0)],
        (Vllm, KvCacheUsagePercent) => vec![
            series("vllm:kv_cache_usage_perc", &[], 100.0),
            // Removed from vLLM in late 2025; older servers still have it.
            series("vllm:gpu_cache_usage_perc", &[], 100.0),
        ],
        (Sglang, QueueLength) => vec![series("sglang:num_queue_reqs", &[], 1.0)],
        (Sglang, RunningRequests) => vec![series("sglang:num_running_reqs", &[], 1.0)],
        (Sglang, KvCacheUsagePercent) => vec![series("sglang:token_usage", &[], 100.0)],
        (Trtllm, QueueLength) => vec![series("trtllm_num_requests_waiting", &[], 1.0)],
        (Trtllm, RunningRequests) => vec![series("trtllm_num_requests_running", &[], 1.0)],
        (Trtllm, KvCacheUsagePercent) => vec![series("trtllm_kv_cache_utilization", &[], 100.0)],
        (Triton, QueueLength) => vec![
            series(
                "nv_trt_llm_request_metrics",
                &[("request_type", "waiting")],
                1.0,
            ),
            series("nv_inference_pending_request_count", &[], 1.0),
        ],
        (Triton, RunningRequests) => vec![series(
            "nv_trt_llm_request_metrics",
            &[("request_type", "scheduled")],
            1.0,
        )],
        (Triton, KvCacheUsagePercent) => vec![series(
            "nv_trt_llm_kv_cache_block_metrics",
            &[("kv_cache_block_type", "fraction")],
            100.0,
        )],
    }
}

/// A counter's names as a `# TYPE` line may spell them: prometheus_client's
/// text format puts `_total` on the TYPE line (`vllm:request_success_total`),
/// OpenMetrics and older clients leave it to the sample. The name given
/// first.
pub fn counter_names(name: &str) -> Vec<Series> {
    let other = match name.strip_suffix("_total") {
        Some(base) => base.to_string(),
        None => format!("{name}_total"),
    };
    vec![series(name, &[], 1.0), series(&other, &[], 1.0)]
}

/// Where a windowed signal comes from on the engine's page, or why the
/// engine has no source for it (the README's empty cells). Sources:
/// vLLM 0.34 `vllm/v1/metrics/loggers.py`; SGLang 0.5.23
/// `sglang/srt/observability/metrics_collector.py`; TensorRT-LLM
/// `tensorrt_llm/metrics/collector.py` (main: `trtllm_` names; 1.0–1.1:
/// the same names unprefixed); Triton core `src/metrics.cc`.
pub fn window_source(engine: Engine, signal: Signal) -> Result<WindowSource, &'static str> {
    use Engine::*;
    use Signal::*;
    let counter = |names: &[&str]| {
        WindowSource::Counter(names.iter().flat_map(|n| counter_names(n)).collect())
    };
    let histogram = |names: &[&str]| {
        WindowSource::Histogram(names.iter().map(|n| series(n, &[], 1.0)).collect())
    };
    Ok(match (engine, signal) {
        (_, QueueLength | RunningRequests | KvCacheUsagePercent) => {
            return Err("a gauge, read as it stands")
        }
        (Vllm, RequestRate) => counter(&["vllm:request_success_total"]),
        (Vllm, PromptTokensRate) => counter(&["vllm:prompt_tokens_total"]),
        (Vllm, GenerationTokensRate) => counter(&["vllm:generation_tokens_total"]),
        (Vllm, TtftSeconds) => histogram(&["vllm:time_to_first_token_seconds"]),
        // The older name until vLLM 0.13 (same buckets); never
        // request_time_per_output_token, a per-request mean.
        (Vllm, ItlSeconds) => histogram(&[
            "vllm:inter_token_latency_seconds",
            "vllm:time_per_output_token_seconds",
        ]),
        (Vllm, E2eLatencySeconds) => histogram(&["vllm:e2e_request_latency_seconds"]),
        (Vllm, QueueTimeSeconds) => histogram(&["vllm:request_queue_time_seconds"]),
        (Sglang, RequestRate) => counter(&["sglang:num_requests_total"]),
        (Sglang, PromptTokensRate) => counter(&["sglang:prompt_tokens_total"]),
        (Sglang, GenerationTokensRate) => counter(&["sglang:generation_tokens_total"]),
        (Sglang, TtftSeconds) => histogram(&["sglang:time_to_first_token_seconds"]),
        (Sglang, ItlSeconds) => histogram(&["sglang:inter_token_latency_seconds"]),
        (Sglang, E2eLatencySeconds) => histogram(&["sglang:e2e_request_latency_seconds"]),
        (Sglang, QueueTimeSeconds) => histogram(&["sglang:queue_time_seconds"]),
        (Trtllm, RequestRate) => counter(&["trtllm_request_success_total", "request_success_total"]),
        (Trtllm, PromptTokensRate) => counter(&["trtllm_prompt_tokens_total"]),
        (Trtllm, GenerationTokensRate) => counter(&["trtllm_generation_tokens_total"]),
        (Trtllm, TtftSeconds) => histogram(&[
            "trtllm_time_to_first_token_seconds",
            "time_to_first_token_seconds",
        ]),
        // A per-request mean time per output token, one observation per
        // request: the closest trtllm-serve has (the README says so).
        (Trtllm, ItlSeconds) => histogram(&[
            "trtllm_time_per_output_token_seconds",
            "time_per_output_token_seconds",
        ]),
        (Trtllm, E2eLatencySeconds) => histogram(&[
            "trtllm_e2e_request_latency_seconds",
            "e2e_request_latency_seconds",
        ]),
        (Trtllm, QueueTimeSeconds) => histogram(&[
            "trtllm_request_queue_time_seconds",
            "request_queue_time_seconds",
        ]),
        (Triton, RequestRate) => counter(&["nv_inference_request_success"]),
        (Triton, PromptTokensRate | GenerationTokensRate) => return Err(
            "Triton's core counts requests and inferences, not tokens (token counters come from a backend: read one with engineMetric)",
        ),
        // Opt-in (--metrics-config histogram_latencies=true), in whole ms.
        (Triton, TtftSeconds) => WindowSource::Histogram(vec![series(
            "nv_inference_first_response_histogram_ms",
            &[],
            0.001,
        )]),
        (Triton, ItlSeconds) => return Err(
            "Triton's core times only a request's first response; nothing times the tokens after it",
        ),
        (Triton, E2eLatencySeconds) => WindowSource::Ratio {
            sum: series("nv_inference_request_duration_us", &[], 1e-6),
            count: series("nv_inference_request_success", &[], 1.0),
        },
        (Triton, QueueTimeSeconds) => WindowSource::Ratio {
            sum: series("nv_inference_queue_duration_us", &[], 1e-6),
            count: series("nv_inference_request_success", &[], 1.0),
        },
    })
}

/// The engine's label that breaks a total down, if any (see
/// [`Query::breakdown`]). SGLang with `--enable-priority-scheduling`
/// writes the total of each queue gauge under `priority=""` and one series
/// per priority beside it (`metrics_collector.py`, `_log_gauge_queue_count`).
pub fn breakdown_label(engine: Engine) -> Option<&'static str> {
    match engine {
        Engine::Sglang => Some("priority"),
        _ => None,
    }
}

/// Why a page gave no value. Text only where shown, by `Display`.
#[derive(Debug, Clone, PartialEq)]
pub enum Unread {
    /// The page lacks the series asked for (each as `family{labels}`).
    Absent {
        asked: Vec<String>,
        instead: Instead,
    },
    /// The family is there but is not a gauge (`engineMetric` only).
    NotAGauge { family: String, kind: Kind },
    /// A series whose value is not a finite number >= 0.
    Invalid { series: String, value: f64 },
    /// A windowed trigger's family is of another type than it needs.
    WrongKind {
        family: String,
        kind: Kind,
        wanted: &'static str,
    },
    /// A histogram that cannot be read (no `+Inf` bucket, a bad `le`, too
    /// many bounds).
    Malformed { family: String, why: String },
}

/// What a page without the series asked for has instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instead {
    /// The most preferred family asked for, without the labels or model
    /// asked for: some of its series (at most 5).
    Series(Vec<String>),
    /// Families with the same engine prefix (an older name; at most 8).
    Similar(Vec<String>),
    /// Nothing with the prefixes asked for (a wrong `engine`?).
    NothingLike(Vec<String>),
}

impl fmt::Display for Unread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unread::Absent { asked, instead } => {
                write!(f, "the page has no {}", asked.join(" nor "))?;
                match instead {
                    Instead::Series(names) if names.is_empty() => Ok(()),
                    Instead::Series(names) | Instead::Similar(names) => {
                        write!(f, "; it has {}", names.join(", "))
                    }
                    Instead::NothingLike(prefixes) => write!(
                        f,
                        "; no family on it starts with {} (is engine right?)",
                        prefixes.join(" or ")
                    ),
                }
            }
            Unread::NotAGauge { family, kind } => write!(
                f,
                "{family} is a {} on this page; engineMetric reads gauges only (a rate needs two scrapes)",
                kind.name()
            ),
            Unread::Invalid { series, value } => {
                write!(f, "{series} reads {value}, which is not a finite number >= 0")
            }
            Unread::WrongKind {
                family,
                kind,
                wanted,
            } => write!(f, "{family} is a {} on this page; this trigger reads {wanted}", kind.name()),
            Unread::Malformed { family, why } => {
                write!(f, "histogram {family} cannot be read: {why}")
            }
        }
    }
}

impl Query {
    /// Every family name the query may read, for the parser.
    pub fn families(&self) -> Vec<&str> {
        self.series.iter().map(|s| s.family.as_str()).collect()
    }

    /// What a scrape must keep of each page for this query: its families,
    /// only the model's series when a model is named.
    pub fn wants(&self) -> Vec<Want> {
        self.series
            .iter()
            .map(|s| Want {
                family: s.family.clone(),
                only: self.model.clone(),
            })
            .collect()
    }

    /// The replica's value from its page's `families` (the wanted ones)
    /// and `names` (every family the page declares, for the message when
    /// the wanted ones are absent).
    pub fn read(&self, families: &[Family], names: &[String]) -> Result<f64, Unread> {
        for wanted in &self.series {
            let Some(family) = families.iter().find(|f| f.name == wanted.family) else {
                continue;
            };
            if self.gauges_only
                && matches!(family.kind, Kind::Counter | Kind::Histogram | Kind::Summary)
            {
                return Err(Unread::NotAGauge {
                    family: family.name.clone(),
                    kind: family.kind,
                });
            }
            let values = self.matching(wanted, family)?;
            if values.is_empty() {
                // A family the page has, without the series asked for, is
                // no reason to read an older or coarser one instead (Triton's
                // pending count stays near 0 for a decoupled TensorRT-LLM
                // model): the replica has no value.
                if family.has_series() {
                    return Err(self.absent(families, names));
                }
                continue;
            }
            // `values` is not empty here.
            let value = self.within.apply(&values).unwrap_or(0.0) * wanted.scale;
            if !value.is_finite() || value < 0.0 {
                return Err(Unread::Invalid {
                    series: wanted.to_string(),
                    value,
                });
            }
            return Ok(value);
        }
        Err(self.absent(families, names))
    }

    /// The values of the family's series that match, one per series once
    /// rank copies are folded. Any matching series that is not a finite
    /// number >= 0 makes the replica's value invalid: dropped or summed,
    /// it would read lower than the truth.
    fn matching(&self, wanted: &Series, family: &Family) -> Result<Vec<f64>, Unread> {
        one_per_series(
            family,
            &[family.name.as_str()],
            wanted,
            self.model.as_ref(),
            self.breakdown,
        )
    }

    /// The series asked for, and what the page has instead: the family
    /// without the model or label match, or families with the same prefix
    /// (an older name).
    fn absent(&self, families: &[Family], names: &[String]) -> Unread {
        let asked: Vec<String> = self
            .series
            .iter()
            .map(|s| match &self.model {
                Some((label, value)) => {
                    let mut s = s.clone();
                    s.matchers.push((label.clone(), value.clone()));
                    s.to_string()
                }
                None => s.to_string(),
            })
            .collect();
        // The most preferred family the page has, whatever order the
        // page (or the scrape) listed them in.
        let present = self.series.iter().find_map(|wanted| {
            families
                .iter()
                .find(|f| f.name == wanted.family && f.has_series())
        });
        if let Some(family) = present {
            let mut seen: Vec<String> = Vec::new();
            let own = family.samples.iter().chain(&family.unkept_examples);
            for sample in own.filter(|s| s.name == family.name) {
                let labels: Vec<String> = sample
                    .labels
                    .iter()
                    .filter(|(n, _)| !RANK_LABELS.contains(&n.as_str()))
                    .map(|(n, v)| format!("{n}={v:?}"))
                    .collect();
                let shown = plain(&format!("{}{{{}}}", family.name, labels.join(",")));
                if !seen.contains(&shown) && seen.len() < 5 {
                    seen.push(shown);
                }
            }
            return Unread::Absent {
                asked,
                instead: Instead::Series(seen),
            };
        }
        let prefixes: Vec<&str> = self.series.iter().map(|s| prefix(&s.family)).collect();
        let similar: Vec<String> = names
            .iter()
            .filter(|name| prefixes.contains(&prefix(name)))
            .take(8)
            .map(|name| plain(name))
            .collect();
        let instead = if similar.is_empty() {
            let mut prefixes: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
            prefixes.dedup();
            Instead::NothingLike(prefixes)
        } else {
            Instead::Similar(similar)
        };
        Unread::Absent { asked, instead }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::prom::families;

    fn query(engine: Engine, signal: Signal, model: Option<&str>) -> Query {
        Query {
            series: table(engine, signal),
            within: signal.within_pod(),
            model: model.map(|m| (engine.model_label().to_string(), m.to_string())),
            gauges_only: false,
            breakdown: breakdown_label(engine),
        }
    }

    fn read(query: &Query, page: &str) -> Result<f64, Unread> {
        let wanted = query.families();
        let found = families(page, &wanted).unwrap();
        let names: Vec<String> = page
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(String::from)
            .collect();
        query.read(&found, &names)
    }

    #[test]
    fn data_parallel_engines_add_up_and_usage_takes_the_fullest() {
        let page = "# TYPE vllm:num_requests_waiting gauge\n\
            vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 3\n\
            vllm:num_requests_waiting{engine=\"1\",model_name=\"m\"} 4\n\
            # TYPE vllm:kv_cache_usage_perc gauge\n\
            vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.25\n\
            vllm:kv_cache_usage_perc{engine=\"1\",model_name=\"m\"} 0.5\n";
        assert_eq!(
            read(&query(Engine::Vllm, Signal::QueueLength, None), page),
            Ok(7.0)
        );
        assert_eq!(
            read(
                &query(Engine::Vllm, Signal::KvCacheUsagePercent, None),
                page
            ),
            Ok(50.0)
        );
    }

    #[test]
    fn rank_copies_count_once() {
        let page = "# TYPE sglang:num_queue_reqs gauge\n\
            sglang:num_queue_reqs{model_name=\"m\",tp_rank=\"0\"} 5\n\
            sglang:num_queue_reqs{model_name=\"m\",tp_rank=\"1\"} 5\n\
            sglang:num_queue_reqs{model_name=\"m\",dp_rank=\"1\",tp_rank=\"0\"} 2\n";
        assert_eq!(
            read(&query(Engine::Sglang, Signal::QueueLength, None), page),
            Ok(7.0)
        );
    }

    #[test]
    fn the_model_filter_keeps_its_series_and_names_the_others() {
        let page = "# TYPE nv_inference_pending_request_count gauge\n\
            nv_inference_pending_request_count{model=\"a\",version=\"1\"} 2\n\
            nv_inference_pending_request_count{model=\"b\",version=\"1\"} 9\n";
        assert_eq!(
            read(&query(Engine::Triton, Signal::QueueLength, Some("b")), page),
            Ok(9.0)
        );
        assert_eq!(
            read(&query(Engine::Triton, Signal::QueueLength, None), page),
            Ok(11.0)
        );
        let missing =
            read(&query(Engine::Triton, Signal::QueueLength, Some("c")), page).unwrap_err();
        assert!(
            missing.to_string().contains("model=\"c\"")
                && missing.to_string().contains(
                    "it has nv_inference_pending_request_count{model=\"a\",version=\"1\"}"
                ),
            "{missing:?}"
        );
    }

    #[test]
    fn newer_names_first_then_the_older_one() {
        let old = "# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc{model_name=\"m\"} 0.4\n";
        assert_eq!(
            read(&query(Engine::Vllm, Signal::KvCacheUsagePercent, None), old),
            Ok(40.0)
        );
        let trt = "# TYPE nv_trt_llm_request_metrics gauge\n\
            nv_trt_llm_request_metrics{model=\"ensemble\",request_type=\"waiting\",version=\"1\"} 6\n\
            nv_trt_llm_request_metrics{model=\"ensemble\",request_type=\"scheduled\",version=\"1\"} 8\n\
            # TYPE nv_inference_pending_request_count gauge\n\
            nv_inference_pending_request_count{model=\"ensemble\",version=\"1\"} 1\n";
        assert_eq!(
            read(&query(Engine::Triton, Signal::QueueLength, None), trt),
            Ok(6.0)
        );
        assert_eq!(
            read(&query(Engine::Triton, Signal::RunningRequests, None), trt),
            Ok(8.0)
        );
    }

    #[test]
    fn an_absent_metric_names_what_the_page_has() {
        let page = "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 1\n\
            # TYPE vllm:cache_config_info gauge\nvllm:cache_config_info 1\n\
            # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3\n";
        let error = read(
            &query(Engine::Vllm, Signal::KvCacheUsagePercent, None),
            page,
        )
        .unwrap_err();
        assert_eq!(
            error,
            Unread::Absent {
                asked: vec![
                    "vllm:kv_cache_usage_perc".into(),
                    "vllm:gpu_cache_usage_perc".into()
                ],
                instead: Instead::Similar(vec![
                    "vllm:num_requests_waiting".into(),
                    "vllm:cache_config_info".into()
                ]),
            }
        );
        assert_eq!(
            error.to_string(),
            "the page has no vllm:kv_cache_usage_perc nor vllm:gpu_cache_usage_perc; it has vllm:num_requests_waiting, vllm:cache_config_info"
        );
    }

    #[test]
    fn custom_gauges_only() {
        let page = "# TYPE vllm:request_success_total counter\nvllm:request_success_total 4\n";
        let query = Query {
            series: vec![series("vllm:request_success_total", &[], 1.0)],
            within: Aggregation::Sum,
            model: None,
            gauges_only: true,
            breakdown: None,
        };
        let error = read(&query, page).unwrap_err();
        assert!(
            matches!(
                error,
                Unread::NotAGauge {
                    kind: Kind::Counter,
                    ..
                }
            ) && error.to_string().contains("is a counter"),
            "{error:?}"
        );
    }

    #[test]
    fn negative_or_nan_is_not_a_value() {
        let page = "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting NaN\n";
        let error = read(&query(Engine::Vllm, Signal::QueueLength, None), page).unwrap_err();
        assert!(matches!(error, Unread::Invalid { .. }), "{error:?}");
    }

    #[test]
    fn one_bad_series_in_a_pod_makes_the_replica_invalid_not_lower() {
        for bad in ["NaN", "+Inf", "-Inf", "-3"] {
            // Summed, a negative series would lower the pod's queue; under
            // max, NaN would vanish. Either way the replica is invalid.
            let page = format!(
                "# TYPE vllm:num_requests_waiting gauge\n\
                 vllm:num_requests_waiting{{engine=\"0\"}} 40\n\
                 vllm:num_requests_waiting{{engine=\"1\"}} {bad}\n\
                 # TYPE vllm:kv_cache_usage_perc gauge\n\
                 vllm:kv_cache_usage_perc{{engine=\"0\"}} 0.9\n\
                 vllm:kv_cache_usage_perc{{engine=\"1\"}} {bad}\n"
            );
            for signal in [Signal::QueueLength, Signal::KvCacheUsagePercent] {
                let error = read(&query(Engine::Vllm, signal, None), &page).unwrap_err();
                assert!(
                    matches!(&error, Unread::Invalid { series, .. } if series.contains("engine=\"1\""))
                        && error.to_string().contains("not a finite number >= 0"),
                    "{bad} {signal}: {error:?}"
                );
            }
        }
        // A rank copy that is NaN is as bad as the series it copies.
        let page = "# TYPE sglang:num_queue_reqs gauge\n\
            sglang:num_queue_reqs{tp_rank=\"0\"} 5\n\
            sglang:num_queue_reqs{tp_rank=\"1\"} NaN\n";
        assert!(matches!(
            read(&query(Engine::Sglang, Signal::QueueLength, None), page),
            Err(Unread::Invalid { .. })
        ));
    }

    #[test]
    fn sglang_priority_scheduling_counts_the_total_once() {
        // metrics_collector.py: the total under priority="", one series
        // per priority beside it, in the same family.
        let page = "# TYPE sglang:num_queue_reqs gauge\n\
            sglang:num_queue_reqs{model_name=\"m\",priority=\"\",tp_rank=\"0\"} 7\n\
            sglang:num_queue_reqs{model_name=\"m\",priority=\"0\",tp_rank=\"0\"} 4\n\
            sglang:num_queue_reqs{model_name=\"m\",priority=\"5\",tp_rank=\"0\"} 3\n\
            # TYPE sglang:num_running_reqs gauge\n\
            sglang:num_running_reqs{model_name=\"m\",priority=\"\",tp_rank=\"0\"} 2\n\
            sglang:num_running_reqs{model_name=\"m\",priority=\"None\",tp_rank=\"0\"} 2\n";
        assert_eq!(
            read(&query(Engine::Sglang, Signal::QueueLength, None), page),
            Ok(7.0)
        );
        assert_eq!(
            read(&query(Engine::Sglang, Signal::RunningRequests, None), page),
            Ok(2.0)
        );
        // Without priority scheduling there is no priority label at all.
        let plain =
            "# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs{model_name=\"m\"} 7\n";
        assert_eq!(
            read(&query(Engine::Sglang, Signal::QueueLength, None), plain),
            Ok(7.0)
        );
    }

    #[test]
    fn a_present_family_without_the_model_is_no_reason_to_fall_back() {
        // engineModel ensemble, while the TensorRT-LLM series name the
        // tensorrt_llm model: the pending count (near 0 for a decoupled
        // model) must not stand in.
        let page = "# TYPE nv_trt_llm_request_metrics gauge\n\
            nv_trt_llm_request_metrics{model=\"tensorrt_llm\",request_type=\"waiting\",version=\"1\"} 30\n\
            # TYPE nv_inference_pending_request_count gauge\n\
            nv_inference_pending_request_count{model=\"ensemble\",version=\"1\"} 0\n";
        let error = read(
            &query(Engine::Triton, Signal::QueueLength, Some("ensemble")),
            page,
        )
        .unwrap_err();
        assert!(
            matches!(&error, Unread::Absent { instead: Instead::Series(seen), .. }
                if seen.iter().any(|s| s.contains("model=\"tensorrt_llm\""))),
            "{error:?}"
        );
        // The family absent from the page: the older count is read.
        let old = "# TYPE nv_inference_pending_request_count gauge\n\
            nv_inference_pending_request_count{model=\"ensemble\",version=\"1\"} 3\n";
        assert_eq!(
            read(
                &query(Engine::Triton, Signal::QueueLength, Some("ensemble")),
                old
            ),
            Ok(3.0)
        );
    }
}
