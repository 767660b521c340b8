//! `/metrics` pages shaped like each engine's real output: the same family
//! names, `# HELP`/`# TYPE` lines, label names in the order the engines'
//! Prometheus clients write them (sorted, for the Python ones), histograms
//! with their real bucket bounds, and the neighbouring families a scraper
//! must skip. Values come from a [`Load`]. Pure text generation.

use std::fmt::Write;

/// Which engine's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// vLLM v0.12 and later.
    Vllm,
    /// vLLM before v0.11: `vllm:gpu_cache_usage_perc`, no `kv_cache_usage_perc`.
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

/// A histogram in prometheus_client's layout: buckets, `+Inf`, count, sum,
/// and a `_created` gauge. `labels` are the series' own, sorted with `le`.
fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    buckets: &[f64],
    series: &[String],
    created: bool,
) {
    header(out, name, help, "histogram");
    for labels in series {
        let (before, after) = split_for_le(labels);
        let mut count = 0.0;
        for (i, bound) in buckets.iter().enumerate() {
            count += (i % 3) as f64;
            let _ = writeln!(
                out,
                "{name}_bucket{{{before}le=\"{}\"{after}}} {}",
                py(*bound),
                py(count)
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{before}le=\"+Inf\"{after}}} {}",
            py(count)
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", py(count));
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", py(count * 0.731));
    }
    if created {
        let created_name = format!("{name}_created");
        header(out, &created_name, help, "gauge");
        for labels in series {
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
        &tokens(97.0),
        true,
    );
    counter(
        out,
        "vllm:generation_tokens",
        "Number of generation tokens processed.",
        &tokens(311.0),
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
    let finished: Vec<(String, f64)> = labels
        .iter()
        .flat_map(|l| {
            ["abort", "length", "stop"]
                .into_iter()
                .map(move |reason| (format!("{l},finished_reason=\"{reason}\""), 17.0))
        })
        .map(|(l, v)| {
            // Sorted: engine, finished_reason, model_name.
            let mut parts: Vec<&str> = l.split(',').collect();
            parts.sort();
            (parts.join(","), v)
        })
        .collect();
    counter(
        out,
        "vllm:request_success",
        "Count of successfully processed requests.",
        &finished,
        true,
    );
    for (name, help, buckets) in [
        (
            "vllm:iteration_tokens_total",
            "Histogram of number of tokens per engine_step.",
            &ITERATION[..],
        ),
        (
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            &TTFT[..],
        ),
        (
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            &ITL[..],
        ),
        (
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            &ITL[..],
        ),
        (
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            &LATENCY[..],
        ),
        (
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            &LATENCY[..],
        ),
        (
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            &LATENCY[..],
        ),
        (
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            &LATENCY[..],
        ),
        (
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            &LATENCY[..],
        ),
        (
            "vllm:request_prompt_tokens",
            "Number of prefill tokens processed.",
            &TOKENS[..],
        ),
        (
            "vllm:request_generation_tokens",
            "Number of generation tokens processed.",
            &TOKENS[..],
        ),
        (
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            &TOKENS[..],
        ),
        (
            "vllm:request_params_n",
            "Histogram of the n request parameter.",
            &[1.0, 2.0, 5.0, 10.0, 20.0][..],
        ),
        (
            "vllm:request_params_max_tokens",
            "Histogram of the max_tokens request parameter.",
            &TOKENS[..],
        ),
    ] {
        histogram(out, name, help, buckets, &labels, true);
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
    let labels = vec![format!("model_name=\"{}\"", load.model)];
    counter(
        out,
        "sglang:prompt_tokens",
        "Number of prefill tokens processed.",
        &[(labels[0].clone(), 120_500.0)],
        false,
    );
    counter(
        out,
        "sglang:generation_tokens",
        "Number of generation tokens processed.",
        &[(labels[0].clone(), 380_120.0)],
        false,
    );
    histogram(
        out,
        "sglang:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        &[
            0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0,
            200.0, 400.0,
        ],
        &labels,
        false,
    );
    histogram(
        out,
        "sglang:e2e_request_latency_seconds",
        "Histogram of End-to-end request latency in seconds",
        &[
            0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0,
            200.0, 400.0, 800.0,
        ],
        &labels,
        false,
    );
}

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
    counter(
        out,
        "trtllm_request_success",
        "Count of successfully processed requests.",
        &[(format!("{labels},finished_reason=\"stop\""), 311.0)],
        false,
    );
    histogram(
        out,
        "trtllm_time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        &TTFT,
        std::slice::from_ref(&labels),
        false,
    );
    histogram(
        out,
        "trtllm_e2e_request_latency_seconds",
        "Histogram of end to end request latency in seconds.",
        &LATENCY,
        &[labels],
        false,
    );
}

fn triton(out: &mut String, load: &Load, trtllm: bool) {
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
        header(out, name, help, kind);
        for model in models {
            let _ = writeln!(out, "{name}{{model=\"{model}\",version=\"1\"}} 1024");
        }
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
