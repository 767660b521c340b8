//! `/metrics` pages shaped like each engine's real output: the same family
//! names, `# HELP`/`# TYPE` lines, label names in the order the engines'
//! Prometheus clients write them (sorted, for the Python ones), histograms
//! with their real bucket bounds, and the neighbouring families a scraper
//! must skip. Values come from a [`Load`]: the gauges from its current
//! load, the request counters and the TTFT, inter-token, end-to-end and
//! queue-time histograms from what has [`Finished`]. Pure text generation.

use std::fmt::Write;

/// Which engine's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// vLLM v0.12 and later.
    Vllm,
    /// vLLM before v0.11: `vllm:gpu_cache_usage_perc`, no `kv_cache_usage_perc`,
    /// and inter-token latency as `vllm:time_per_output_token_seconds`, no
    /// `vllm:inter_token_latency_seconds`.
    VllmOld,
    Sglang,
    /// `trtllm-serve`: Prometheus text at `/prometheus/metrics`, JSON at `/metrics`.
    Trtllm,
    /// Triton with the TensorRT-LLM backend (`nv_trt_llm_*`).
    TritonTrtllm,
    /// Triton with another backend: only `nv_inference_*`.
    Triton,
}

impl Kind {
    pub fn parse(name: &str) -> Option<Kind> {
        Some(match name {
            "vllm" => Kind::Vllm,
            "vllm-old" => Kind::VllmOld,
            "sglang" => Kind::Sglang,
            "trtllm" => Kind::Trtllm,
            "triton-trtllm" => Kind::TritonTrtllm,
            "triton" => Kind::Triton,
            _ => return None,
        })
    }

    /// Where the engine serves Prometheus text.
    pub fn metrics_path(self) -> &'static str {
        match self {
            Kind::Trtllm => "/prometheus/metrics",
            _ => "/metrics",
        }
    }
}

/// One replica's load.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    pub model: String,
    pub waiting: u64,
    pub running: u64,
    /// KV cache used, 0-1.
    pub kv: f64,
    /// vLLM data-parallel engines (series `engine="0".."N-1"`); SGLang
    /// `dp_rank`s. The counts are split across them.
    pub data_parallel: u32,
    /// SGLang with `--enable-metrics-for-all-schedulers`: the same series
    /// once per TP rank.
    pub tp_copies: u32,
    /// The request counters and latency histograms.
    pub finished: Finished,
}

/// What has finished since the replica started: cumulative, as the engine's counters and histograms count it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Finished {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub generation_tokens: u64,
    /// Observations, as (value in seconds, how many times), cumulative.
    pub ttft: Vec<(f64, u64)>,
    pub itl: Vec<(f64, u64)>,
    pub e2e: Vec<(f64, u64)>,
    pub queue: Vec<(f64, u64)>,
}

impl Default for Load {
    fn default() -> Self {
        Self {
            model: String::from("meta-llama/Llama-3.1-8B-Instruct"),
            waiting: 0,
            running: 0,
            kv: 0.0,
            data_parallel: 1,
            tp_copies: 1,
            finished: Finished::default(),
        }
    }
}

/// The page for `kind` under `load`.
pub fn page(kind: Kind, load: &Load) -> String {
    let mut out = String::with_capacity(64 * 1024);
    match kind {
        Kind::Vllm | Kind::VllmOld => vllm(&mut out, load, kind == Kind::VllmOld),
        Kind::Sglang => sglang(&mut out, load),
        Kind::Trtllm => trtllm(&mut out, load),
        Kind::TritonTrtllm => triton(&mut out, load, true),
        Kind::Triton => triton(&mut out, load, false),
    }
    out
}

/// trtllm-serve's `/metrics`: JSON iteration stats, not Prometheus text.
pub fn trtllm_json(load: &Load) -> String {
    format!(
        "[{{\"numActiveRequests\":{},\"numQueuedRequests\":{},\"kvCacheStats\":{{\"maxNumBlocks\":1000,\"usedNumBlocks\":{}}}}}]",
        load.running,
        load.waiting,
        (load.kv * 1000.0) as u64
    )
}

/// `total` split over `parts`, the first ones taking the remainder.
fn share(total: u64, parts: u32, index: u32) -> u64 {
    let parts = u64::from(parts.max(1));
    total / parts + u64::from(u64::from(index) < total % parts)
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A Python-style float: `3.0`, `0.25`, `1.7537953269353123e+09`.
fn py(value: f64) -> String {
    if value == value.trunc() && value.abs() < 1e15 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

/// One histogram series: how many observations fall at or under each
/// bound (cumulative), how many in all (`+Inf`, `_count`), and their sum.
#[derive(Debug, Clone, PartialEq)]
struct Buckets {
    cumulative: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Buckets {
    /// `observations` counted into `bounds`: each lands in the first bucket
    /// whose bound is at least its value, and in every one after.
    fn of(bounds: &[f64], observations: &[(f64, u64)]) -> Buckets {
        let mut cumulative = vec![0; bounds.len()];
        let (mut count, mut sum) = (0, 0.0);
        for &(value, times) in observations {
            if let Some(first) = bounds.iter().position(|bound| value <= *bound) {
                for bucket in &mut cumulative[first..] {
                    *bucket += times;
                }
            }
            count += times;
            sum += value * times as f64;
        }
        Buckets {
            cumulative,
            count,
            sum,
        }
    }

    /// Made-up counts for the histograms no [`Finished`] field drives.
    fn made_up(bounds: &[f64]) -> Buckets {
        let mut count = 0;
        let cumulative = (0..bounds.len())
            .map(|i| {
                count += (i % 3) as u64;
                count
            })
            .collect();
        Buckets {
            cumulative,
            count,
            sum: count as f64 * 0.731,
        }
    }
}

/// The share of `observations` that falls to part `index` of `parts`: dealt
/// out one at a time in turn, so the parts add up to the whole and part
/// `index` holds `share(total, parts, index)` of them, as many as the
/// requests [`share`] gives it.
fn split(observations: &[(f64, u64)], parts: u32, index: u32) -> Vec<(f64, u64)> {
    let parts = parts.max(1);
    let mut dealt = 0;
    observations
        .iter()
        .map(|&(value, times)| {
            // The part the first of these goes to takes the remainder.
            let first = (dealt % u64::from(parts)) as u32;
            dealt += times;
            (value, share(times, parts, (index + parts - first) % parts))
        })
        .collect()
}

/// A histogram in prometheus_client's layout, with made-up counts:
/// buckets, `+Inf`, count, sum, and a `_created` gauge. `labels` are the
/// series' own, sorted with `le`.
fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    buckets: &[f64],
    series: &[String],
    created: bool,
) {
    let series: Vec<(String, Buckets)> = series
        .iter()
        .map(|labels| (labels.clone(), Buckets::made_up(buckets)))
        .collect();
    observed(out, name, help, buckets, &series, created);
}

/// A histogram in prometheus_client's layout holding these counts.
fn observed(
    out: &mut String,
    name: &str,
    help: &str,
    buckets: &[f64],
    series: &[(String, Buckets)],
    created: bool,
) {
    header(out, name, help, "histogram");
    for (labels, counts) in series {
        let (before, after) = split_for_le(labels);
        for (bound, count) in buckets.iter().zip(&counts.cumulative) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{before}le=\"{}\"{after}}} {}",
                py(*bound),
                py(*count as f64)
            );
        }
        let count = py(counts.count as f64);
        let _ = writeln!(out, "{name}_bucket{{{before}le=\"+Inf\"{after}}} {count}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", py(counts.sum));
    }
    if created {
        let created_name = format!("{name}_created");
        header(out, &created_name, help, "gauge");
        for (labels, _) in series {
            let _ = writeln!(out, "{created_name}{{{labels}}} 1.7537953269353123e+09");
        }
    }
}

