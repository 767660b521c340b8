//! Trigger configuration: KEDA's `scalerMetadata` map, validated into a
//! [`Trigger`]. Pure functions only; every rejection names the key, the
//! value and what is allowed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

pub use crate::aggregation::Aggregation;
use crate::engine::endpoint::{self, Endpoint};
use crate::engine::signals::{self, Engine, Query, Series, Signal, Windowed};
use crate::engine::window::{Percentile, WindowQuery, WindowSource, DEFAULT_WINDOW, MAX_WINDOW};
use crate::node::gpu_metric::Metric;
use crate::scaling::duration::format_duration;
use crate::untrusted::quoted;

/// Keys this scaler reads. Each also accepts a `<key>FromEnv` twin.
pub const KEYS: [&str; 19] = [
    "profile",
    "metricType",
    "targetValue",
    "targetGpuUtilization",
    "targetMemoryUtilization",
    "activationThreshold",
    "gpuIndex",
    "aggregation",
    "pollIntervalSeconds",
    "workload",
    "podNamePattern",
    "podNamespace",
    "engine",
    "engineEndpoints",
    "engineMetric",
    "engineModel",
    "engineTimeout",
    "engineWindow",
    "percentile",
];

/// Keys KEDA itself reads from the same metadata; passed through, ignored.
pub const KEDA_KEYS: [&str; 7] = [
    "scalerAddress",
    "tlsCertFile",
    "caCert",
    "tlsClientCert",
    "tlsClientKey",
    "enableTLS",
    "unsafeSsl",
];

const FROM_ENV: &str = "FromEnv";
const DEFAULT_TARGET: f64 = 80.0;
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);
const MAX_POLL_INTERVAL_SECONDS: f64 = 3600.0;
/// How long a scrape of every replica may take, by default.
pub const DEFAULT_ENGINE_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest `engineTimeout`; it must also be below the sample interval.
pub const MAX_ENGINE_TIMEOUT: Duration = Duration::from_secs(30);

/// A workload profile: defaults for what is read, target and activation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub name: &'static str,
    pub measure: Measure,
    pub target: f64,
    pub activation_threshold: f64,
}

/// What a trigger reads: a GPU metric, or an engine's signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Gpu(Metric),
    Engine(Engine, Signal),
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Measure::Gpu(metric) => write!(f, "{metric}"),
            Measure::Engine(engine, signal) => write!(f, "{engine} {signal}"),
        }
    }
}

pub const PROFILES: [Profile; 8] = [
    // Not VRAM%: vLLM preallocates ~90% of VRAM at start, idle or busy.
    Profile {
        name: "vllm-inference",
        measure: Measure::Gpu(Metric::GpuUtilization),
        target: 80.0,
        activation_threshold: 5.0,
    },
    Profile {
        name: "triton-inference",
        measure: Measure::Gpu(Metric::GpuUtilization),
        target: 75.0,
        activation_threshold: 10.0,
    },
    // Activation 0 with utilization that never reads exactly 0 under a
    // running job keeps training at its replicas: no scale-to-zero.
    Profile {
        name: "training",
        measure: Measure::Gpu(Metric::GpuUtilization),
        target: 90.0,
        activation_threshold: 0.0,
    },
    Profile {
        name: "batch",
        measure: Measure::Gpu(Metric::MemoryUsedPercent),
        target: 70.0,
        activation_threshold: 1.0,
    },
    // 5 waiting requests per replica: vLLM production-stack's KEDA
    // threshold, and llm-d's queue saturation point. For AverageValue.
    Profile {
        name: "vllm-queue",
        measure: Measure::Engine(Engine::Vllm, Signal::QueueLength),
        target: 5.0,
        activation_threshold: 0.0,
    },
    // 80% KV cache: llm-d's saturation point. For Value.
    Profile {
        name: "vllm-kv-cache",
        measure: Measure::Engine(Engine::Vllm, Signal::KvCacheUsagePercent),
        target: 80.0,
        activation_threshold: 5.0,
    },
    Profile {
        name: "sglang-queue",
        measure: Measure::Engine(Engine::Sglang, Signal::QueueLength),
        target: 5.0,
        activation_threshold: 0.0,
    },
    Profile {
        name: "sglang-kv-cache",
        measure: Measure::Engine(Engine::Sglang, Signal::KvCacheUsagePercent),
        target: 80.0,
        activation_threshold: 5.0,
    },
];

/// Which of the node's GPUs a trigger reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuSelector {
    All,
    Index(u32),
}

/// Which pods' GPUs a trigger reads, instead of the whole node (or fleet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub namespace: String,
    pub pods: PodMatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodMatch {
    /// A Deployment's or StatefulSet's pods, by the names their controllers give.
    Workload(String),
    /// A glob (`*`, `?`) on pod names.
    Pattern(String),
}

impl Selector {
    pub fn matches(&self, namespace: &str, pod: &str) -> bool {
        namespace == self.namespace
            && match &self.pods {
                PodMatch::Workload(name) => is_workload_pod(name, pod),
                PodMatch::Pattern(pattern) => glob_matches(pattern.as_bytes(), pod.as_bytes()),
            }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pods {
            PodMatch::Workload(name) => write!(f, "workload {}/{name}", self.namespace),
            PodMatch::Pattern(pattern) => write!(f, "pods {}/{pattern}", self.namespace),
        }
    }
}

/// `<workload>-<pod-template-hash>-<5 chars>` (Deployment) or
/// `<workload>-<ordinal>` (StatefulSet); so `vllm` never matches
/// `vllm-canary-…`.
pub fn is_workload_pod(workload: &str, pod: &str) -> bool {
    let Some(rest) = pod.strip_prefix(workload).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    let alphanumeric = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match rest.split_once('-') {
        None => !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()),
        Some((hash, suffix)) => {
            hash.len() <= 10 && alphanumeric(hash) && suffix.len() == 5 && alphanumeric(suffix)
        }
    }
}

/// `*` matches any run of characters, `?` any one.
pub fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    p = star + 1;
                    t = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A validated trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub source: Source,
    pub target: f64,
    pub activation_threshold: f64,
    pub aggregation: Aggregation,
    pub poll_interval: Duration,
    pub profile: Option<&'static str>,
    /// `None`: every GPU of the node (or, with peers, of the fleet). With
    /// an engine source: the workload behind the endpoints, to tell a
    /// workload at zero replicas from a name that does not exist.
    pub selector: Option<Selector>,
}

/// Where a trigger's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Gpu { metric: Metric, gpus: GpuSelector },
    Engine(Box<EngineSource>),
}

/// An engine trigger: what to read from every replica behind the endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSource {
    /// `None` only with `engineMetric` and explicit ports.
    pub engine: Option<Engine>,
    pub endpoints: Vec<Endpoint>,
    pub reads: EngineReads,
    pub query: Query,
    /// `engineTimeout`; `None`: [`DEFAULT_ENGINE_TIMEOUT`], or half the
    /// sample interval when that is shorter.
    pub timeout: Option<Duration>,
    /// Rates and latencies (and every `engineMetric`, whose type only the
    /// page tells): read over a window of reads.
    pub window: Option<WindowQuery>,
    /// `aggregation: max` on a latency: the worst replica's own
    /// percentile instead of the merged distribution's.
    pub worst_replica: bool,
}

impl EngineSource {
    /// What a windowed metricType is (`None` for gauges and engineMetric).
    pub fn windowed(&self) -> Option<Windowed> {
        match self.reads {
            EngineReads::Signal(signal) => signal.windowed(),
            EngineReads::Metric(_) => None,
        }
    }

    /// Every family a round must keep for this trigger.
    pub fn wants(&self) -> Vec<crate::engine::prom::Want> {
        let mut wants = self.query.wants();
        if let Some(window) = &self.window {
            wants.extend(window.wants());
        }
        wants.sort();
        wants.dedup();
        wants
    }

