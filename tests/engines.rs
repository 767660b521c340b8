//! Engine triggers through the real gRPC server, scraper and HTTP client:
//! fake engine replicas serve pages shaped like each engine's on loopback
//! addresses that share one port (as a headless Service's pods do), and a
//! table stands in for cluster DNS, so that "no address" and "no such
//! name" can be answered as CoreDNS answers them. Process-level failures
//! (a stopped replica) are in `engines_process.rs`.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::fleet::{Dns, Fleet, Scaler};
use common::*;
use fake_engine::{Answer, Behaviour, Kind, Load};
use grpcio::RpcStatusCode;

/// Long enough that a loaded 2-core machine does not miss it by accident;
/// tests that stall a replica use it with [`SLOW_INTERVAL`].
const TIMEOUT: &str = "300ms";
const SLOW_INTERVAL: Duration = Duration::from_millis(500);

fn load(waiting: u64, running: u64, kv: f64) -> Load {
    Load {
        waiting,
        running,
        kv,
        ..Load::default()
    }
}

fn endpoint(name: &str, port: u16) -> String {
    format!("{name}:{port}")
}

#[test]
fn every_replica_is_read_and_summed_or_averaged() {
    let dns = Dns::default();
    let fleet = Fleet::start(
        Kind::Vllm,
        &[load(3, 4, 0.2), load(8, 6, 0.4), load(1, 2, 0.6)],
    );
    dns.set("vllm.ml", &fleet.ips());
    let scaler = Scaler::start(&dns);
    let at = endpoint("vllm.ml", fleet.port);
    let queue = [("profile", "vllm-queue"), ("engineEndpoints", at.as_str())];
    assert_eq!(scaler.value(&queue), Ok(12.0));
    let running = [
        ("engine", "vllm"),
        ("metricType", "running_requests"),
        ("targetValue", "8"),
        ("engineEndpoints", at.as_str()),
    ];
    assert_eq!(scaler.value(&running), Ok(12.0));
    let kv = [
        ("profile", "vllm-kv-cache"),
        ("engineEndpoints", at.as_str()),
    ];
    let average = scaler.value(&kv).unwrap();
    assert!((average - 40.0).abs() < 1e-9, "{average}");
    assert!(is_active(&scaler.client, &kv).unwrap().result());

    // The explanation lists every replica with its value.
    let explained = explain(scaler.server.port(), &queue).unwrap();
    assert_eq!(explained.value(), 12.0);
    let mut values: Vec<(String, f64)> = explained
        .replicas()
        .iter()
        .map(|r| (r.address().to_string(), r.value()))
        .collect();
    values.sort_by(|a, b| a.0.cmp(&b.0));
    let port = fleet.port;
    assert_eq!(
        values,
        vec![
            (format!("127.0.0.2:{port}"), 3.0),
            (format!("127.0.0.3:{port}"), 8.0),
            (format!("127.0.0.4:{port}"), 1.0)
        ]
    );
    assert!(explained
        .replicas()
        .iter()
        .all(|r| r.counted() && r.reason() == "counted"));
}