/// `engine="0",model_name="m"` → (`engine="0",`, `,model_name="m"`): `le`
/// goes between the labels that sort before and after it.
fn split_for_le(labels: &str) -> (String, String) {
    let mut before = String::new();
    let mut after = String::new();
    for label in labels.split(',').filter(|l| !l.is_empty()) {
        if label < "le" {
            before.push_str(label);
            before.push(',');
        } else {
            after.push(',');
            after.push_str(label);
        }
    }
    (before, after)
}

fn counter(out: &mut String, name: &str, help: &str, series: &[(String, f64)], created: bool) {
    header(out, &format!("{name}_total"), help, "counter");
    for (labels, value) in series {
        let _ = writeln!(out, "{name}_total{{{labels}}} {}", py(*value));
    }
    if created {
        header(out, &format!("{name}_created"), help, "gauge");
        for (labels, _) in series {
            let _ = writeln!(out, "{name}_created{{{labels}}} 1.7537953269353123e+09");
        }
    }
}

/// Finish reasons as the pages print them (sorted), each with its index
/// for [`share`]: `stop` takes the remainder first, then `length`, `abort`.
const REASONS: [(&str, u32); 3] = [("abort", 2), ("length", 1), ("stop", 0)];

const TTFT: [f64; 22] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const ITL: [f64; 19] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
const LATENCY: [f64; 21] = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
const TOKENS: [f64; 14] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0,
];
const ITERATION: [f64; 13] = [
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];