    /// `engineWindow` against this scaler's sample interval: at least two
    /// intervals, so that a window can hold two reads.
    pub fn check_window(&self, sample_interval: Duration) -> Result<(), ConfigError> {
        match &self.window {
            Some(window) if window.window < 2 * sample_interval => Err(ConfigError(format!(
                "invalid engineWindow {}: it must be at least twice this scaler's sample interval ({}), so that it can hold two reads",
                format_duration(window.window),
                format_duration(sample_interval)
            ))),
            _ => Ok(()),
        }
    }

    /// The deadline for one scrape of every replica, with this sample
    /// interval; an explicit `engineTimeout` at or above it is an error.
    pub fn timeout(&self, sample_interval: Duration) -> Result<Duration, ConfigError> {
        match self.timeout {
            None => Ok(DEFAULT_ENGINE_TIMEOUT.min(sample_interval / 2)),
            Some(timeout) if timeout < sample_interval => Ok(timeout),
            Some(timeout) => Err(ConfigError(format!(
                "invalid engineTimeout {}: it must be below this scaler's sample interval ({})",
                format_duration(timeout),
                format_duration(sample_interval)
            ))),
        }
    }
}

/// What an engine trigger reads, as the user named it.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineReads {
    Signal(Signal),
    /// `engineMetric`, as given.
    Metric(String),
}

impl fmt::Display for EngineReads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineReads::Signal(signal) => write!(f, "metricType={signal}"),
            EngineReads::Metric(text) => write!(f, "engineMetric={text}"),
        }
    }
}

impl Trigger {
    /// The metric name in GetMetricSpec: deterministic, `[a-z0-9-]` only.
    pub fn metric_name(&self) -> String {
        match &self.source {
            Source::Gpu { metric, gpus } => {
                let metric = metric.name().replace('_', "-");
                match gpus {
                    GpuSelector::All => format!("{metric}-{}", self.aggregation.name()),
                    GpuSelector::Index(index) => format!("{metric}-gpu{index}"),
                }
            }
            Source::Engine(source) => {
                let engine = source.engine.map_or("engine", Engine::name);
                let what = match &source.reads {
                    EngineReads::Signal(signal) if signal.windowed() == Some(Windowed::Latency) => {
                        let percentile = source
                            .window
                            .as_ref()
                            .map_or(Percentile::DEFAULT, |w| w.percentile);
                        let worst = if source.worst_replica { "-worst" } else { "" };
                        return format!(
                            "{engine}-{}-{}{worst}",
                            signal.name().replace('_', "-"),
                            percentile.to_string().replace('.', "-")
                        );
                    }
                    EngineReads::Signal(signal) => signal.name().replace('_', "-"),
                    EngineReads::Metric(text) => {
                        format!(
                            "{}-{:08x}",
                            kubernetes_safe(&source.query.series[0].family),
                            fnv(text)
                        )
                    }
                };
                format!("{engine}-{what}-{}", self.aggregation.name())
            }
        }
    }

    /// Active when the value is strictly above the activation threshold.
    pub fn is_active(&self, value: f64) -> bool {
        value > self.activation_threshold
    }

    /// The engine source, for engine triggers.
    pub fn engine(&self) -> Option<&EngineSource> {
        match &self.source {
            Source::Engine(source) => Some(source),
            Source::Gpu { .. } => None,
        }
    }
}

/// Lowercase letters, digits and single '-', at most 48 characters.
fn kubernetes_safe(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.truncate(48);
    out.trim_end_matches('-').to_string()
}

/// FNV-1a, 32 bits: a stable short hash for metric names.
fn fnv(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |hash, b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(profile) = self.profile {
            write!(f, "profile={profile} ")?;
        }
        match &self.source {
            Source::Gpu { metric, gpus } => {
                let gpus = match gpus {
                    GpuSelector::All => String::from("all"),
                    GpuSelector::Index(index) => index.to_string(),
                };
                write!(f, "metricType={metric} gpuIndex={gpus} ")?;
            }
            Source::Engine(source) => {
                if let Some(engine) = source.engine {
                    write!(f, "engine={engine} ")?;
                }
                let endpoints: Vec<String> =
                    source.endpoints.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "{} engineEndpoints={} ",
                    source.reads,
                    endpoints.join(",")
                )?;
                if let Some((_, model)) = &source.query.model {
                    write!(f, "engineModel={model} ")?;
                }
                if let Some(timeout) = source.timeout {
                    write!(f, "engineTimeout={} ", format_duration(timeout))?;
                }
                if let (Some(window), Some(_)) = (&source.window, source.windowed()) {
                    write!(f, "engineWindow={} ", format_duration(window.window))?;
                    if source.windowed() == Some(Windowed::Latency) {
                        write!(f, "percentile={} ", window.percentile)?;
                    }
                }
            }
        }
        let merged = self
            .engine()
            .is_some_and(|e| e.windowed() == Some(Windowed::Latency) && !e.worst_replica);
        write!(
            f,
            "targetValue={} activationThreshold={} aggregation={} pollIntervalSeconds={}",
            self.target,
            self.activation_threshold,
            if merged {
                "merged"
            } else {
                self.aggregation.name()
            },
            self.poll_interval.as_secs_f64()
        )?;
        if let Some(selector) = &self.selector {
            write!(f, " {selector}")?;
        }
        Ok(())
    }
}

/// A metadata problem, reported to KEDA as INVALID_ARGUMENT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// A value as given, with the key it came under (`targetValue` or `targetValueFromEnv`).
struct Given<'a> {
    key: &'a str,
    value: &'a str,
}