#[test]
fn each_engine_is_read_by_its_own_names() {
    let dns = Dns::default();
    let scaler = Scaler::start(&dns);
    // (page, engine, metricType, value expected, extra keys)
    let busy = Load {
        waiting: 7,
        running: 5,
        kv: 0.5,
        data_parallel: 2,
        tp_copies: 2,
        ..Load::default()
    };
    type Case<'a> = (Kind, &'a str, &'a str, f64, &'a [(&'a str, &'a str)]);
    let cases: [Case; 11] = [
        // Two data-parallel engines on one page: queues add up, KV takes the fuller.
        (Kind::Vllm, "vllm", "queue_length", 7.0, &[]),
        (Kind::Vllm, "vllm", "kv_cache_usage_percent", 50.0, &[]),
        // vLLM before v0.11 only has the old KV name.
        (Kind::VllmOld, "vllm", "kv_cache_usage_percent", 50.0, &[]),
        // SGLang repeating every series per TP rank: counted once.
        (Kind::Sglang, "sglang", "queue_length", 7.0, &[]),
        (Kind::Sglang, "sglang", "running_requests", 5.0, &[]),
        (Kind::Sglang, "sglang", "kv_cache_usage_percent", 50.0, &[]),
        // trtllm-serve: Prometheus text at /prometheus/metrics (its /metrics is JSON).
        (Kind::Trtllm, "trtllm", "queue_length", 7.0, &[]),
        (Kind::Trtllm, "trtllm", "kv_cache_usage_percent", 50.0, &[]),
        // Triton with TensorRT-LLM: request_type and kv_cache_block_type series.
        (Kind::TritonTrtllm, "triton", "running_requests", 5.0, &[]),
        (
            Kind::TritonTrtllm,
            "triton",
            "kv_cache_usage_percent",
            50.0,
            &[],
        ),
        // Triton without it: the pending count of the model named.
        (
            Kind::Triton,
            "triton",
            "queue_length",
            7.0,
            &[("engineModel", "ensemble")],
        ),
    ];
    for (i, (kind, engine, metric, expected, extra)) in cases.iter().enumerate() {
        let fleet = Fleet::start(*kind, std::slice::from_ref(&busy));
        let name = format!("engine-{i}.ml");
        dns.set(&name, &fleet.ips());
        let at = endpoint(&name, fleet.port);
        let mut pairs = vec![
            ("engine", *engine),
            ("metricType", *metric),
            ("targetValue", "5"),
            ("engineEndpoints", at.as_str()),
        ];
        pairs.extend_from_slice(extra);
        let value = scaler.value(&pairs);
        assert!(
            matches!(value, Ok(v) if (v - expected).abs() < 1e-9),
            "{kind:?} {metric}: {value:?}, expected {expected}"
        );
    }
    // Triton with TensorRT-LLM queues inside the backend: its `waiting`.
    let fleet = Fleet::start(Kind::TritonTrtllm, std::slice::from_ref(&busy));
    dns.set("triton.ml", &fleet.ips());
    let at = endpoint("triton.ml", fleet.port);
    let pairs = [
        ("engine", "triton"),
        ("metricType", "queue_length"),
        ("targetValue", "5"),
        ("engineEndpoints", at.as_str()),
    ];
    assert_eq!(scaler.value(&pairs), Ok(7.0));
}

#[test]
fn a_replica_that_stops_answering_counts_as_its_last_read_else_by_the_hpa_rule() {
    let dns = Dns::default();
    // Four replicas, two waiting each: 8 in all, below 5 per replica.
    let fleet = Fleet::start(Kind::Vllm, &vec![load(2, 1, 0.1); 4]);
    dns.set("vllm.ml", &fleet.ips());
    let scaler = Scaler::start_with(&dns, None, SLOW_INTERVAL);
    let at = endpoint("vllm.ml", fleet.port);
    let queue = [
        ("profile", "vllm-queue"),
        ("engineEndpoints", at.as_str()),
        ("engineTimeout", TIMEOUT),
    ];
    assert_eq!(scaler.value(&queue), Ok(8.0));

    // Each way a replica can fail, one at a time: read a moment ago, it
    // counts as what it last said (2), so the total stays 8, neither 6
    // nor 11. The /metrics page counts each read by its outcome.
    let reads = |outcome: &str| {
        let all = scaler.server.engines().reads();
        all.iter().find(|(o, _)| o.label() == outcome).unwrap().1
    };
    type Break = Box<dyn Fn(&mut Behaviour)>;
    let failures: [(&str, &str, Break); 5] = [
        (
            "no answer before the deadline",
            "timeout",
            Box::new(|b| b.answer = Answer::Stall),
        ),
        (
            "HTTP status 503",
            "http_status",
            Box::new(|b| b.answer = Answer::Status(503)),
        ),
        (
            "malformed HTTP answer",
            "bad_answer",
            Box::new(|b| b.answer = Answer::Garbage),
        ),
        (
            "the page is not Prometheus text",
            "not_prometheus",
            Box::new(|b| b.page = Some("vllm:num_requests_waiting{model_name=\"m\" 3\n".into())),
        ),
        (
            "the page has no vllm:num_requests_waiting",
            "ok",
            Box::new(|b| b.kind = Kind::Sglang),
        ),
    ];
    for (why, outcome, break_it) in &failures {
        let before = reads(outcome);
        fleet.replicas[3].set(|b| break_it(b));
        assert!(
            wait_until(PATIENCE, || {
                // Replicas are read when a trigger asks.
                let _ = scaler.value(&queue);
                reads(outcome) > before
            }),
            "{why}: no {outcome} read counted"
        );
        let explained = explain(scaler.server.port(), &queue).unwrap();
        let stood_in: Vec<_> = explained
            .replicas()
            .iter()
            .filter(|r| r.reason() != "counted")
            .collect();
        assert_eq!(stood_in.len(), 1, "{why}: {explained:?}");
        assert!(
            stood_in[0].reason().starts_with("missing (")
                && stood_in[0].reason().contains(why)
                && stood_in[0]
                    .reason()
                    .contains("counted as its last read, 2, from"),
            "{why}: {}",
            stood_in[0].reason()
        );
        assert_eq!(explained.value(), 8.0, "{why}");
        fleet.replicas[3].set(|b| *b = Behaviour::new(Kind::Vllm, load(2, 1, 0.1)));
        wait_for_value(&scaler.client, &queue, 8.0);
    }

    // A replica never read (nothing listens at its address: refused) has
    // no last read: the HPA's rule. Below the target it counts as at the
    // target (5): 4 x 2 + 5 = 13.
    let mut ips = fleet.ips();
    ips.push(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 250)));
    dns.set("vllm.ml", &ips);
    wait_for_value(&scaler.client, &queue, 13.0);
    assert!(reads("connection_error") > 0);
    let explained = explain(scaler.server.port(), &queue).unwrap();
    let missing: Vec<_> = explained
        .replicas()
        .iter()
        .filter(|r| !r.counted())
        .collect();
    assert_eq!(missing.len(), 1, "{explained:?}");
    assert!(
        missing[0].reason().starts_with("missing, counted as 5:"),
        "{}",
        missing[0].reason()
    );

    // Above the target, the missing one counts as 0, but never so low
    // that the count would fall: 4 replicas at 20 sum to 80.
    for replica in &fleet.replicas {
        replica.set(|b| b.load.waiting = 20);
    }
    wait_for_value(&scaler.client, &queue, 80.0);
    // 4 at 6 would read 24 < 5 x 5 with a 0: it reads 25, no change.
    for replica in &fleet.replicas {
        replica.set(|b| b.load.waiting = 6);
    }
    wait_for_value(&scaler.client, &queue, 25.0);
}