fn vllm(out: &mut String, load: &Load, old: bool) {
    let engines = load.data_parallel.max(1);
    let labels: Vec<String> = (0..engines)
        .map(|e| format!("engine=\"{e}\",model_name=\"{}\"", load.model))
        .collect();
    let per_engine = |total: u64| -> Vec<(String, f64)> {
        (0..engines)
            .map(|e| (labels[e as usize].clone(), share(total, engines, e) as f64))
            .collect()
    };
    header(
        out,
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        "gauge",
    );
    for (l, v) in per_engine(load.running) {
        let _ = writeln!(out, "vllm:num_requests_running{{{l}}} {}", py(v));
    }
    header(
        out,
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        "gauge",
    );
    for (l, v) in per_engine(load.waiting) {
        let _ = writeln!(out, "vllm:num_requests_waiting{{{l}}} {}", py(v));
    }
    header(out, "vllm:engine_sleep_state", "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.", "gauge");
    for l in &labels {
        for (state, v) in [
            ("awake", 1.0),
            ("weights_offloaded", 0.0),
            ("discard_all", 0.0),
        ] {
            let _ = writeln!(
                out,
                "vllm:engine_sleep_state{{{l},sleep_state=\"{state}\"}} {}",
                py(v)
            );
        }
    }
    let kv_name = if old {
        "vllm:gpu_cache_usage_perc"
    } else {
        "vllm:kv_cache_usage_perc"
    };
    header(
        out,
        kv_name,
        "KV-cache usage. 1 means 100 percent usage.",
        "gauge",
    );
    for (e, l) in labels.iter().enumerate() {
        // Engines fill unevenly; the first carries the load given.
        let kv = if e == 0 { load.kv } else { load.kv * 0.5 };
        let _ = writeln!(out, "{kv_name}{{{l}}} {}", py(kv));
    }
    let tokens = |scale: f64| -> Vec<(String, f64)> {
        labels.iter().map(|l| (l.clone(), 1234.0 * scale)).collect()
    };
    let finished = &load.finished;
    counter(
        out,
        "vllm:num_preemptions",
        "Cumulative number of preemption from the engine.",
        &tokens(0.0),
        true,
    );
    counter(
        out,
        "vllm:prompt_tokens",
        "Number of prefill tokens processed.",
        &per_engine(finished.prompt_tokens),
        true,
    );
    counter(
        out,
        "vllm:generation_tokens",
        "Number of generation tokens processed.",
        &per_engine(finished.generation_tokens),
        true,
    );
    counter(
        out,
        "vllm:prefix_cache_queries",
        "Prefix cache queries, in terms of number of queried tokens.",
        &tokens(90.0),
        true,
    );
    counter(
        out,
        "vllm:prefix_cache_hits",
        "Prefix cache hits, in terms of number of cached tokens.",
        &tokens(41.0),
        true,
    );
    let by_reason: Vec<(String, f64)> = (0..engines)
        .flat_map(|e| {
            let requests = share(finished.requests, engines, e);
            REASONS.into_iter().map(move |(reason, index)| {
                // Sorted: engine, finished_reason, model_name.
                (
                    format!(
                        "engine=\"{e}\",finished_reason=\"{reason}\",model_name=\"{}\"",
                        load.model
                    ),
                    share(requests, 3, index) as f64,
                )
            })
        })
        .collect();
    counter(
        out,
        "vllm:request_success",
        "Count of successfully processed requests.",
        &by_reason,
        true,
    );
    let itl = if old {
        (
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds.",
        )
    } else {
        (
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
        )
    };
    for (name, help, buckets, observations) in [
        (
            "vllm:iteration_tokens_total",
            "Histogram of number of tokens per engine_step.",
            &ITERATION[..],
            None,
        ),
        (
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            &TTFT[..],
            Some(&finished.ttft),
        ),
        (itl.0, itl.1, &ITL[..], Some(&finished.itl)),
        (
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            &ITL[..],
            None,
        ),
        (
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            &LATENCY[..],
            Some(&finished.e2e),
        ),
        (
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            &LATENCY[..],
            Some(&finished.queue),
        ),
        (
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            &LATENCY[..],
            None,
        ),
        (
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            &LATENCY[..],
            None,
        ),
        (
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            &LATENCY[..],
            None,
        ),
        (
            "vllm:request_prompt_tokens",
            "Number of prefill tokens processed.",
            &TOKENS[..],
            None,
        ),
        (
            "vllm:request_generation_tokens",
            "Number of generation tokens processed.",
            &TOKENS[..],
            None,
        ),
        (
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            &TOKENS[..],
            None,
        ),
        (
            "vllm:request_params_n",
            "Histogram of the n request parameter.",
            &[1.0, 2.0, 5.0, 10.0, 20.0][..],
            None,
        ),
        (
            "vllm:request_params_max_tokens",
            "Histogram of the max_tokens request parameter.",
            &TOKENS[..],
            None,
        ),
    ] {
        match observations {
            // Each engine observes its share of every value.
            Some(observations) => {
                let series: Vec<(String, Buckets)> = (0..engines)
                    .map(|e| {
                        let part = split(observations, engines, e);
                        (labels[e as usize].clone(), Buckets::of(buckets, &part))
                    })
                    .collect();
                observed(out, name, help, buckets, &series, true);
            }
            None => histogram(out, name, help, buckets, &labels, true),
        }
    }
    header(
        out,
        "vllm:cache_config_info",
        "Information of the LLMEngine CacheConfig",
        "gauge",
    );
    for e in 0..engines {
        let _ = writeln!(out, "vllm:cache_config_info{{block_size=\"16\",cache_dtype=\"auto\",calculate_kv_scales=\"False\",cpu_offload_gb=\"0\",enable_prefix_caching=\"True\",engine=\"{e}\",gpu_memory_utilization=\"0.9\",num_cpu_blocks=\"None\",num_gpu_blocks=\"27767\",prefix_caching_hash_algo=\"sha256\",swap_space=\"4\"}} 1.0");
    }
    http_and_process(out);
}

/// prometheus-fastapi-instrumentator's and prometheus_client's own families.
fn http_and_process(out: &mut String) {
    let handlers = [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/health",
    ];
    header(
        out,
        "http_requests_total",
        "Total number of requests by method, status and handler.",
        "counter",
    );
    for handler in handlers {
        for status in ["2xx", "4xx", "5xx"] {
            let _ = writeln!(out, "http_requests_total{{handler=\"{handler}\",method=\"POST\",status=\"{status}\"}} 42.0");
        }
    }
    let high: [f64; 21] = [
        0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5,
        5.0, 7.5, 10.0, 30.0, 60.0,
    ];
    histogram(out, "http_request_duration_highr_seconds", "Latency with many buckets but no API specific labels. Made for more accurate percentile calculations. ", &high, &[String::new()], true);
    let by_handler: Vec<String> = handlers
        .iter()
        .map(|h| format!("handler=\"{h}\",method=\"POST\""))
        .collect();
    histogram(out, "http_request_duration_seconds", "Latency with only few buckets by handler. Made to be only used if aggregation by handler is important. ", &[0.1, 0.5, 1.0], &by_handler, true);
    for (name, help) in [
        ("http_request_size_bytes", "Content length of incoming requests by handler. Only value of header is respected. Otherwise ignored. No percentile calculated. "),
        ("http_response_size_bytes", "Content length of outgoing responses by handler. Only value of header is respected. Otherwise ignored. No percentile calculated. "),
    ] {
        header(out, name, help, "summary");
        for h in handlers {
            let _ = writeln!(out, "{name}_count{{handler=\"{h}\"}} 42.0");
            let _ = writeln!(out, "{name}_sum{{handler=\"{h}\"}} 52311.0");
        }
    }
    for generation in 0..3 {
        let _ = writeln!(
            out,
            "python_gc_objects_collected_total{{generation=\"{generation}\"}} 1234.0"
        );
    }
    header(
        out,
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        "gauge",
    );
    let _ = writeln!(out, "process_resident_memory_bytes 4.294967296e+09");
    header(
        out,
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        "counter",
    );
    let _ = writeln!(out, "process_cpu_seconds_total 812.34");
}