/// Parses KEDA's `scalerMetadata` into a trigger. `namespace` is the
/// ScaledObject's, the default for `podNamespace`.
pub fn parse(metadata: &HashMap<String, String>, namespace: &str) -> Result<Trigger, ConfigError> {
    let given = collect(metadata)?;
    let get = |key: &str| given.get(key);

    let profile = get("profile").map(parse_profile).transpose()?;
    let metric_type = get("metricType").map(parse_metric).transpose()?;
    let target_value = get("targetValue").map(parse_target).transpose()?;
    let shorthand = parse_shorthand(&given)?;
    let activation = get("activationThreshold")
        .map(parse_activation)
        .transpose()?;
    let gpus = get("gpuIndex").map(parse_gpu_index).transpose()?;
    let aggregation = get("aggregation").map(parse_aggregation).transpose()?;
    let poll_interval = get("pollIntervalSeconds")
        .map(parse_poll_interval)
        .transpose()?;
    let selector = parse_selector(&given, namespace)?;

    let (measure, target) = match shorthand {
        Some((short, metric, target)) => {
            if let (Some(explicit), Some(given)) = (metric_type, get("metricType")) {
                if explicit != MetricType::Gpu(metric) {
                    return Err(ConfigError(format!(
                        "{} sets metricType {metric}, but {} is {:?}; remove one",
                        short.key, given.key, given.value
                    )));
                }
            }
            if let Some(given) = get("targetValue") {
                return Err(ConfigError(format!(
                    "{} and {} both set the target; use one",
                    short.key, given.key
                )));
            }
            (Some(Measure::Gpu(metric)), Some(target))
        }
        None => {
            let engine = get("engine").map(parse_engine).transpose()?;
            let measure = match (metric_type, profile.map(|p| p.measure)) {
                (Some(MetricType::Gpu(metric)), _) => Some(Measure::Gpu(metric)),
                (Some(MetricType::Engine(signal)), Some(Measure::Engine(engine, _))) => {
                    Some(Measure::Engine(engine, signal))
                }
                (Some(MetricType::Engine(signal)), _) => match engine {
                    Some(engine) => Some(Measure::Engine(engine, signal)),
                    None => {
                        return Err(ConfigError(format!(
                        "metricType {signal} reads an inference engine: set engine to one of {}",
                        engine_names()
                    )))
                    }
                },
                (None, from_profile) => from_profile,
            };
            let target = match (target_value, profile) {
                (Some(target), _) => Some(target),
                (None, Some(p)) if Some(p.measure) == measure => Some(p.target),
                (None, Some(p)) if measure.is_some() => {
                    return Err(ConfigError(format!(
                        "profile {:?} has a target for {}, not for metricType {}; set targetValue",
                        p.name,
                        p.measure,
                        get("metricType").map_or("", |g| g.value)
                    )))
                }
                (None, _) => None,
            };
            (measure, target)
        }
    };

    let source = parse_source(&given, measure, profile)?;
    if let (Some(p), Some(custom), None) = (profile, get("engineMetric"), target_value) {
        return Err(ConfigError(format!(
            "profile {:?} has a target for {}, not for {}; set targetValue",
            p.name, p.measure, custom.key
        )));
    }
    let target = match (&source, target) {
        (_, Some(target)) => target,
        (Source::Gpu { .. }, None) => DEFAULT_TARGET,
        (Source::Engine(engine), None) => {
            return Err(ConfigError(format!(
            "{} has no default target; set targetValue ({}) or use a profile ({})",
            engine.reads,
            match &engine.reads {
                EngineReads::Signal(Signal::QueueLength) => "waiting requests per replica",
                EngineReads::Signal(Signal::RunningRequests) => "running requests per replica",
                EngineReads::Signal(Signal::KvCacheUsagePercent) => "a percent of KV cache, 0-100",
                EngineReads::Signal(Signal::RequestRate) =>
                    "requests per second one replica sustains, with KEDA metricType AverageValue",
                EngineReads::Signal(Signal::PromptTokensRate | Signal::GenerationTokensRate) =>
                    "tokens per second one replica sustains, with KEDA metricType AverageValue",
                EngineReads::Signal(_) => "the SLO in seconds, with KEDA metricType Value",
                EngineReads::Metric(_) => "in the metric's own unit",
            },
            engine_profile_names()
        )))
        }
    };
    let source = match (source, gpus) {
        (Source::Gpu { metric, .. }, gpus) => Source::Gpu {
            metric,
            gpus: gpus.unwrap_or(GpuSelector::All),
        },
        (Source::Engine(_), Some(_)) => {
            return Err(ConfigError(format!(
                "{} selects a GPU, but this trigger reads an engine's /metrics; remove it",
                get("gpuIndex").map_or("gpuIndex", |g| g.key)
            )))
        }
        (source, None) => source,
    };
    let default_aggregation = match &source {
        Source::Gpu { .. } => Aggregation::Max,
        Source::Engine(engine) => match engine.reads {
            EngineReads::Signal(Signal::KvCacheUsagePercent) => Aggregation::Avg,
            EngineReads::Signal(signal) if signal.windowed() == Some(Windowed::Latency) => {
                Aggregation::Max
            }
            _ => Aggregation::Sum,
        },
    };
    let source = match (source, aggregation) {
        (Source::Engine(mut engine), given_aggregation) if engine.windowed().is_some() => {
            let key = get("aggregation").map_or("aggregation", |g| g.key);
            match (engine.windowed(), given_aggregation) {
                (Some(Windowed::Rate), Some(a)) if a != Aggregation::Sum => {
                    return Err(ConfigError(format!(
                        "invalid {key} {:?} for {}: rates add up across replicas; expected sum (the default)",
                        a.name(),
                        engine.reads
                    )))
                }
                (Some(Windowed::Latency), Some(Aggregation::Max)) => engine.worst_replica = true,
                (Some(Windowed::Latency), Some(a)) => {
                    return Err(ConfigError(format!(
                        "invalid {key} {:?} for {}: a latency is the percentile of every replica's requests merged (leave aggregation out), or the worst replica's own (max); averaging replicas' percentiles gives a different, wrong number",
                        a.name(),
                        engine.reads
                    )))
                }
                _ => {}
            }
            Source::Engine(engine)
        }
        (Source::Engine(mut engine), Some(Aggregation::Max))
            if matches!(engine.reads, EngineReads::Metric(_)) =>
        {
            engine.worst_replica = true;
            Source::Engine(engine)
        }
        (source, _) => source,
    };
    let aggregation = aggregation.unwrap_or(default_aggregation);
    let source = match source {
        Source::Engine(mut engine) if matches!(engine.reads, EngineReads::Metric(_)) => {
            engine.query.within = aggregation;
            Source::Engine(engine)
        }
        source => source,
    };

    Ok(Trigger {
        source,
        target,
        activation_threshold: activation
            .or(profile.map(|p| p.activation_threshold))
            .unwrap_or(0.0),
        aggregation,
        poll_interval: poll_interval.unwrap_or(DEFAULT_POLL_INTERVAL),
        profile: profile.map(|p| p.name),
        selector,
    })
}

/// A `metricType`: a GPU metric or an engine signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetricType {
    Gpu(Metric),
    Engine(Signal),
}

const ENGINE_KEYS: [&str; 7] = [
    "engine",
    "engineEndpoints",
    "engineMetric",
    "engineModel",
    "engineTimeout",
    "engineWindow",
    "percentile",
];

fn engine_names() -> String {
    let names: Vec<&str> = Engine::ALL.iter().map(|e| e.name()).collect();
    names.join(", ")
}

fn engine_profile_names() -> String {
    let names: Vec<&str> = PROFILES
        .iter()
        .filter(|p| matches!(p.measure, Measure::Engine(..)))
        .map(|p| p.name)
        .collect();
    names.join(", ")
}

/// The GPU or engine source; the engine keys are checked against what
/// the trigger reads.
fn parse_source(
    given: &BTreeMap<&'static str, Given<'_>>,
    measure: Option<Measure>,
    profile: Option<Profile>,
) -> Result<Source, ConfigError> {
    let get = |key: &str| given.get(key);
    let custom = get("engineMetric");
    let (engine, reads) = match (measure, custom) {
        (Some(Measure::Engine(..)), Some(custom)) | (Some(Measure::Gpu(_)), Some(custom))
            if get("metricType").is_some() =>
        {
            return Err(ConfigError(format!(
                "{} and {} both choose what is read; use one",
                get("metricType").map_or("metricType", |g| g.key),
                custom.key
            )))
        }
        (Some(Measure::Gpu(_)), None) | (None, None) => {
            let metric = match measure {
                Some(Measure::Gpu(metric)) => metric,
                _ => Metric::GpuUtilization,
            };
            if let Some(key) = ENGINE_KEYS.iter().find_map(|k| get(k)) {
                return Err(ConfigError(format!(
                    "{} applies to engine triggers, but metricType is {metric}; set metricType to one of {} or engineMetric, or remove it",
                    key.key,
                    Signal::ALL.map(Signal::name).join(", ")
                )));
            }
            return Ok(Source::Gpu {
                metric,
                gpus: GpuSelector::All,
            });
        }
        (Some(Measure::Engine(engine, signal)), None) => {
            (Some(engine), EngineReads::Signal(signal))
        }
        (_, Some(custom)) => {
            let engine = match get("engine").map(parse_engine).transpose()? {
                Some(engine) => Some(engine),
                None => profile.and_then(|p| match p.measure {
                    Measure::Engine(engine, _) => Some(engine),
                    Measure::Gpu(_) => None,
                }),
            };
            (engine, EngineReads::Metric(custom.value.to_string()))
        }
    };
    if let (Some(profile), Some(given)) = (profile, get("engine")) {
        if let Measure::Engine(profile_engine, _) = profile.measure {
            if Some(profile_engine) != engine || parse_engine(given)? != profile_engine {
                return Err(ConfigError(format!(
                    "profile {:?} reads {profile_engine}, but {} is {:?}; remove one",
                    profile.name, given.key, given.value
                )));
            }
        }
    }
    let Some(endpoints) = get("engineEndpoints") else {
        return Err(ConfigError(format!(
            "{reads} reads every replica's /metrics: set engineEndpoints (a headless Service name, e.g. vllm.ml.svc.cluster.local{})",
            engine.map_or(String::from(":PORT"), |e| format!(":{}", e.default_port()))
        )));
    };
    let endpoints_list = endpoint::parse_list_with(
        endpoints.value,
        engine.map(Engine::default_port),
        engine.map_or("/metrics", Engine::default_path),
    )
    .map_err(|e| {
        ConfigError(format!(
            "invalid {} {:?}: {e}",
            endpoints.key, endpoints.value
        ))
    })?;
    let model = match get("engineModel") {
        None => None,
        Some(model) => match engine {
            Some(engine) => Some((engine.model_label().to_string(), model.value.to_string())),
            None => {
                return Err(ConfigError(format!(
                    "{} needs engine (it names the model label: model_name for vllm and sglang, model for triton); or match the label in engineMetric",
                    model.key
                )))
            }
        },
    };
    let timeout = get("engineTimeout").map(parse_engine_timeout).transpose()?;
    let (series, within, gauges_only) = match &reads {
        EngineReads::Signal(signal) => (
            signals::table(engine.expect("a signal comes with its engine"), *signal),
            signal.within_pod(),
            false,
        ),
        EngineReads::Metric(_) => {
            let custom = get("engineMetric").expect("engineMetric was given");
            (vec![parse_engine_metric(custom)?], Aggregation::Sum, false)
        }
    };
    let breakdown = engine.and_then(signals::breakdown_label);
    let window = parse_window(given, engine, &reads, &series, &model)?;
    Ok(Source::Engine(Box::new(EngineSource {
        engine,
        endpoints: endpoints_list,
        reads,
        query: Query {
            series,
            within,
            model,
            gauges_only,
            breakdown,
        },
        timeout,
        window,
        worst_replica: false,
    })))
}