#[test]
fn no_replica_answering_is_an_error_naming_each() {
    let dns = Dns::default();
    let fleet = Fleet::start(Kind::Vllm, &[load(2, 1, 0.1), load(2, 1, 0.1)]);
    dns.set("vllm.ml", &fleet.ips());
    let scaler = Scaler::start_with(&dns, None, SLOW_INTERVAL);
    let at = endpoint("vllm.ml", fleet.port);
    let queue = [
        ("profile", "vllm-queue"),
        ("engineEndpoints", at.as_str()),
        ("engineTimeout", TIMEOUT),
    ];
    fleet.replicas[0].set(|b| b.answer = Answer::Stall);
    fleet.replicas[1].set(|b| b.answer = Answer::Status(500));
    let message = wait_for_error(
        &scaler.client,
        &queue,
        RpcStatusCode::UNAVAILABLE,
        "no replica of",
    );
    let port = fleet.port;
    assert!(
        message.contains(&format!("127.0.0.2:{port}: no answer before the deadline"))
            && message.contains(&format!("127.0.0.3:{port}: HTTP status 500")),
        "{message}"
    );
    // IsActive fails alike, with the same message.
    let (code, active) = status_of(is_active(&scaler.client, &queue).unwrap_err());
    assert_eq!(code, RpcStatusCode::UNAVAILABLE);
    assert!(
        active.contains("no replica of")
            && active.contains(&format!("127.0.0.3:{port}: HTTP status 500")),
        "{active}"
    );
}