fn sglang(out: &mut String, load: &Load) {
    let dp = load.data_parallel.max(1);
    let tp = load.tp_copies.max(1);
    // Sorted label order, as prometheus_client writes it.
    let series = |dp_rank: u32, tp_rank: u32| -> String {
        let dp_label = if dp > 1 {
            format!("dp_rank=\"{dp_rank}\",")
        } else {
            String::new()
        };
        format!(
            "{dp_label}engine_type=\"unified\",model_name=\"{}\",moe_ep_rank=\"0\",pp_rank=\"0\",tp_rank=\"{tp_rank}\"",
            load.model
        )
    };
    let mut gauge = |name: &str, help: &str, value: &dyn Fn(u32) -> f64| {
        header(out, name, help, "gauge");
        for d in 0..dp {
            for t in 0..tp {
                let _ = writeln!(out, "{name}{{{}}} {}", series(d, t), py(value(d)));
            }
        }
    };
    gauge(
        "sglang:num_running_reqs",
        "The number of running requests.",
        &|d| share(load.running, dp, d) as f64,
    );
    gauge(
        "sglang:num_used_tokens",
        "The number of used tokens.",
        &|_| (load.kv * 500_000.0).round(),
    );
    gauge("sglang:token_usage", "The token usage.", &|_| load.kv);
    gauge(
        "sglang:gen_throughput",
        "The generation throughput (token/s).",
        &|_| 1830.5,
    );
    gauge(
        "sglang:num_queue_reqs",
        "The number of requests in the waiting queue.",
        &|d| share(load.waiting, dp, d) as f64,
    );
    gauge(
        "sglang:cache_hit_rate",
        "The prefix cache hit rate.",
        &|_| 0.41,
    );
    // The tokenizer's families: one process, split by streaming or not.
    let finished = &load.finished;
    let streaming = |index: u32| -> String {
        let value = if index == 0 { "true" } else { "false" };
        format!(
            "engine_type=\"unified\",is_streaming=\"{value}\",model_name=\"{}\"",
            load.model
        )
    };
    for (name, help, total) in [
        (
            "sglang:num_requests",
            "Number of requests processed.",
            finished.requests,
        ),
        (
            "sglang:prompt_tokens",
            "Number of prefill tokens processed.",
            finished.prompt_tokens,
        ),
        (
            "sglang:generation_tokens",
            "Number of generation tokens processed.",
            finished.generation_tokens,
        ),
    ] {
        let series: Vec<(String, f64)> = (0..2)
            .map(|i| (streaming(i), share(total, 2, i) as f64))
            .collect();
        counter(out, name, help, &series, false);
    }
    let by_streaming = |bounds: &[f64], observations: &[(f64, u64)]| -> Vec<(String, Buckets)> {
        (0..2)
            .map(|i| {
                (
                    streaming(i),
                    Buckets::of(bounds, &split(observations, 2, i)),
                )
            })
            .collect()
    };
    observed(
        out,
        "sglang:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        &SGLANG_TTFT,
        &by_streaming(&SGLANG_TTFT, &finished.ttft),
        false,
    );
    observed(
        out,
        "sglang:inter_token_latency_seconds",
        "Histogram of inter-token latency in seconds.",
        &SGLANG_ITL,
        &[(
            format!("engine_type=\"unified\",model_name=\"{}\"", load.model),
            Buckets::of(&SGLANG_ITL, &finished.itl),
        )],
        false,
    );
    observed(
        out,
        "sglang:e2e_request_latency_seconds",
        "Histogram of End-to-end request latency in seconds",
        &SGLANG_E2E,
        &by_streaming(&SGLANG_E2E, &finished.e2e),
        false,
    );
    // The schedulers' family: each DP rank its share, each TP rank a copy.
    let mut queue = Vec::new();
    for d in 0..dp {
        let counts = Buckets::of(&SGLANG_QUEUE, &split(&finished.queue, dp, d));
        for t in 0..tp {
            queue.push((series(d, t), counts.clone()));
        }
    }
    observed(
        out,
        "sglang:queue_time_seconds",
        "Histogram of queueing time in seconds.",
        &SGLANG_QUEUE,
        &queue,
        false,
    );
}

/// SGLang's default buckets (`sglang/srt/metrics/collector.py`).
const SGLANG_TTFT: [f64; 18] = [
    0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 200.0,
    400.0,
];
const SGLANG_E2E: [f64; 22] = [
    0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 200.0,
    400.0, 600.0, 1200.0, 1800.0, 2400.0,
];
const SGLANG_ITL: [f64; 23] = [
    0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040, 0.060, 0.080,
    0.100, 0.200, 0.400, 0.600, 0.800, 1.000, 2.000, 4.000, 6.000, 8.000,
];
const SGLANG_QUEUE: [f64; 40] = [
    0.0, 0.001, 0.005, 0.010, 0.050, 0.100, 0.200, 0.500, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 15.0,
    20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0,
    700.0, 800.0, 900.0, 1000.0, 1200.0, 1400.0, 1600.0, 1800.0, 2000.0, 2500.0, 3000.0,
];

fn trtllm(out: &mut String, load: &Load) {
    let labels = format!("engine_type=\"trtllm\",model_name=\"{}\"", load.model);
    for (name, help, value) in [
        (
            "trtllm_num_requests_running",
            "Number of active requests",
            load.running as f64,
        ),
        (
            "trtllm_num_requests_waiting",
            "Number of queued requests",
            load.waiting as f64,
        ),
        (
            "trtllm_kv_cache_utilization",
            "KV cache utilization",
            load.kv,
        ),
        ("trtllm_kv_cache_hit_rate", "KV cache hit rate", 0.37),
        (
            "trtllm_num_scheduled_requests",
            "Number of scheduled requests",
            load.running as f64,
        ),
        (
            "trtllm_iteration_latency_seconds",
            "Iteration latency in seconds",
            0.021,
        ),
    ] {
        header(out, name, help, "gauge");
        let _ = writeln!(out, "{name}{{{labels}}} {}", py(value));
    }
    let finished = &load.finished;
    let by_reason: Vec<(String, f64)> = REASONS
        .into_iter()
        .map(|(reason, index)| {
            (
                format!(
                    "engine_type=\"trtllm\",finished_reason=\"{reason}\",model_name=\"{}\"",
                    load.model
                ),
                share(finished.requests, 3, index) as f64,
            )
        })
        .collect();
    counter(
        out,
        "trtllm_request_success",
        "Count of successfully processed requests.",
        &by_reason,
        false,
    );
    counter(
        out,
        "trtllm_prompt_tokens",
        "Number of prefill tokens processed.",
        &[(labels.clone(), finished.prompt_tokens as f64)],
        false,
    );
    counter(
        out,
        "trtllm_generation_tokens",
        "Number of generation tokens processed.",
        &[(labels.clone(), finished.generation_tokens as f64)],
        false,
    );
    for (name, help, buckets, observations) in [
        (
            "trtllm_time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            &TTFT[..],
            &finished.ttft,
        ),
        (
            "trtllm_time_per_output_token_seconds",
            "Histogram of time per output token in seconds.",
            &ITL[..],
            &finished.itl,
        ),
        (
            "trtllm_e2e_request_latency_seconds",
            "Histogram of end to end request latency in seconds.",
            &LATENCY[..],
            &finished.e2e,
        ),
        (
            "trtllm_request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            &LATENCY[..],
            &finished.queue,
        ),
    ] {
        let series = [(labels.clone(), Buckets::of(buckets, observations))];
        observed(out, name, help, buckets, &series, false);
    }
}