/// The window a rate, a latency or an `engineMetric` is read over, with
/// `percentile` and `engineWindow` checked against what is read.
fn parse_window(
    given: &BTreeMap<&'static str, Given<'_>>,
    engine: Option<Engine>,
    reads: &EngineReads,
    series: &[Series],
    model: &Option<(String, String)>,
) -> Result<Option<WindowQuery>, ConfigError> {
    let get = |key: &str| given.get(key);
    let percentile = get("percentile").map(parse_percentile).transpose()?;
    let window = get("engineWindow").map(parse_engine_window).transpose()?;
    let source = match reads {
        EngineReads::Signal(signal) => match signal.windowed() {
            None => {
                if let Some(key) = get("percentile").or(get("engineWindow")) {
                    return Err(ConfigError(format!(
                        "{} applies to rates and latencies (request_rate, prompt_tokens_rate, generation_tokens_rate, ttft_seconds, itl_seconds, e2e_latency_seconds, queue_time_seconds) and engineMetric; metricType {signal} is a gauge, read as it stands",
                        key.key
                    )));
                }
                return Ok(None);
            }
            Some(kind) => {
                let engine = engine.expect("a signal comes with its engine");
                if let (Windowed::Rate, Some(given)) = (kind, get("percentile")) {
                    return Err(ConfigError(format!(
                        "{} applies to latencies (ttft_seconds, itl_seconds, e2e_latency_seconds, queue_time_seconds) and histograms; metricType {signal} is a rate",
                        given.key
                    )));
                }
                let source = signals::window_source(engine, *signal).map_err(|why| {
                    ConfigError(format!(
                        "engine {engine} has no source for metricType {signal}: {why}"
                    ))
                })?;
                if let (WindowSource::Ratio { sum, .. }, Some(Percentile::Quantile(_))) =
                    (&source, percentile.or(Some(Percentile::DEFAULT)))
                {
                    return Err(ConfigError(format!(
                        "engine {engine} has no histogram for metricType {signal}, only a total ({}) to divide by a count: set percentile to mean (its percentiles exist only as a summary, each replica's own, which cannot be merged)",
                        sum.family
                    )));
                }
                source
            }
        },
        EngineReads::Metric(_) => WindowSource::Typed({
            let wanted = &series[0];
            let mut names = signals::counter_names(&wanted.family);
            for name in &mut names {
                name.matchers = wanted.matchers.clone();
            }
            names
        }),
    };
    let gauge = |signal: Signal| {
        engine.map(|engine| Query {
            series: signals::table(engine, signal),
            within: signal.within_pod(),
            model: model.clone(),
            gauges_only: false,
            breakdown: signals::breakdown_label(engine),
        })
    };
    Ok(Some(WindowQuery {
        source,
        model: model.clone(),
        breakdown: engine.and_then(signals::breakdown_label),
        percentile: percentile.unwrap_or(Percentile::DEFAULT),
        percentile_given: percentile.is_some(),
        window: window.unwrap_or(DEFAULT_WINDOW),
        waiting: gauge(Signal::QueueLength),
        running: gauge(Signal::RunningRequests),
    }))
}

fn parse_percentile(given: &Given<'_>) -> Result<Percentile, ConfigError> {
    const EXPECTED: &str = "a quantile strictly between 0 and 1 (e.g. 0.9 or 0.99), or mean";
    if given.value == "mean" {
        return Ok(Percentile::Mean);
    }
    number(given, EXPECTED, |q| q > 0.0 && q < 1.0).map(Percentile::Quantile)
}

fn parse_engine_window(given: &Given<'_>) -> Result<Duration, ConfigError> {
    let expected = format!(
        "a duration of at most {}, e.g. 60s or 5m (a bare number is seconds; at least twice the sample interval)",
        format_duration(MAX_WINDOW)
    );
    parse_duration_up_to(given, MAX_WINDOW, &expected)
}

/// A duration above 0 and at most `max`: `500ms`, `5m`, or a number of
/// seconds.
fn parse_duration_up_to(
    given: &Given<'_>,
    max: Duration,
    expected: &str,
) -> Result<Duration, ConfigError> {
    let parsed = match given.value.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 => {
            Duration::try_from_secs_f64(seconds).ok()
        }
        Ok(_) => None,
        Err(_) => crate::scaling::duration::parse_duration(given.value).ok(),
    };
    match parsed {
        Some(duration) if !duration.is_zero() && duration <= max => Ok(duration),
        _ => Err(invalid(given, expected)),
    }
}

fn parse_engine(given: &Given<'_>) -> Result<Engine, ConfigError> {
    Engine::from_name(given.value)
        .ok_or_else(|| invalid(given, &format!("one of {}", engine_names())))
}

fn parse_engine_timeout(given: &Given<'_>) -> Result<Duration, ConfigError> {
    let expected = format!(
        "a duration above 0 and at most {}s, e.g. 500ms or 1s (a bare number is seconds)",
        MAX_ENGINE_TIMEOUT.as_secs()
    );
    parse_duration_up_to(given, MAX_ENGINE_TIMEOUT, &expected)
}

/// `name` or `name{label="value",...}`: a family and equality matchers.
fn parse_engine_metric(given: &Given<'_>) -> Result<Series, ConfigError> {
    const EXPECTED: &str = "a metric name with optional label matchers, e.g. vllm:num_requests_waiting{model_name=\"llama-3-8b\"}";
    let text = given.value;
    let name_end = text.find('{').unwrap_or(text.len());
    let name = &text[..name_end];
    let valid_name = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if !valid_name {
        return Err(invalid(given, EXPECTED));
    }
    let (matchers, rest) = crate::engine::prom::parse_labels(&text[name_end..])
        .map_err(|e| invalid(given, &format!("{EXPECTED} ({e})")))?;
    if !rest.trim().is_empty() {
        return Err(invalid(
            given,
            &format!("{EXPECTED} (only '=' matchers; {rest:?} follows them)"),
        ));
    }
    Ok(Series {
        family: name.to_string(),
        matchers,
        scale: 1.0,
    })
}