#[test]
fn a_page_without_the_metric_says_what_it_has() {
    let dns = Dns::default();
    let fleet = Fleet::start(Kind::Vllm, &[load(2, 1, 0.3)]);
    dns.set("vllm.ml", &fleet.ips());
    let scaler = Scaler::start(&dns);
    let at = endpoint("vllm.ml", fleet.port);
    // A dashboard-era name that vLLM removed: the page's own vllm: names are listed.
    let old = [
        ("engineMetric", "vllm:gpu_cache_usage_perc"),
        ("engine", "vllm"),
        ("targetValue", "0.8"),
        ("engineEndpoints", at.as_str()),
    ];
    let (code, message) = scaler.value(&old).unwrap_err();
    assert_eq!(code, RpcStatusCode::UNAVAILABLE);
    assert!(
        message.contains("the page has no vllm:gpu_cache_usage_perc; it has vllm:num_requests_running, vllm:num_requests_waiting, vllm:engine_sleep_state, vllm:kv_cache_usage_perc"),
        "{message}"
    );
    // A model the replicas do not serve: the models they do are named.
    let other_model = [
        ("profile", "vllm-queue"),
        ("engineModel", "mistral"),
        ("engineEndpoints", at.as_str()),
    ];
    let (_, message) = scaler.value(&other_model).unwrap_err();
    assert!(
        message.contains("model_name=\"mistral\"")
            && message.contains("it has vllm:num_requests_waiting{engine=\"0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"}"),
        "{message}"
    );
    // A counter is a rate over a window: its first read warms up, never
    // a 0 (tests/slo.rs follows it to a value).
    let counter = [
        ("engineMetric", "vllm:prompt_tokens_total"),
        ("engine", "vllm"),
        ("targetValue", "100"),
        ("engineEndpoints", at.as_str()),
    ];
    let (code, message) = scaler.value(&counter).unwrap_err();
    assert_eq!(code, RpcStatusCode::UNAVAILABLE);
    assert!(message.contains("warming up"), "{message}");
    // Any gauge by name and labels.
    let custom = [
        (
            "engineMetric",
            "vllm:engine_sleep_state{sleep_state=\"awake\"}",
        ),
        ("engine", "vllm"),
        ("targetValue", "1"),
        ("engineEndpoints", at.as_str()),
    ];
    assert_eq!(scaler.value(&custom), Ok(1.0));
}

#[test]
fn a_workload_at_zero_replicas_reads_zero_and_a_wrong_name_does_not() {
    let dns = Dns::default();
    let kubelet = FakeKubelet::default();
    let scaler = Scaler::start_with(&dns, Some(&kubelet), INTERVAL);
    let port = free_port().to_string();

    // Without a workload, a name with no address is an error, whether DNS
    // says the name exists (NODATA) or not (NXDOMAIN): zero replicas,
    // replicas that are all unready, and a typo look alike.
    dns.set("empty.ml", &[]);
    for name in ["empty.ml", "vlm.ml"] {
        let at = format!("{name}:{port}");
        let pairs = [("profile", "vllm-queue"), ("engineEndpoints", at.as_str())];
        let (code, message) = scaler.value(&pairs).unwrap_err();
        assert_eq!(code, RpcStatusCode::UNAVAILABLE);
        assert!(message.contains("set workload"), "{message}");
    }
    let typo = format!("vlm.ml:{port}");
    let pairs = [
        ("profile", "vllm-queue"),
        ("engineEndpoints", typo.as_str()),
    ];
    let (_, message) = scaler.value(&pairs).unwrap_err();
    assert!(message.contains("is unknown to DNS"), "{message}");

    // With workload, attribution decides: no pod holds a GPU, so 0 and
    // inactive ...
    let with_workload = [
        ("profile", "vllm-queue"),
        ("engineEndpoints", typo.as_str()),
        ("workload", "vllm"),
    ];
    wait_for_value(&scaler.client, &with_workload, 0.0);
    assert!(!is_active(&scaler.client, &with_workload).unwrap().result());
    // ... and once a pod of it holds a GPU, the name should have an address.
    kubelet.set_pods(&[("default", "vllm-7d9f8b6c5d-x2k4p", "GPU-0")]);
    let message = wait_for_error(
        &scaler.client,
        &with_workload,
        RpcStatusCode::UNAVAILABLE,
        "has pods holding GPUs (default/vllm-7d9f8b6c5d-x2k4p)",
    );
    assert!(message.contains("none is ready"), "{message}");

    // A workload scaled to zero: its name loses its addresses and its pods
    // are gone, so 0.
    kubelet.set_pods(&[]);
    let fleet = Fleet::start(Kind::Vllm, &[load(4, 1, 0.1)]);
    dns.set("vllm.ml", &fleet.ips());
    let at = endpoint("vllm.ml", fleet.port);
    let pairs = [
        ("profile", "vllm-queue"),
        ("engineEndpoints", at.as_str()),
        ("workload", "vllm"),
    ];
    wait_for_value(&scaler.client, &pairs, 4.0);
    dns.remove("vllm.ml");
    wait_for_value(&scaler.client, &pairs, 0.0);
    let explained = explain(scaler.server.port(), &pairs).unwrap();
    assert!(
        explained.replicas()[0].reason().contains("unknown to DNS"),
        "{explained:?}"
    );

    // A lookup that fails is no answer about the replicas: an error, even
    // with a workload whose pods are gone.
    dns.fail("vllm.ml");
    let message = wait_for_error(
        &scaler.client,
        &pairs,
        RpcStatusCode::UNAVAILABLE,
        "DNS lookup failed",
    );
    assert!(
        message.contains("Temporary failure in name resolution"),
        "{message}"
    );
}