/// Triton's default first-response buckets, in milliseconds.
const FIRST_RESPONSE_MS: [f64; 4] = [100.0, 500.0, 2000.0, 5000.0];

/// Σ value × times, seconds to whole microseconds, as Triton counts them.
fn micros(observations: &[(f64, u64)]) -> u64 {
    observations
        .iter()
        .map(|&(seconds, times)| (seconds * 1e6).round() as u64 * times)
        .sum()
}

fn triton(out: &mut String, load: &Load, trtllm: bool) {
    let finished = &load.finished;
    let models = [
        "ensemble",
        "postprocessing",
        "preprocessing",
        "tensorrt_llm",
    ];
    // Triton writes labels in its own order: model, then version.
    for (name, help, kind) in [
        (
            "nv_inference_request_success",
            "Number of successful inference requests, all batch sizes",
            "counter",
        ),
        (
            "nv_inference_request_failure",
            "Number of failed inference requests, all batch sizes",
            "counter",
        ),
        (
            "nv_inference_count",
            "Number of inferences performed (does not include cached requests)",
            "counter",
        ),
        (
            "nv_inference_exec_count",
            "Number of model executions performed (does not include cached requests)",
            "counter",
        ),
        (
            "nv_inference_request_duration_us",
            "Cumulative inference request duration in microseconds (includes cached requests)",
            "counter",
        ),
        (
            "nv_inference_queue_duration_us",
            "Cumulative inference queuing duration in microseconds (includes cached requests)",
            "counter",
        ),
    ] {
        // Every model of the ensemble sees every request.
        let value = match name {
            "nv_inference_request_success" => finished.requests,
            "nv_inference_request_duration_us" => micros(&finished.e2e),
            "nv_inference_queue_duration_us" => micros(&finished.queue),
            _ => 1024,
        };
        header(out, name, help, kind);
        for model in models {
            let _ = writeln!(out, "{name}{{model=\"{model}\",version=\"1\"}} {value}");
        }
    }
    // prometheus-cpp's layout: count, sum, then the buckets with `le` last.
    // Only the decoupled (streaming) models have it.
    let name = "nv_inference_first_response_histogram_ms";
    header(
        out,
        name,
        "Duration from request to first response in milliseconds",
        "histogram",
    );
    let millis: Vec<(f64, u64)> = finished
        .ttft
        .iter()
        .map(|&(seconds, times)| (((seconds * 1000.0) as u64) as f64, times))
        .collect();
    let counts = Buckets::of(&FIRST_RESPONSE_MS, &millis);
    for model in ["ensemble", "tensorrt_llm"] {
        let labels = format!("model=\"{model}\",version=\"1\"");
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", counts.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", counts.sum);
        for (bound, count) in FIRST_RESPONSE_MS.iter().zip(&counts.cumulative) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"+Inf\"}} {}",
            counts.count
        );
    }
    header(
        out,
        "nv_inference_pending_request_count",
        "Instantaneous number of pending requests awaiting execution per-model.",
        "gauge",
    );
    for model in models {
        // Requests wait at the ensemble's entry when no TRT-LLM backend
        // queues them itself; the model's own count is the one to read.
        let pending = if model == "tensorrt_llm" || (!trtllm && model == "ensemble") {
            load.waiting
        } else {
            0
        };
        let _ = writeln!(
            out,
            "nv_inference_pending_request_count{{model=\"{model}\",version=\"1\"}} {pending}"
        );
    }
    if trtllm {
        header(
            out,
            "nv_trt_llm_request_metrics",
            "TRT LLM request metrics",
            "gauge",
        );
        for (kind, value) in [
            ("active", load.running + load.waiting),
            ("context", 1),
            ("max", 512),
            ("scheduled", load.running),
            ("waiting", load.waiting),
        ] {
            let _ = writeln!(out, "nv_trt_llm_request_metrics{{model=\"tensorrt_llm\",request_type=\"{kind}\",version=\"1\"}} {value}");
        }
        header(
            out,
            "nv_trt_llm_kv_cache_block_metrics",
            "TRT LLM KV cache block metrics",
            "gauge",
        );
        for (kind, value) in [
            ("fraction", load.kv),
            ("free", 4000.0 * (1.0 - load.kv)),
            ("max", 4000.0),
            ("reused", 12.0),
            ("tokens_per", 64.0),
            ("used", 4000.0 * load.kv),
        ] {
            let _ = writeln!(out, "nv_trt_llm_kv_cache_block_metrics{{kv_cache_block_type=\"{kind}\",model=\"tensorrt_llm\",version=\"1\"}} {value}");
        }
        header(
            out,
            "nv_trt_llm_disaggregated_serving_metrics",
            "TRT LLM disaggregated serving metrics",
            "counter",
        );
        let _ = writeln!(out, "nv_trt_llm_disaggregated_serving_metrics{{disaggregated_serving_type=\"request_count\",model=\"tensorrt_llm\",version=\"1\"}} 0");
    }
    header(
        out,
        "nv_gpu_utilization",
        "GPU utilization rate [0.0 - 1.0)",
        "gauge",
    );
    let _ = writeln!(
        out,
        "nv_gpu_utilization{{gpu_uuid=\"GPU-5e2c8a3b-0000-4000-8000-000000000000\"}} 0.93"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        let parts: Vec<u64> = (0..4).map(|i| share(10, 4, i)).collect();
        assert_eq!(parts, vec![3, 3, 2, 2]);
    }

    #[test]
    fn le_sits_in_label_order() {
        assert_eq!(
            split_for_le("engine=\"0\",model_name=\"m\""),
            ("engine=\"0\",".to_string(), ",model_name=\"m\"".to_string())
        );
    }

    /// A sample: name, labels, value.
    type Sample = (String, Vec<(String, String)>, f64);

    /// The page's samples.
    fn samples(text: &str) -> Vec<Sample> {
        text.lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let (name, mut rest) = series.split_once('{').unwrap_or((series, "}"));
                let mut labels = Vec::new();
                while let Some((key, after)) = rest.split_once("=\"") {
                    let (value, after) = after.split_once('"').unwrap();
                    labels.push((key.trim_start_matches(',').to_string(), value.to_string()));
                    rest = after;
                }
                (name.to_string(), labels, value.parse().unwrap())
            })
            .collect()
    }

    /// The sum of `name`'s series that carry every label in `want`, and how
    /// many there are.
    fn total(text: &str, name: &str, want: &[(&str, &str)]) -> (f64, usize) {
        let matching: Vec<f64> = samples(text)
            .into_iter()
            .filter(|(n, labels, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, value)| value)
            .collect();
        (matching.iter().sum(), matching.len())
    }

    fn sum(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
        let (sum, series) = total(text, name, want);
        assert!(series > 0, "no {name} {want:?} on the page");
        sum
    }

    /// Histogram `name`'s series that carry `want`, added up, hold exactly
    /// `observations`: at each of `bounds` those at or under it, at `+Inf`
    /// and in `_count` all of them, in `_sum` their sum.
    fn check_histogram(
        text: &str,
        name: &str,
        want: &[(&str, &str)],
        bounds: &[f64],
        observations: &[(f64, u64)],
    ) {
        let bucket = format!("{name}_bucket");
        let mut les: Vec<(f64, f64)> = Vec::new();
        for (n, labels, value) in samples(text) {
            let carries = want
                .iter()
                .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v));
            if n != bucket || !carries {
                continue;
            }
            let le = &labels.iter().find(|(k, _)| k == "le").unwrap().1;
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            match les.iter_mut().find(|(l, _)| *l == le) {
                Some((_, sum)) => *sum += value,
                None => les.push((le, value)),
            }
        }
        let mut expected_bounds = bounds.to_vec();
        expected_bounds.push(f64::INFINITY);
        assert_eq!(
            les.iter().map(|(le, _)| *le).collect::<Vec<_>>(),
            expected_bounds,
            "{name} {want:?}"
        );
        for (le, got) in &les {
            let expected: u64 = observations
                .iter()
                .filter(|(v, _)| v <= le)
                .map(|(_, c)| c)
                .sum();
            assert_eq!(*got, expected as f64, "{name} {want:?} le={le}");
        }
        let all: u64 = observations.iter().map(|(_, c)| c).sum();
        assert_eq!(
            sum(text, &format!("{name}_count"), want),
            all as f64,
            "{name}"
        );
        let expected: f64 = observations.iter().map(|(v, c)| v * *c as f64).sum();
        let got = sum(text, &format!("{name}_sum"), want);
        assert!(
            (got - expected).abs() <= 1e-9 * expected.max(1.0),
            "{name} {want:?}: sum {got}, expected {expected}"
        );
    }

    fn has(text: &str, line: &str) {
        assert!(text.lines().any(|l| l == line), "no line {line}");
    }

    fn finished() -> Finished {
        Finished {
            requests: 10,
            prompt_tokens: 5120,
            generation_tokens: 1280,
            ttft: vec![(0.05, 3), (0.2, 4), (1.5, 3)],
            itl: vec![(0.02, 1000), (0.06, 270)],
            e2e: vec![(2.6, 9), (30.0, 1)],
            queue: vec![(0.0, 5), (0.01, 4), (0.3, 1)],
        }
    }

    fn served(kind: Kind, data_parallel: u32, tp_copies: u32) -> String {
        page(
            kind,
            &Load {
                model: String::from("m"),
                data_parallel,
                tp_copies,
                finished: finished(),
                ..Load::default()
            },
        )
    }

    #[test]
    fn buckets_count_each_observation_at_the_first_bound_that_holds_it() {
        let counts = Buckets::of(&[0.1, 0.5, 1.0], &[(0.1, 2), (0.3, 1), (7.0, 4)]);
        assert_eq!(counts.cumulative, vec![2, 3, 3]);
        assert_eq!(counts.count, 7);
        assert!((counts.sum - 28.5).abs() < 1e-12);
        let none = Buckets::of(&[0.1, 0.5], &[]);
        assert_eq!(
            (none.cumulative, none.count, none.sum),
            (vec![0, 0], 0, 0.0)
        );
    }

    #[test]
    fn split_observations_add_up_to_the_whole_and_follow_share() {
        let observations = [(0.1, 3), (0.2, 4), (0.3, 0), (1.5, 3)];
        for parts in 1..5 {
            let split: Vec<Vec<(f64, u64)>> =
                (0..parts).map(|i| split(&observations, parts, i)).collect();
            for (j, &(value, times)) in observations.iter().enumerate() {
                assert!(split.iter().all(|part| part[j].0 == value));
                assert_eq!(split.iter().map(|part| part[j].1).sum::<u64>(), times);
            }
            for (i, part) in split.iter().enumerate() {
                let held: u64 = part.iter().map(|(_, c)| c).sum();
                assert_eq!(held, share(10, parts, i as u32), "{parts} parts");
            }
        }
    }

    #[test]
    fn vllm_counts_what_finished() {
        let f = finished();
        for kind in [Kind::Vllm, Kind::VllmOld] {
            let text = served(kind, 1, 1);
            has(
                &text,
                "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.25\",model_name=\"m\"} 7.0",
            );
            has(
                &text,
                "vllm:time_to_first_token_seconds_count{engine=\"0\",model_name=\"m\"} 10.0",
            );
            has(
                &text,
                "vllm:request_success_total{engine=\"0\",finished_reason=\"stop\",model_name=\"m\"} 4.0",
            );
            has(
                &text,
                "vllm:request_success_total{engine=\"0\",finished_reason=\"length\",model_name=\"m\"} 3.0",
            );
            has(
                &text,
                "vllm:request_queue_time_seconds_bucket{engine=\"0\",le=\"0.3\",model_name=\"m\"} 10.0",
            );
            assert_eq!(sum(&text, "vllm:request_success_total", &[]), 10.0);
            assert_eq!(sum(&text, "vllm:prompt_tokens_total", &[]), 5120.0);
            assert_eq!(sum(&text, "vllm:generation_tokens_total", &[]), 1280.0);
            for (name, bounds, observations) in [
                ("vllm:time_to_first_token_seconds", &TTFT[..], &f.ttft),
                ("vllm:e2e_request_latency_seconds", &LATENCY[..], &f.e2e),
                ("vllm:request_queue_time_seconds", &LATENCY[..], &f.queue),
            ] {
                check_histogram(&text, name, &[("engine", "0")], bounds, observations);
            }
            if kind == Kind::VllmOld {
                check_histogram(
                    &text,
                    "vllm:time_per_output_token_seconds",
                    &[],
                    &ITL,
                    &f.itl,
                );
                assert!(!text.contains("vllm:inter_token_latency_seconds"));
            } else {
                check_histogram(&text, "vllm:inter_token_latency_seconds", &[], &ITL, &f.itl);
                assert!(!text.contains("vllm:time_per_output_token_seconds"));
            }
        }
    }

    #[test]
    fn vllm_splits_what_finished_over_its_engines() {
        let f = finished();
        let text = served(Kind::Vllm, 3, 1);
        assert_eq!(sum(&text, "vllm:request_success_total", &[]), 10.0);
        assert_eq!(sum(&text, "vllm:prompt_tokens_total", &[]), 5120.0);
        assert_eq!(sum(&text, "vllm:generation_tokens_total", &[]), 1280.0);
        for e in 0..3 {
            let engine = e.to_string();
            let want = [("engine", engine.as_str())];
            let requests = sum(&text, "vllm:request_success_total", &want);
            assert_eq!(requests, share(10, 3, e) as f64);
            // Each engine saw as many first tokens as it finished requests.
            assert_eq!(
                sum(&text, "vllm:time_to_first_token_seconds_count", &want),
                requests
            );
            assert_eq!(
                sum(&text, "vllm:prompt_tokens_total", &want),
                share(5120, 3, e) as f64
            );
            for (name, bounds, observations) in [
                ("vllm:time_to_first_token_seconds", &TTFT[..], &f.ttft),
                ("vllm:inter_token_latency_seconds", &ITL[..], &f.itl),
                ("vllm:e2e_request_latency_seconds", &LATENCY[..], &f.e2e),
                ("vllm:request_queue_time_seconds", &LATENCY[..], &f.queue),
            ] {
                check_histogram(&text, name, &want, bounds, &split(observations, 3, e));
            }
        }
        // Added up over the engines, the whole.
        for (name, bounds, observations) in [
            ("vllm:time_to_first_token_seconds", &TTFT[..], &f.ttft),
            ("vllm:inter_token_latency_seconds", &ITL[..], &f.itl),
            ("vllm:e2e_request_latency_seconds", &LATENCY[..], &f.e2e),
            ("vllm:request_queue_time_seconds", &LATENCY[..], &f.queue),
        ] {
            check_histogram(&text, name, &[], bounds, observations);
        }
    }

    #[test]
    fn sglang_counts_what_finished() {
        let f = finished();
        let text = served(Kind::Sglang, 1, 2);
        has(
            &text,
            "sglang:num_requests_total{engine_type=\"unified\",is_streaming=\"true\",model_name=\"m\"} 5.0",
        );
        has(
            &text,
            "sglang:queue_time_seconds_bucket{engine_type=\"unified\",le=\"0.0\",model_name=\"m\",moe_ep_rank=\"0\",pp_rank=\"0\",tp_rank=\"1\"} 5.0",
        );
        has(&text, "# TYPE sglang:num_requests_total counter");
        for (name, all) in [
            ("sglang:num_requests_total", 10.0),
            ("sglang:prompt_tokens_total", 5120.0),
            ("sglang:generation_tokens_total", 1280.0),
        ] {
            assert_eq!(sum(&text, name, &[]), all, "{name}");
            assert_eq!(total(&text, name, &[("is_streaming", "false")]).1, 1);
        }
        check_histogram(
            &text,
            "sglang:time_to_first_token_seconds",
            &[],
            &SGLANG_TTFT,
            &f.ttft,
        );
        check_histogram(
            &text,
            "sglang:time_to_first_token_seconds",
            &[("is_streaming", "true")],
            &SGLANG_TTFT,
            &split(&f.ttft, 2, 0),
        );
        check_histogram(
            &text,
            "sglang:inter_token_latency_seconds",
            &[],
            &SGLANG_ITL,
            &f.itl,
        );
        check_histogram(
            &text,
            "sglang:e2e_request_latency_seconds",
            &[],
            &SGLANG_E2E,
            &f.e2e,
        );
        // Each TP rank's scheduler repeats the whole.
        for rank in ["0", "1"] {
            check_histogram(
                &text,
                "sglang:queue_time_seconds",
                &[("tp_rank", rank)],
                &SGLANG_QUEUE,
                &f.queue,
            );
        }
        // Data-parallel ranks split it.
        let text = served(Kind::Sglang, 2, 2);
        for d in 0..2 {
            let dp_rank = d.to_string();
            check_histogram(
                &text,
                "sglang:queue_time_seconds",
                &[("dp_rank", &dp_rank), ("tp_rank", "1")],
                &SGLANG_QUEUE,
                &split(&f.queue, 2, d),
            );
        }
        check_histogram(
            &text,
            "sglang:queue_time_seconds",
            &[("tp_rank", "0")],
            &SGLANG_QUEUE,
            &f.queue,
        );
    }

    #[test]
    fn trtllm_counts_what_finished() {
        let f = finished();
        let text = served(Kind::Trtllm, 1, 1);
        has(
            &text,
            "trtllm_request_success_total{engine_type=\"trtllm\",finished_reason=\"stop\",model_name=\"m\"} 4.0",
        );
        has(
            &text,
            "trtllm_prompt_tokens_total{engine_type=\"trtllm\",model_name=\"m\"} 5120.0",
        );
        has(
            &text,
            "trtllm_time_to_first_token_seconds_bucket{engine_type=\"trtllm\",le=\"0.25\",model_name=\"m\"} 7.0",
        );
        assert_eq!(sum(&text, "trtllm_request_success_total", &[]), 10.0);
        assert_eq!(sum(&text, "trtllm_generation_tokens_total", &[]), 1280.0);
        for (name, bounds, observations) in [
            ("trtllm_time_to_first_token_seconds", &TTFT[..], &f.ttft),
            ("trtllm_time_per_output_token_seconds", &ITL[..], &f.itl),
            ("trtllm_e2e_request_latency_seconds", &LATENCY[..], &f.e2e),
            ("trtllm_request_queue_time_seconds", &LATENCY[..], &f.queue),
        ] {
            check_histogram(&text, name, &[], bounds, observations);
        }
    }

    #[test]
    fn triton_counts_what_finished() {
        for kind in [Kind::Triton, Kind::TritonTrtllm] {
            let text = served(kind, 1, 1);
            for model in ["ensemble", "tensorrt_llm"] {
                let labels = format!("model=\"{model}\",version=\"1\"");
                has(
                    &text,
                    &format!("nv_inference_request_success{{{labels}}} 10"),
                );
                // 2.6 s × 9 + 30 s; 0 × 5 + 10 ms × 4 + 300 ms.
                has(
                    &text,
                    &format!("nv_inference_request_duration_us{{{labels}}} 53400000"),
                );
                has(
                    &text,
                    &format!("nv_inference_queue_duration_us{{{labels}}} 340000"),
                );
                let name = "nv_inference_first_response_histogram_ms";
                has(&text, &format!("{name}_bucket{{{labels},le=\"100\"}} 3"));
                has(&text, &format!("{name}_bucket{{{labels},le=\"500\"}} 7"));
                has(&text, &format!("{name}_bucket{{{labels},le=\"+Inf\"}} 10"));
                has(&text, &format!("{name}_count{{{labels}}} 10"));
                has(&text, &format!("{name}_sum{{{labels}}} 5450"));
                check_histogram(
                    &text,
                    name,
                    &[("model", model)],
                    &FIRST_RESPONSE_MS,
                    &[(50.0, 3), (200.0, 4), (1500.0, 3)],
                );
            }
            has(&text, "# TYPE nv_inference_request_success counter");
            assert!(!text.contains("nv_inference_request_success_total"));
        }
        // Whole milliseconds, cut down as Triton does.
        let text = page(
            Kind::Triton,
            &Load {
                finished: Finished {
                    ttft: vec![(0.1006, 2), (0.0999, 1)],
                    ..Finished::default()
                },
                ..Load::default()
            },
        );
        // 100.6 ms is 100 (rounding would make it 101, past le="100").
        has(&text, "nv_inference_first_response_histogram_ms_bucket{model=\"ensemble\",version=\"1\",le=\"100\"} 3");
        has(
            &text,
            "nv_inference_first_response_histogram_ms_sum{model=\"ensemble\",version=\"1\"} 299",
        );
    }

    #[test]
    fn nothing_finished_is_every_bucket_at_zero() {
        let none: &[(f64, u64)] = &[];
        for (kind, histograms) in [
            (
                Kind::Vllm,
                &[
                    ("vllm:time_to_first_token_seconds", &TTFT[..]),
                    ("vllm:inter_token_latency_seconds", &ITL[..]),
                    ("vllm:e2e_request_latency_seconds", &LATENCY[..]),
                    ("vllm:request_queue_time_seconds", &LATENCY[..]),
                ][..],
            ),
            (
                Kind::VllmOld,
                &[("vllm:time_per_output_token_seconds", &ITL[..])][..],
            ),
            (
                Kind::Sglang,
                &[
                    ("sglang:time_to_first_token_seconds", &SGLANG_TTFT[..]),
                    ("sglang:inter_token_latency_seconds", &SGLANG_ITL[..]),
                    ("sglang:e2e_request_latency_seconds", &SGLANG_E2E[..]),
                    ("sglang:queue_time_seconds", &SGLANG_QUEUE[..]),
                ][..],
            ),
            (
                Kind::Trtllm,
                &[
                    ("trtllm_time_to_first_token_seconds", &TTFT[..]),
                    ("trtllm_time_per_output_token_seconds", &ITL[..]),
                    ("trtllm_e2e_request_latency_seconds", &LATENCY[..]),
                    ("trtllm_request_queue_time_seconds", &LATENCY[..]),
                ][..],
            ),
            (
                Kind::Triton,
                &[(
                    "nv_inference_first_response_histogram_ms",
                    &FIRST_RESPONSE_MS[..],
                )][..],
            ),
        ] {
            let text = page(kind, &Load::default());
            for (name, bounds) in histograms {
                check_histogram(&text, name, &[], bounds, none);
            }
        }
        let text = page(Kind::Vllm, &Load::default());
        assert_eq!(total(&text, "vllm:request_success_total", &[]), (0.0, 3));
        let text = page(Kind::Sglang, &Load::default());
        assert_eq!(total(&text, "sglang:num_requests_total", &[]), (0.0, 2));
    }

    #[test]
    fn every_page_declares_what_it_holds() {
        for kind in [
            Kind::Vllm,
            Kind::VllmOld,
            Kind::Sglang,
            Kind::Trtllm,
            Kind::TritonTrtllm,
            Kind::Triton,
        ] {
            let text = page(
                kind,
                &Load {
                    waiting: 7,
                    running: 3,
                    kv: 0.5,
                    ..Load::default()
                },
            );
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                let name = line.split(['{', ' ']).next().unwrap();
                let declared = text.contains(&format!("# TYPE {name} "))
                    || ["_bucket", "_count", "_sum"].iter().any(|s| {
                        name.strip_suffix(s)
                            .is_some_and(|base| text.contains(&format!("# TYPE {base} ")))
                    })
                    || name.starts_with("python_gc");
                assert!(declared, "{kind:?}: {line}");
            }
        }
    }
}