fn parse_selector(
    given: &BTreeMap<&'static str, Given<'_>>,
    namespace: &str,
) -> Result<Option<Selector>, ConfigError> {
    const NAME: &str = "a Kubernetes name: lowercase letters, digits and '-', starting and ending with a letter or digit";
    let is_name = |v: &str| {
        v.len() <= 253
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    let pods = match (given.get("workload"), given.get("podNamePattern")) {
        (Some(a), Some(b)) => {
            return Err(ConfigError(format!(
                "{} and {} are both set; use one",
                a.key, b.key
            )))
        }
        (Some(workload), None) if is_name(workload.value) => {
            Some(PodMatch::Workload(workload.value.to_string()))
        }
        (Some(workload), None) => return Err(invalid(workload, NAME)),
        (None, Some(pattern)) => {
            let ok = pattern.value.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'-' | b'.' | b'*' | b'?')
            });
            if !ok {
                return Err(invalid(
                    pattern,
                    "a glob of pod-name characters, '*' and '?'",
                ));
            }
            Some(PodMatch::Pattern(pattern.value.to_string()))
        }
        (None, None) => None,
    };
    let pod_namespace = given.get("podNamespace");
    match (pods, pod_namespace) {
        (None, Some(ns)) => Err(ConfigError(format!(
            "{} needs workload or podNamePattern",
            ns.key
        ))),
        (None, None) => Ok(None),
        (Some(_), Some(ns)) if !is_name(ns.value) => Err(invalid(ns, NAME)),
        (Some(pods), ns) => Ok(Some(Selector {
            namespace: ns.map_or(namespace, |ns| ns.value).to_string(),
            pods,
        })),
    }
}

/// Maps each known key to its value, folding `<key>FromEnv` twins and
/// rejecting duplicates, unknown keys and near-miss spellings.
fn collect(
    metadata: &HashMap<String, String>,
) -> Result<BTreeMap<&'static str, Given<'_>>, ConfigError> {
    let mut given: BTreeMap<&'static str, Given<'_>> = BTreeMap::new();
    let mut keys: Vec<&String> = metadata.keys().collect();
    keys.sort();
    for key in keys {
        if KEDA_KEYS.contains(&key.as_str()) {
            continue;
        }
        let base = key.strip_suffix(FROM_ENV).unwrap_or(key);
        let Some(known) = KEYS.iter().find(|k| **k == base) else {
            return Err(unknown_key(key));
        };
        let value = Given {
            key,
            value: metadata[key].trim(),
        };
        if let Some(previous) = given.insert(known, value) {
            return Err(ConfigError(format!(
                "{} and {key} are both set; use one",
                previous.key
            )));
        }
    }
    for value in given.values() {
        if value.value.is_empty() {
            return Err(ConfigError(format!(
                "{} is empty; remove it or give a value",
                value.key
            )));
        }
    }
    Ok(given)
}

fn unknown_key(key: &str) -> ConfigError {
    let lower = key.to_ascii_lowercase();
    let twin_lower = FROM_ENV.to_ascii_lowercase();
    let suggestion = KEYS.iter().find_map(|known| {
        let known_lower = known.to_ascii_lowercase();
        if lower == known_lower {
            Some(known.to_string())
        } else if lower == format!("{known_lower}{twin_lower}") {
            Some(format!("{known}{FROM_ENV}"))
        } else {
            None
        }
    });
    match suggestion {
        Some(right) => ConfigError(format!(
            "unknown metadata key {key:?}: did you mean {right:?}? keys are case-sensitive"
        )),
        None => ConfigError(format!(
            "unknown metadata key {key:?}; known keys: {} (each also as <key>FromEnv)",
            KEYS.join(", ")
        )),
    }
}

fn parse_profile(given: &Given<'_>) -> Result<Profile, ConfigError> {
    PROFILES
        .iter()
        .find(|p| p.name == given.value)
        .copied()
        .ok_or_else(|| {
            let names: Vec<&str> = PROFILES.iter().map(|p| p.name).collect();
            invalid(given, &format!("one of {}", names.join(", ")))
        })
}

fn parse_metric(given: &Given<'_>) -> Result<MetricType, ConfigError> {
    if let Some(metric) = Metric::from_name(given.value) {
        return Ok(MetricType::Gpu(metric));
    }
    Signal::from_name(given.value)
        .map(MetricType::Engine)
        .ok_or_else(|| {
            invalid(
                given,
                &format!(
                    "one of {} (GPU), or {} (engine)",
                    Metric::names(),
                    Signal::ALL.map(Signal::name).join(", ")
                ),
            )
        })
}

fn parse_aggregation(given: &Given<'_>) -> Result<Aggregation, ConfigError> {
    Aggregation::ALL
        .into_iter()
        .find(|a| a.name() == given.value)
        .ok_or_else(|| invalid(given, "one of max, min, avg, sum, p95, p99"))
}

fn parse_target(given: &Given<'_>) -> Result<f64, ConfigError> {
    number(given, "a finite number > 0", |v| v > 0.0)
}

fn parse_activation(given: &Given<'_>) -> Result<f64, ConfigError> {
    number(given, "a finite number >= 0", |v| v >= 0.0)
}

fn parse_poll_interval(given: &Given<'_>) -> Result<Duration, ConfigError> {
    let expected = format!("a number of seconds from 0.001 to {MAX_POLL_INTERVAL_SECONDS}");
    // At least 1 ms: a value that rounds to nothing is no interval.
    let seconds = number(given, &expected, |v| {
        (0.001..=MAX_POLL_INTERVAL_SECONDS).contains(&v)
    })?;
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_gpu_index(given: &Given<'_>) -> Result<GpuSelector, ConfigError> {
    const EXPECTED: &str = "an integer: -1 for all GPUs, or a GPU index >= 0";
    match given.value.parse::<i64>() {
        Ok(-1) => Ok(GpuSelector::All),
        Ok(index) => u32::try_from(index)
            .map(GpuSelector::Index)
            .map_err(|_| invalid(given, EXPECTED)),
        Err(_) => Err(invalid(given, EXPECTED)),
    }
}

/// `targetGpuUtilization` / `targetMemoryUtilization`: (key, metric, target).
fn parse_shorthand<'a>(
    given: &'a BTreeMap<&'static str, Given<'a>>,
) -> Result<Option<(&'a Given<'a>, Metric, f64)>, ConfigError> {
    let gpu = given.get("targetGpuUtilization");
    let memory = given.get("targetMemoryUtilization");
    match (gpu, memory) {
        (Some(a), Some(b)) => Err(ConfigError(format!(
            "{} and {} are both set; use one",
            a.key, b.key
        ))),
        (Some(g), None) => Ok(Some((g, Metric::GpuUtilization, parse_target(g)?))),
        (None, Some(m)) => Ok(Some((m, Metric::MemoryUsedPercent, parse_target(m)?))),
        (None, None) => Ok(None),
    }
}

fn number(given: &Given<'_>, expected: &str, ok: impl Fn(f64) -> bool) -> Result<f64, ConfigError> {
    match given.value.parse::<f64>() {
        Ok(v) if v.is_finite() && ok(v) => Ok(v),
        _ => Err(invalid(given, expected)),
    }
}