#[test]
fn each_endpoint_is_read_once_per_interval_whatever_the_callers() {
    let dns = Dns::default();
    let fleet = Fleet::start(Kind::Vllm, &[load(3, 1, 0.1), load(3, 1, 0.1)]);
    dns.set("vllm.ml", &fleet.ips());
    // A long interval, so that every call below falls within one.
    let scaler = Scaler::start_with(&dns, None, Duration::from_secs(30));
    let at = endpoint("vllm.ml", fleet.port);
    let queue = [("profile", "vllm-queue"), ("engineEndpoints", at.as_str())];
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let client = scaler.client.clone();
            let queue: Vec<(String, String)> = queue
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            std::thread::spawn(move || {
                let pairs: Vec<(&str, &str)> = queue
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                (0..5).map(|_| value(&client, &pairs)).collect::<Vec<_>>()
            })
        })
        .collect();
    for thread in threads {
        assert!(thread.join().unwrap().iter().all(|v| *v == Ok(6.0)));
    }
    assert_eq!(fleet.hits(), 2, "80 calls, two replicas, one read each");
    assert_eq!(scaler.server.engines().rounds(), 1);
}

#[test]
fn an_engine_timeout_at_or_above_the_interval_is_refused() {
    let dns = Dns::default();
    dns.set("vllm.ml", &[IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    let scaler = Scaler::start(&dns);
    let pairs = [
        ("profile", "vllm-queue"),
        ("engineEndpoints", "vllm.ml"),
        ("engineTimeout", "100ms"),
    ];
    let (code, message) = scaler.value(&pairs).unwrap_err();
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    assert!(
        message.starts_with(
            "invalid engineTimeout 100ms: it must be below this scaler's sample interval (100ms)"
        ),
        "{message}"
    );
    // Unset, it is half the interval here (1s where the interval allows).
    let pairs = [("profile", "vllm-queue"), ("engineEndpoints", "vllm.ml")];
    let (code, message) = scaler.value(&pairs).unwrap_err();
    assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{message}");
    assert!(
        message.starts_with(
            "no replica of http://vllm.ml:8000/metrics could be read: 127.0.0.1:8000:"
        ),
        "{message}"
    );
}

#[test]
fn push_streams_follow_the_engine_queue() {
    use futures_util::StreamExt;
    let dns = Dns::default();
    let fleet = Fleet::start(Kind::Vllm, &[load(0, 0, 0.0), load(0, 0, 0.0)]);
    dns.set("vllm.ml", &fleet.ips());
    let scaler = Scaler::start_with(&dns, None, SLOW_INTERVAL);
    let at = endpoint("vllm.ml", fleet.port);
    let pairs = [
        ("profile", "vllm-queue"),
        ("engineEndpoints", at.as_str()),
        ("engineTimeout", TIMEOUT),
        ("pollIntervalSeconds", "3600"),
    ];
    let mut stream = scaler
        .client
        .stream_is_active_opt(&scaled_object(&pairs), call_option())
        .unwrap();
    let mut next = || match futures_executor::block_on(stream.next()).expect("a message") {
        Ok(response) => Ok(response.result()),
        Err(e) => Err(status_of(e)),
    };
    assert_eq!(next(), Ok(false), "nothing waits");
    fleet.replicas[1].set(|b| b.load.waiting = 3);
    assert_eq!(next(), Ok(true), "a queue wakes the workload");
    // Every replica silent: the stream ends with an error, not a false.
    for replica in &fleet.replicas {
        replica.set(|b| b.answer = Answer::Stall);
    }
    let (code, message) = next().unwrap_err();
    assert_eq!(code, RpcStatusCode::UNAVAILABLE);
    assert!(message.contains("no replica of"), "{message}");
}

#[test]
fn pages_that_would_read_low_do_not() {
    let dns = Dns::default();
    // SGLang with priority scheduling: the total under priority="", a
    // breakdown beside it. Counted once: 7 + 3, not 14 + 6.
    let sglang = |total: u32, high: u32| {
        format!(
            "# TYPE sglang:num_queue_reqs gauge\n\
             sglang:num_queue_reqs{{model_name=\"m\",priority=\"\",tp_rank=\"0\"}} {total}\n\
             sglang:num_queue_reqs{{model_name=\"m\",priority=\"0\",tp_rank=\"0\"}} {}\n\
             sglang:num_queue_reqs{{model_name=\"m\",priority=\"9\",tp_rank=\"0\"}} {high}\n",
            total - high
        )
    };
    let (a, b) = (sglang(7, 2), sglang(3, 1));
    let fleet = Fleet::pages(Kind::Sglang, &[&a, &b]);
    dns.set("sglang.ml", &fleet.ips());
    let scaler = Scaler::start(&dns);
    let at = endpoint("sglang.ml", fleet.port);
    let queue = [
        ("profile", "sglang-queue"),
        ("engineEndpoints", at.as_str()),
    ];
    assert_eq!(scaler.value(&queue), Ok(10.0));

    // Triton: the TensorRT-LLM family is on the page, but not for the
    // model asked; the pending count (0) must not stand in.
    let triton = "# TYPE nv_trt_llm_request_metrics gauge\n\
        nv_trt_llm_request_metrics{model=\"tensorrt_llm\",request_type=\"waiting\",version=\"1\"} 30\n\
        # TYPE nv_inference_pending_request_count gauge\n\
        nv_inference_pending_request_count{model=\"ensemble\",version=\"1\"} 0\n";
    let fleet = Fleet::pages(Kind::Triton, &[triton]);
    dns.set("triton.ml", &fleet.ips());
    let at = endpoint("triton.ml", fleet.port);
    let ensemble = [
        ("engine", "triton"),
        ("metricType", "queue_length"),
        ("targetValue", "5"),
        ("engineModel", "ensemble"),
        ("engineEndpoints", at.as_str()),
    ];
    let (code, message) = scaler.value(&ensemble).unwrap_err();
    assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{message}");
    assert!(message.contains("model=\"tensorrt_llm\""), "{message}");

    // One series of a pod is NaN (or negative): that replica is missing,
    // not read low; alone, the trigger is UNAVAILABLE naming the series.
    let nan = "# TYPE vllm:num_requests_waiting gauge\n\
        vllm:num_requests_waiting{engine=\"0\"} 40\n\
        vllm:num_requests_waiting{engine=\"1\"} -3\n";
    let fleet = Fleet::pages(Kind::Vllm, &[nan]);
    dns.set("vllm.ml", &fleet.ips());
    let at = endpoint("vllm.ml", fleet.port);
    let vllm = [("profile", "vllm-queue"), ("engineEndpoints", at.as_str())];
    let (code, message) = scaler.value(&vllm).unwrap_err();
    assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{message}");
    assert!(
        message.contains("engine=\"1\"") && message.contains("not a finite number >= 0"),
        "{message}"
    );

    // A counter's sample asked for by its sample name.
    let counter = "# TYPE vllm:num_preemptions counter\n\
        vllm:num_preemptions_total{model_name=\"m\"} 1234\n";
    let fleet = Fleet::pages(Kind::Vllm, &[counter]);
    dns.set("preempt.ml", &fleet.ips());
    let at = endpoint("preempt.ml", fleet.port);
    let custom = [
        ("engineMetric", "vllm:num_preemptions_total"),
        ("targetValue", "5"),
        ("engineEndpoints", at.as_str()),
    ];
    // Typed as its family, it is a counter: a rate over a window (warming
    // up on its first read), never the climbing total read as a gauge.
    let (code, message) = scaler.value(&custom).unwrap_err();
    assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{message}");
    assert!(message.contains("warming up"), "{message}");
}

#[test]
fn an_endpoint_without_addresses_beside_others_is_no_smaller_sum() {
    let dns = Dns::default();
    let a = Fleet::start(Kind::Vllm, &[load(4, 1, 0.1)]);
    let b = Fleet::start(Kind::Vllm, &[load(40, 1, 0.1)]);
    dns.set("a.ml", &a.ips());
    dns.set("b.ml", &b.ips());
    let scaler = Scaler::start_with(&dns, None, SLOW_INTERVAL);
    let both = format!("{},{}", endpoint("a.ml", a.port), endpoint("b.ml", b.port));
    let queue = [
        ("profile", "vllm-queue"),
        ("engineEndpoints", both.as_str()),
        ("engineTimeout", TIMEOUT),
    ];
    wait_for_value(&scaler.client, &queue, 44.0);

    // b's only pod fails readiness and leaves DNS: read a moment ago, it
    // counts as what it last said; the value does not drop to 4.
    dns.remove("b.ml");
    assert!(wait_until(PATIENCE, || {
        explain(scaler.server.port(), &queue)
            .map(|e| {
                e.replicas().iter().any(|r| {
                    r.reason()
                        .starts_with("no longer named by DNS; counted as its last read, 40")
                })
            })
            .unwrap_or(false)
    }));
    assert_eq!(scaler.value(&queue), Ok(44.0));

    // A misspelt second endpoint, never read: UNAVAILABLE naming it.
    let typo = format!("{},{}", endpoint("a.ml", a.port), endpoint("bb.ml", b.port));
    let misspelt = [
        ("profile", "vllm-queue"),
        ("engineEndpoints", typo.as_str()),
        ("engineTimeout", TIMEOUT),
    ];
    let (code, message) = scaler.value(&misspelt).unwrap_err();
    assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{message}");
    assert!(
        message.contains("bb.ml")
            && message.contains("is unknown to DNS")
            && message.contains("other endpoints have replicas"),
        "{message}"
    );
}

#[test]
fn the_series_cap_counts_only_the_model_asked_for() {
    // A Triton server with 300 models: over the 256 series kept per
    // family, but engineModel keeps one.
    let mut page = String::from("# TYPE nv_trt_llm_request_metrics gauge\n");
    for i in 0..300 {
        page.push_str(&format!(
            "nv_trt_llm_request_metrics{{model=\"m{i}\",request_type=\"waiting\",version=\"1\"}} {}\n",
            i % 7
        ));
    }
    let dns = Dns::default();
    let fleet = Fleet::pages(Kind::Triton, &[&page]);
    dns.set("triton.ml", &fleet.ips());
    let scaler = Scaler::start(&dns);
    let at = endpoint("triton.ml", fleet.port);
    let one = [
        ("engine", "triton"),
        ("metricType", "queue_length"),
        ("targetValue", "5"),
        ("engineModel", "m299"),
        ("engineEndpoints", at.as_str()),
    ];
    assert_eq!(scaler.value(&one), Ok((299 % 7) as f64));
    // Without engineModel, every series is kept: over the cap, an error.
    let all = [
        ("engine", "triton"),
        ("metricType", "queue_length"),
        ("targetValue", "5"),
        ("engineEndpoints", at.as_str()),
    ];
    let (code, message) = scaler.value(&all).unwrap_err();
    assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{message}");
    assert!(message.contains("more than 256 series"), "{message}");
}

#[test]
fn a_repeated_endpoint_does_not_move_the_default_path_onto_the_next() {
    // trtllm-serve's default page is /prometheus/metrics; z serves its
    // page at /metrics and says so. `y,y,z/metrics` must read both.
    let dns = Dns::default();
    let y = Fleet::start(Kind::Trtllm, &[load(3, 1, 0.1)]);
    let z_page = "# TYPE trtllm_num_requests_waiting gauge\ntrtllm_num_requests_waiting{model_name=\"m\"} 4\n";
    let z = Fleet::pages(Kind::Vllm, &[z_page]);
    dns.set("y.ml", &y.ips());
    dns.set("z.ml", &z.ips());
    let scaler = Scaler::start(&dns);
    let endpoints = format!(
        "{y},{y},{z}/metrics",
        y = endpoint("y.ml", y.port),
        z = endpoint("z.ml", z.port)
    );
    let queue = [
        ("engine", "trtllm"),
        ("metricType", "queue_length"),
        ("targetValue", "5"),
        ("engineEndpoints", endpoints.as_str()),
    ];
    assert_eq!(scaler.value(&queue), Ok(7.0));
}