fn invalid(given: &Given<'_>, expected: &str) -> ConfigError {
    ConfigError(format!(
        "invalid {} {}: expected {expected}",
        given.key,
        quoted(given.value)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_pairs(pairs: &[(&str, &str)]) -> Result<Trigger, ConfigError> {
        let metadata = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(&metadata, "ml")
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        parse_pairs(pairs).expect_err("should be rejected").0
    }

    fn metric_of(trigger: &Trigger) -> Metric {
        match trigger.source {
            Source::Gpu { metric, .. } => metric,
            Source::Engine(_) => panic!("an engine trigger: {trigger}"),
        }
    }

    fn gpus_of(trigger: &Trigger) -> GpuSelector {
        match trigger.source {
            Source::Gpu { gpus, .. } => gpus,
            Source::Engine(_) => panic!("an engine trigger: {trigger}"),
        }
    }

    #[test]
    fn defaults_without_any_key() {
        let trigger = parse_pairs(&[("scalerAddress", "keda-gpu-scaler.keda:6000")]).unwrap();
        assert_eq!(
            trigger,
            Trigger {
                source: Source::Gpu {
                    metric: Metric::GpuUtilization,
                    gpus: GpuSelector::All,
                },
                target: 80.0,
                activation_threshold: 0.0,
                aggregation: Aggregation::Max,
                poll_interval: Duration::from_secs(10),
                profile: None,
                selector: None,
            }
        );
        assert_eq!(trigger.metric_name(), "gpu-utilization-max");
    }

    #[test]
    fn keda_owned_keys_are_ignored() {
        let pairs: Vec<(&str, &str)> = KEDA_KEYS.iter().map(|k| (*k, "x")).collect();
        assert!(parse_pairs(&pairs).is_ok());
    }

    #[test]
    fn every_profile_sets_its_defaults() {
        let expected = [
            ("vllm-inference", Metric::GpuUtilization, 80.0, 5.0),
            ("triton-inference", Metric::GpuUtilization, 75.0, 10.0),
            ("training", Metric::GpuUtilization, 90.0, 0.0),
            ("batch", Metric::MemoryUsedPercent, 70.0, 1.0),
        ];
        for (name, metric, target, activation) in expected {
            let trigger = parse_pairs(&[("profile", name)]).unwrap();
            assert_eq!(metric_of(&trigger), metric, "{name}");
            assert_eq!(trigger.target, target, "{name}");
            assert_eq!(trigger.activation_threshold, activation, "{name}");
            assert_eq!(trigger.profile, Some(name));
        }
    }

    #[test]
    fn explicit_keys_override_profile_defaults() {
        let trigger = parse_pairs(&[
            ("profile", "vllm-inference"),
            ("targetValue", "60"),
            ("activationThreshold", "2.5"),
        ])
        .unwrap();
        assert_eq!((trigger.target, trigger.activation_threshold), (60.0, 2.5));
        let trigger = parse_pairs(&[
            ("profile", "vllm-inference"),
            ("metricType", "power_draw"),
            ("targetValue", "300"),
        ])
        .unwrap();
        assert_eq!(
            (metric_of(&trigger), trigger.target),
            (Metric::PowerDraw, 300.0)
        );
    }

    #[test]
    fn overriding_the_profile_metric_needs_a_target() {
        let message = error(&[("profile", "batch"), ("metricType", "power_draw")]);
        assert!(message.contains("set targetValue"), "{message}");
    }

    #[test]
    fn shorthands_set_metric_and_target() {
        let trigger = parse_pairs(&[("targetGpuUtilization", "65")]).unwrap();
        assert_eq!(
            (metric_of(&trigger), trigger.target),
            (Metric::GpuUtilization, 65.0)
        );
        let trigger = parse_pairs(&[("targetMemoryUtilization", "50")]).unwrap();
        assert_eq!(
            (metric_of(&trigger), trigger.target),
            (Metric::MemoryUsedPercent, 50.0)
        );
        let trigger = parse_pairs(&[("profile", "batch"), ("targetGpuUtilization", "40")]).unwrap();
        assert_eq!(
            (metric_of(&trigger), trigger.target),
            (Metric::GpuUtilization, 40.0)
        );
        // Agreeing with metricType is fine.
        assert!(parse_pairs(&[
            ("targetGpuUtilization", "65"),
            ("metricType", "gpu_utilization")
        ])
        .is_ok());
    }

    #[test]
    fn both_shorthands_are_rejected() {
        let message = error(&[
            ("targetGpuUtilization", "60"),
            ("targetMemoryUtilization", "60"),
        ]);
        assert_eq!(
            message,
            "targetGpuUtilization and targetMemoryUtilization are both set; use one"
        );
    }

    #[test]
    fn shorthand_contradicting_metric_type_is_rejected() {
        let message = error(&[
            ("targetMemoryUtilization", "60"),
            ("metricType", "gpu_utilization"),
        ]);
        assert!(
            message.contains("targetMemoryUtilization sets metricType memory_used_percent"),
            "{message}"
        );
    }

    #[test]
    fn shorthand_with_target_value_is_rejected() {
        let message = error(&[("targetGpuUtilization", "60"), ("targetValue", "70")]);
        assert_eq!(
            message,
            "targetGpuUtilization and targetValue both set the target; use one"
        );
    }

    #[test]
    fn from_env_twins_are_accepted() {
        let trigger =
            parse_pairs(&[("targetValueFromEnv", "42"), ("profileFromEnv", "training")]).unwrap();
        assert_eq!(trigger.target, 42.0);
        assert_eq!(trigger.profile, Some("training"));
        let message = error(&[("gpuIndexFromEnv", "x")]);
        assert!(
            message.starts_with("invalid gpuIndexFromEnv \"x\""),
            "{message}"
        );
    }

    #[test]
    fn key_with_its_twin_is_rejected() {
        let message = error(&[("targetValue", "60"), ("targetValueFromEnv", "70")]);
        assert_eq!(
            message,
            "targetValue and targetValueFromEnv are both set; use one"
        );
    }

    #[test]
    fn wrong_case_key_suggests_the_spelling() {
        let message = error(&[("targetvalue", "60")]);
        assert_eq!(
            message,
            "unknown metadata key \"targetvalue\": did you mean \"targetValue\"? keys are case-sensitive"
        );
        let message = error(&[("GPUINDEXfromenv", "1")]);
        assert!(
            message.contains("did you mean \"gpuIndexFromEnv\""),
            "{message}"
        );
    }

    #[test]
    fn unknown_key_lists_the_known_ones() {
        let message = error(&[("targetUtil", "60")]);
        assert!(
            message.starts_with(
                "unknown metadata key \"targetUtil\"; known keys: profile, metricType"
            ),
            "{message}"
        );
    }

    #[test]
    fn unknown_profile_metric_and_aggregation_name_the_choices() {
        assert_eq!(
            error(&[("profile", "sglang")]),
            "invalid profile \"sglang\": expected one of vllm-inference, triton-inference, training, batch, vllm-queue, vllm-kv-cache, sglang-queue, sglang-kv-cache"
        );
        assert_eq!(
            error(&[("metricType", "vram")]),
            "invalid metricType \"vram\": expected one of gpu_utilization, memory_utilization, memory_used_mib, memory_used_percent, temperature, power_draw, sm_activity, sm_occupancy, tensor_activity, dram_bandwidth_utilization, pcie_tx_mbps, pcie_rx_mbps, nvlink_tx_mbps, nvlink_rx_mbps (GPU), or queue_length, running_requests, kv_cache_usage_percent, request_rate, prompt_tokens_rate, generation_tokens_rate, ttft_seconds, itl_seconds, e2e_latency_seconds, queue_time_seconds (engine)"
        );
        assert_eq!(
            error(&[("aggregation", "median")]),
            "invalid aggregation \"median\": expected one of max, min, avg, sum, p95, p99"
        );
    }

    #[test]
    fn target_value_must_be_finite_and_positive() {
        for bad in ["abc", "NaN", "inf", "-inf", "0", "-5", "1e400"] {
            let message = error(&[("targetValue", bad)]);
            assert!(
                message.ends_with("expected a finite number > 0"),
                "{bad}: {message}"
            );
        }
        assert_eq!(
            parse_pairs(&[("targetValue", " 12.5 ")]).unwrap().target,
            12.5
        );
    }

    #[test]
    fn shorthand_targets_are_validated() {
        let message = error(&[("targetGpuUtilization", "-1")]);
        assert_eq!(
            message,
            "invalid targetGpuUtilization \"-1\": expected a finite number > 0"
        );
    }

    #[test]
    fn activation_threshold_must_be_finite_and_not_negative() {
        for bad in ["-0.1", "NaN", "infinity", "five"] {
            let message = error(&[("activationThreshold", bad)]);
            assert!(
                message.ends_with("expected a finite number >= 0"),
                "{bad}: {message}"
            );
        }
        assert_eq!(
            parse_pairs(&[("activationThreshold", "0")])
                .unwrap()
                .activation_threshold,
            0.0
        );
    }

    #[test]
    fn gpu_index_must_be_an_integer_from_minus_one() {
        for bad in ["1.0", "-2", "one", "4294967296"] {
            let message = error(&[("gpuIndex", bad)]);
            assert!(
                message.contains("expected an integer: -1 for all GPUs"),
                "{bad}: {message}"
            );
        }
        assert_eq!(
            gpus_of(&parse_pairs(&[("gpuIndex", "-1")]).unwrap()),
            GpuSelector::All
        );
        let trigger = parse_pairs(&[("gpuIndex", "3")]).unwrap();
        assert_eq!(gpus_of(&trigger), GpuSelector::Index(3));
        assert_eq!(trigger.metric_name(), "gpu-utilization-gpu3");
    }

    #[test]
    fn poll_interval_must_be_positive() {
        // 1e-300 would round to a 0 ns interval.
        for bad in ["0", "-1", "NaN", "7200", "1e-300", "0.0009"] {
            let message = error(&[("pollIntervalSeconds", bad)]);
            assert!(
                message.contains("expected a number of seconds from 0.001 to 3600"),
                "{bad}: {message}"
            );
        }
        let trigger = parse_pairs(&[("pollIntervalSeconds", "2.5")]).unwrap();
        assert_eq!(trigger.poll_interval, Duration::from_millis(2500));
    }

    #[test]
    fn empty_value_is_rejected() {
        assert_eq!(
            error(&[("aggregation", "  ")]),
            "aggregation is empty; remove it or give a value"
        );
    }

    #[test]
    fn metric_names_are_deterministic_and_kubernetes_safe() {
        for metric in Metric::ALL {
            for aggregation in Aggregation::ALL {
                let trigger = parse_pairs(&[
                    ("metricType", metric.name()),
                    ("aggregation", aggregation.name()),
                ])
                .unwrap();
                let name = trigger.metric_name();
                assert!(
                    name.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                    "{name}"
                );
                assert_eq!(name, trigger.metric_name());
            }
        }
    }

    #[test]
    fn aggregations() {
        let values = [10.0, 40.0, 25.0];
        assert_eq!(Aggregation::Max.apply(&values), Some(40.0));
        assert_eq!(Aggregation::Min.apply(&values), Some(10.0));
        assert_eq!(Aggregation::Sum.apply(&values), Some(75.0));
        assert_eq!(Aggregation::Avg.apply(&values), Some(25.0));
        assert_eq!(Aggregation::Max.apply(&[]), None);
    }

    #[test]
    fn workload_selector_defaults_to_the_scaled_object_namespace() {
        let trigger = parse_pairs(&[("workload", "vllm")]).unwrap();
        assert_eq!(
            trigger.selector,
            Some(Selector {
                namespace: "ml".into(),
                pods: PodMatch::Workload("vllm".into())
            })
        );
        let trigger =
            parse_pairs(&[("podNamePattern", "train-*"), ("podNamespace", "research")]).unwrap();
        assert_eq!(
            trigger.selector,
            Some(Selector {
                namespace: "research".into(),
                pods: PodMatch::Pattern("train-*".into())
            })
        );
    }

    #[test]
    fn selector_rules() {
        assert_eq!(
            error(&[("workload", "a"), ("podNamePattern", "b*")]),
            "workload and podNamePattern are both set; use one"
        );
        assert_eq!(
            error(&[("podNamespace", "ml")]),
            "podNamespace needs workload or podNamePattern"
        );
        assert!(error(&[("workload", "Vllm")])
            .starts_with("invalid workload \"Vllm\": expected a Kubernetes name"));
        assert!(error(&[("podNamePattern", "a/b")]).starts_with("invalid podNamePattern \"a/b\""));
    }

    #[test]
    fn workload_pods_by_controller_naming() {
        assert!(is_workload_pod("vllm", "vllm-7d9f8b6c5d-x2k4p"));
        assert!(is_workload_pod("vllm", "vllm-0"));
        assert!(is_workload_pod("vllm", "vllm-12"));
        assert!(!is_workload_pod("vllm", "vllm-canary-7d9f8b6c5d-x2k4p"));
        assert!(!is_workload_pod("vllm", "vllm-canary-0"));
        assert!(!is_workload_pod("vllm", "vllm"));
        assert!(!is_workload_pod("vllm", "vllmx-7d9f8b6c5d-x2k4p"));
        assert!(!is_workload_pod("vllm", "vllm-7d9f8b6c5d-x2k4"));
        assert!(is_workload_pod(
            "vllm-canary",
            "vllm-canary-7d9f8b6c5d-x2k4p"
        ));
    }

    #[test]
    fn globs() {
        assert!(glob_matches(b"train-*", b"train-abc"));
        assert!(glob_matches(b"*-worker-?", b"job-worker-3"));
        assert!(!glob_matches(b"*-worker-?", b"job-worker-13"));
        assert!(glob_matches(b"*", b""));
        assert!(glob_matches(b"a*b*c", b"axxbyyc"));
        assert!(!glob_matches(b"a*b*c", b"axxbyy"));
    }

    #[test]
    fn activation_is_strictly_above_the_threshold() {
        let trigger = parse_pairs(&[("activationThreshold", "5")]).unwrap();
        assert!(!trigger.is_active(5.0));
        assert!(trigger.is_active(5.01));
    }

    fn engine_of(trigger: &Trigger) -> &EngineSource {
        trigger.engine().expect("an engine trigger")
    }

    #[test]
    fn engine_profiles_set_engine_signal_aggregation_and_target() {
        let expected = [
            (
                "vllm-queue",
                Engine::Vllm,
                Signal::QueueLength,
                5.0,
                0.0,
                Aggregation::Sum,
            ),
            (
                "vllm-kv-cache",
                Engine::Vllm,
                Signal::KvCacheUsagePercent,
                80.0,
                5.0,
                Aggregation::Avg,
            ),
            (
                "sglang-queue",
                Engine::Sglang,
                Signal::QueueLength,
                5.0,
                0.0,
                Aggregation::Sum,
            ),
            (
                "sglang-kv-cache",
                Engine::Sglang,
                Signal::KvCacheUsagePercent,
                80.0,
                5.0,
                Aggregation::Avg,
            ),
        ];
        for (name, engine, signal, target, activation, aggregation) in expected {
            let trigger = parse_pairs(&[("profile", name), ("engineEndpoints", "svc.ml")]).unwrap();
            let source = engine_of(&trigger);
            assert_eq!(source.engine, Some(engine), "{name}");
            assert_eq!(source.reads, EngineReads::Signal(signal), "{name}");
            assert_eq!(
                source.query.series,
                signals::table(engine, signal),
                "{name}"
            );
            assert_eq!(
                (
                    trigger.target,
                    trigger.activation_threshold,
                    trigger.aggregation
                ),
                (target, activation, aggregation),
                "{name}"
            );
            assert_eq!(source.endpoints[0].port, engine.default_port());
            assert_eq!(source.timeout, None);
            assert_eq!(
                source.timeout(Duration::from_secs(5)),
                Ok(DEFAULT_ENGINE_TIMEOUT)
            );
            assert_eq!(
                source.timeout(Duration::from_secs(1)),
                Ok(Duration::from_millis(500))
            );
        }
        let trigger =
            parse_pairs(&[("profile", "vllm-queue"), ("engineEndpoints", "vllm.ml")]).unwrap();
        assert_eq!(trigger.metric_name(), "vllm-queue-length-sum");
        assert_eq!(
            trigger.to_string(),
            "profile=vllm-queue engine=vllm metricType=queue_length engineEndpoints=http://vllm.ml:8000/metrics targetValue=5 activationThreshold=0 aggregation=sum pollIntervalSeconds=10"
        );
    }

    #[test]
    fn each_endpoint_is_normalised_in_full_before_duplicates_go() {
        // A repeated entry must not shift the default path onto the next
        // entry's own path, and a default path spelt out is the same
        // endpoint as one left to the default.
        let trigger = parse_pairs(&[
            ("engine", "trtllm"),
            ("metricType", "queue_length"),
            ("targetValue", "5"),
            (
                "engineEndpoints",
                "y:8000,y:8000,z:8000/custom,y:8000/prometheus/metrics",
            ),
        ])
        .unwrap();
        let endpoints: Vec<String> = engine_of(&trigger)
            .endpoints
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            endpoints,
            ["http://y:8000/prometheus/metrics", "http://z:8000/custom"]
        );
    }

    #[test]
    fn engine_keys_and_defaults() {
        let trigger = parse_pairs(&[
            ("engine", "trtllm"),
            ("metricType", "kv_cache_usage_percent"),
            ("engineEndpoints", "trt.ml, http://10.0.0.9:9000/metrics"),
            ("engineModel", "llama"),
            ("engineTimeout", "250ms"),
            ("targetValue", "70"),
            ("aggregation", "max"),
            ("workload", "trt"),
        ])
        .unwrap();
        let source = engine_of(&trigger);
        assert_eq!(
            source.endpoints[0].to_string(),
            "http://trt.ml:8000/prometheus/metrics"
        );
        assert_eq!(
            source.endpoints[1].to_string(),
            "http://10.0.0.9:9000/metrics"
        );
        assert_eq!(
            source.query.model,
            Some(("model_name".into(), "llama".into()))
        );
        assert_eq!(source.timeout, Some(Duration::from_millis(250)));
        assert_eq!(
            source.timeout(Duration::from_millis(300)),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            source.timeout(Duration::from_millis(250)).unwrap_err().0,
            "invalid engineTimeout 250ms: it must be below this scaler's sample interval (250ms)"
        );
        assert_eq!(trigger.aggregation, Aggregation::Max);
        assert!(trigger.selector.is_some());
        let triton = parse_pairs(&[
            ("engine", "triton"),
            ("metricType", "queue_length"),
            ("engineEndpoints", "triton"),
            ("engineModel", "ensemble"),
            ("engineTimeout", "0.5"),
            ("targetValue", "10"),
        ])
        .unwrap();
        let source = engine_of(&triton);
        assert_eq!(
            source.endpoints[0].to_string(),
            "http://triton:8002/metrics"
        );
        assert_eq!(
            source.query.model,
            Some(("model".into(), "ensemble".into()))
        );
        assert_eq!(source.timeout, Some(Duration::from_millis(500)));
        assert_eq!(triton.aggregation, Aggregation::Sum);
    }

    #[test]
    fn engine_metric_reads_any_gauge() {
        let trigger = parse_pairs(&[
            (
                "engineMetric",
                "vllm:num_requests_waiting{model_name=\"llama-3-8b\"}",
            ),
            ("engineEndpoints", "vllm:8000"),
            ("targetValue", "3"),
            ("aggregation", "max"),
        ])
        .unwrap();
        let source = engine_of(&trigger);
        assert_eq!(source.engine, None);
        // A gauge is read as one; a counter or histogram through the window
        // (the page's TYPE decides).
        assert!(!source.query.gauges_only && source.window.is_some());
        assert_eq!(source.query.within, Aggregation::Max);
        assert_eq!(
            source.query.series,
            vec![Series {
                family: "vllm:num_requests_waiting".into(),
                matchers: vec![("model_name".into(), "llama-3-8b".into())],
                scale: 1.0
            }]
        );
        let name = trigger.metric_name();
        assert!(
            name.starts_with("engine-vllm-num-requests-waiting-"),
            "{name}"
        );
        assert!(name.ends_with("-max"), "{name}");
        assert!(name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        // Other matchers, another name.
        let other = parse_pairs(&[
            (
                "engineMetric",
                "vllm:num_requests_waiting{model_name=\"b\"}",
            ),
            ("engineEndpoints", "vllm:8000"),
            ("targetValue", "3"),
            ("aggregation", "max"),
        ])
        .unwrap();
        assert_ne!(other.metric_name(), name);
    }

    #[test]
    fn engine_mistakes_name_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("engine", "tgi"), ("metricType", "queue_length")], "invalid engine \"tgi\": expected one of vllm, sglang, trtllm, triton"),
            (&[("metricType", "queue_length"), ("engineEndpoints", "v:1")], "metricType queue_length reads an inference engine: set engine to one of vllm, sglang, trtllm, triton"),
            (&[("engine", "vllm"), ("metricType", "queue_length"), ("targetValue", "5")], "metricType=queue_length reads every replica's /metrics: set engineEndpoints (a headless Service name, e.g. vllm.ml.svc.cluster.local:8000)"),
            (&[("engine", "vllm"), ("metricType", "queue_length"), ("engineEndpoints", "v")], "metricType=queue_length has no default target; set targetValue (waiting requests per replica) or use a profile (vllm-queue, vllm-kv-cache, sglang-queue, sglang-kv-cache)"),
            (&[("engineEndpoints", "v:1")], "engineEndpoints applies to engine triggers, but metricType is gpu_utilization"),
            (&[("metricType", "power_draw"), ("engine", "vllm")], "engine applies to engine triggers, but metricType is power_draw"),
            (&[("targetGpuUtilization", "50"), ("engineModel", "m")], "engineModel applies to engine triggers"),
            (&[("profile", "vllm-queue"), ("engineEndpoints", "v"), ("gpuIndex", "0")], "gpuIndex selects a GPU, but this trigger reads an engine's /metrics; remove it"),
            (&[("profile", "vllm-queue"), ("engine", "sglang"), ("engineEndpoints", "v")], "profile \"vllm-queue\" reads vllm, but engine is \"sglang\"; remove one"),
            (&[("profile", "vllm-queue"), ("engineEndpoints", "https://v")], "invalid engineEndpoints \"https://v\": entry \"https://v\" is HTTPS"),
            (&[("profile", "vllm-queue"), ("engineEndpoints", "v"), ("engineTimeout", "0")], "invalid engineTimeout \"0\": expected a duration above 0 and at most 30s"),
            (&[("profile", "vllm-queue"), ("engineEndpoints", "v"), ("engineTimeout", "1 minute")], "invalid engineTimeout \"1 minute\""),
            (&[("profile", "vllm-queue"), ("engineEndpoints", "v"), ("engineTimeout", "31s")], "invalid engineTimeout \"31s\""),
            (&[("engineMetric", "x"), ("metricType", "queue_length"), ("engine", "vllm"), ("engineEndpoints", "v")], "metricType and engineMetric both choose what is read; use one"),
            (&[("engineMetric", "9x"), ("engineEndpoints", "v:1"), ("targetValue", "1")], "invalid engineMetric \"9x\": expected a metric name"),
            (&[("engineMetric", "x{a=b}"), ("engineEndpoints", "v:1"), ("targetValue", "1")], "invalid engineMetric \"x{a=b}\""),
            (&[("engineMetric", "x{a=\"b\"} 1"), ("engineEndpoints", "v:1"), ("targetValue", "1")], "only '=' matchers"),
            (&[("engineMetric", "x"), ("engineEndpoints", "v"), ("targetValue", "1")], "invalid engineEndpoints \"v\": entry \"v\" has no port; add :PORT or set engine"),
            (&[("engineMetric", "x"), ("engineEndpoints", "v:1"), ("engineModel", "m"), ("targetValue", "1")], "engineModel needs engine"),
            (&[("profile", "vllm-queue"), ("engineMetric", "x"), ("engineEndpoints", "v")], "profile \"vllm-queue\" has a target for vllm queue_length, not for engineMetric; set targetValue"),
            (&[("profile", "vllm-inference"), ("metricType", "queue_length"), ("engine", "vllm"), ("engineEndpoints", "v")], "profile \"vllm-inference\" has a target for gpu_utilization, not for metricType queue_length; set targetValue"),
        ];
        for (pairs, expected) in cases {
            let message = error(pairs);
            assert!(
                message.contains(expected),
                "{pairs:?}:\n  got      {message}\n  expected {expected}"
            );
        }
    }
}
