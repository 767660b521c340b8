//! SLO triggers (rates and latency percentiles over a window) through the
//! real gRPC server, scraper and HTTP client, on fake replicas serving
//! pages shaped like each engine's: rates add up across replicas, a
//! percentile is of the merged distribution (`max`: the worst replica's
//! own), resets count as Prometheus' `increase()` counts them, churn,
//! warming up, idle against stuck, a stalled replica, and every metadata
//! refusal. Each test moves the replicas' counters between two rounds
//! (the scaler reads once per sample interval) and waits on answers with
//! a deadline.

mod common;

use std::time::Duration;

use common::fleet::{Dns, Fleet, Scaler};
use common::*;
use fake_engine::{Answer, Finished, Kind, Load};
use grpcio::RpcStatusCode;

const SAMPLE_INTERVAL: Duration = Duration::from_millis(500);

/// `query --explain`'s reasons and notes, one string.
fn explain_text(scaler: &Scaler, pairs: &[(&str, &str)]) -> String {
    let response = explain(scaler.server.port(), pairs).unwrap();
    let mut text: Vec<String> = response
        .replicas()
        .iter()
        .map(|r| format!("{} {}", r.address(), r.reason()))
        .collect();
    text.extend(response.notes().iter().cloned());
    text.join("\n")
}

/// A scaler reading once per 500 ms; reads get half of it (250 ms),
/// enough on a loaded machine.
fn start(dns: &Dns) -> Scaler {
    Scaler::start_with(dns, None, SAMPLE_INTERVAL)
}

fn finished(requests: u64, ttft: &[(f64, u64)]) -> Finished {
    Finished {
        requests,
        prompt_tokens: requests * 100,
        generation_tokens: requests * 10,
        ttft: ttft.to_vec(),
        itl: ttft.to_vec(),
        e2e: ttft.to_vec(),
        queue: ttft.to_vec(),
    }
}

fn loaded(finished: Finished) -> Load {
    Load {
        model: String::from("m"),
        finished,
        ..Load::default()
    }
}

/// The first poll reads once: warming up, never a 0.
fn assert_warming_up(scaler: &Scaler, pairs: &[(&str, &str)]) {
    let first = scaler.value(pairs);
    assert!(
        matches!(&first, Err((RpcStatusCode::UNAVAILABLE, m)) if m.contains("warming up")),
        "{first:?}"
    );
}

/// The rate a note "N <unit> finished over S s" states, with N.
fn stated(explained: &str, unit: &str) -> (f64, f64) {
    let line = explained
        .lines()
        .find(|l| l.contains(&format!("{unit} finished over")))
        .unwrap_or_else(|| panic!("no rate note in {explained}"));
    let mut words = line.split_whitespace();
    let count: f64 = words.next().unwrap().parse().unwrap();
    let seconds: f64 = line
        .split("finished over ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .unwrap()
        .parse()
        .unwrap();
    (count, seconds)
}

#[test]
fn rates_add_up_across_replicas_and_a_restart_counts_as_increase_does() {
    let dns = Dns::default();
    let fleet = Fleet::start(
        Kind::Vllm,
        &[loaded(finished(100, &[])), loaded(finished(50, &[]))],
    );
    dns.set("vllm.ml", &fleet.ips());
    let scaler = start(&dns);
    let at = format!("vllm.ml:{}", fleet.port);
    let rate = [
        ("engine", "vllm"),
        ("metricType", "request_rate"),
        ("targetValue", "5"),
        ("engineEndpoints", at.as_str()),
    ];
    assert_warming_up(&scaler, &rate);
    // +30 on one replica; the other restarted and finished 20 since.
    fleet.replicas[0].set(|b| b.load.finished = finished(130, &[]));
    fleet.replicas[1].set(|b| b.load.finished = finished(20, &[]));
    let value = wait_for_ok(&scaler.client, &rate);
    let explained = explain_text(&scaler, &rate);
    let (count, seconds) = stated(&explained, "requests");
    // Explain may have read once more: the increase stays 50.
    assert_eq!(count, 50.0, "{explained}");
    assert!(
        explained.contains("(1 reset: it restarted; counted from 0 after it)"),
        "{explained}"
    );
    assert!(value > 0.0 && seconds > 0.0);
    // The rate is the increase over the span its reads cover (the value
    // came from a span at most as long as explain's).
    // (The note's seconds are rounded to the millisecond.)
    assert!(value >= 0.99 * 50.0 / seconds, "{value} vs 50 / {seconds}");
    // Token rates count tokens: 100 prompt tokens per request.
    let prompt = [
        ("engine", "vllm"),
        ("metricType", "prompt_tokens_rate"),
        ("targetValue", "2500"),
        ("engineEndpoints", at.as_str()),
    ];
    let _ = scaler.value(&prompt);
    fleet.replicas[0].set(|b| b.load.finished = finished(140, &[]));
    let tokens = wait_for_ok(&scaler.client, &prompt);
    assert!(tokens > 0.0);
    let (count, _) = stated(&explain_text(&scaler, &prompt), "tokens");
    assert_eq!(count, 1000.0);
}

#[test]
fn a_percentile_is_of_the_merged_distribution_and_max_is_the_worst_replica() {
    let dns = Dns::default();
    let fleet = Fleet::start(
        Kind::Vllm,
        &[loaded(finished(0, &[])), loaded(finished(0, &[]))],
    );
    dns.set("vllm.ml", &fleet.ips());
    let scaler = start(&dns);
    let at = format!("vllm.ml:{}", fleet.port);
    let ttft = |percentile: &'static str, aggregation: Option<&'static str>| {
        let mut pairs = vec![
            ("engine", "vllm"),
            ("metricType", "ttft_seconds"),
            ("percentile", percentile),
            ("targetValue", "0.5"),
            ("engineEndpoints", at.as_str()),
        ];
        if let Some(a) = aggregation {
            pairs.push(("aggregation", a));
        }
        pairs
    };
    let p90 = ttft("0.9", None);
    assert_warming_up(&scaler, &p90);
    // 90 fast first tokens on one replica (0.05 s: the (0.04, 0.06]
    // bucket), 10 slow ones on the other (0.9 s: (0.75, 1]).
    fleet.replicas[0].set(|b| b.load.finished = finished(90, &[(0.05, 90)]));
    fleet.replicas[1].set(|b| b.load.finished = finished(10, &[(0.9, 10)]));
    // Merged: rank 90 of 100 reaches the 0.06 bucket exactly: 0.06.
    let merged = wait_for_ok(&scaler.client, &p90);
    assert!((merged - 0.06).abs() < 1e-9, "{merged}");
    // Averaging the replicas' own p90s would give (0.058 + 0.975) / 2.
    let worst = scaler.value(&ttft("0.9", Some("max"))).unwrap();
    // The slow replica's own p90: rank 9 of 10 in (0.75, 1].
    assert!((worst - 0.975).abs() < 1e-9, "{worst}");
    let mean = scaler.value(&ttft("mean", None)).unwrap();
    assert!(
        (mean - (90.0 * 0.05 + 10.0 * 0.9) / 100.0).abs() < 1e-9,
        "{mean}"
    );
    // A quantile in the +Inf bucket answers the highest finite bound.
    let explained = explain_text(&scaler, &ttft("0.99", None));
    assert!(explained.contains("rank 99.00 of 100"), "{explained}");
    let p99 = scaler.value(&ttft("0.99", None)).unwrap();
    assert!((p99 - (0.75 + 0.25 * 9.0 / 10.0)).abs() < 1e-9, "{p99}");
    // The other latencies read their own histograms (the same
    // observations here).
    for metric in ["itl_seconds", "e2e_latency_seconds", "queue_time_seconds"] {
        let pairs = [
            ("engine", "vllm"),
            ("metricType", metric),
            ("targetValue", "1"),
            ("engineEndpoints", at.as_str()),
        ];
        let _ = scaler.value(&pairs);
        fleet.replicas[0].set(|b| {
            let mut more = b.load.finished.clone();
            for list in [&mut more.itl, &mut more.e2e, &mut more.queue] {
                list.push((0.3, 10));
            }
            b.load.finished = more;
        });
        let value = wait_for_ok(&scaler.client, &pairs);
        assert!(value > 0.0, "{metric}: {value}");
    }
}

#[test]
fn nothing_finished_is_zero_only_when_idle_and_unavailable_when_stuck() {
    let dns = Dns::default();
    let fleet = Fleet::start(Kind::Vllm, &[loaded(finished(7, &[(0.2, 7)]))]);
    dns.set("vllm.ml", &fleet.ips());
    let scaler = start(&dns);
    let at = format!("vllm.ml:{}", fleet.port);
    let p90 = [
        ("engine", "vllm"),
        ("metricType", "ttft_seconds"),
        ("targetValue", "0.5"),
        ("engineEndpoints", at.as_str()),
    ];
    assert_warming_up(&scaler, &p90);
    // Nothing moves, nothing waits or runs: idle.
    wait_for_value(&scaler.client, &p90, 0.0);
    // Requests wait while none finishes: stuck, never 0.
    fleet.replicas[0].set(|b| b.load.waiting = 12);
    let message = wait_for_error(
        &scaler.client,
        &p90,
        RpcStatusCode::UNAVAILABLE,
        "no request finished",
    );
    assert!(message.contains("12 wait"), "{message}");
}

#[test]
fn replicas_that_come_go_or_stall_keep_their_part() {
    let dns = Dns::default();
    let fleet = Fleet::start(
        Kind::Vllm,
        &[
            loaded(finished(10, &[])),
            loaded(finished(10, &[])),
            loaded(finished(10, &[])),
        ],
    );
    let ips = fleet.ips();
    dns.set("vllm.ml", &ips[..2]);
    let scaler = start(&dns);
    let at = format!("vllm.ml:{}", fleet.port);
    let rate = [
        ("engine", "vllm"),
        ("metricType", "request_rate"),
        ("targetValue", "5"),
        ("engineEndpoints", at.as_str()),
    ];
    assert_warming_up(&scaler, &rate);
    fleet.replicas[0].set(|b| b.load.finished = finished(20, &[]));
    fleet.replicas[1].set(|b| b.load.finished = finished(15, &[]));
    wait_for_ok(&scaler.client, &rate);
    // A third replica joins: its first read does not count yet.
    dns.set("vllm.ml", &ips);
    let first = {
        let mut text = String::new();
        let seen = wait_until(PATIENCE, || {
            text = explain_text(&scaler, &rate);
            text.contains("first read: counts from its next read")
        });
        assert!(seen, "{text}");
        text
    };
    assert_eq!(stated(&first, "requests").0, 15.0, "{first}");
    // The second replica leaves DNS: what it finished still counts; the
    // third now counts from its second read.
    dns.set("vllm.ml", &[ips[0], ips[2]]);
    fleet.replicas[2].set(|b| b.load.finished = finished(14, &[]));
    let mut text = String::new();
    let seen = wait_until(PATIENCE, || {
        text = explain_text(&scaler, &rate);
        text.contains("no longer named by DNS: its reads in the window count")
            && stated(&text, "requests").0 == 19.0
    });
    assert!(seen, "{text}");
    // The first replica stalls: its reads up to the last still count.
    fleet.replicas[0].set(|b| b.answer = Answer::Stall);
    let seen = wait_until(PATIENCE, || {
        text = explain_text(&scaler, &rate);
        text.contains("not read now") && text.contains("its reads up to the last count")
    });
    assert!(seen, "{text}");
    assert_eq!(stated(&text, "requests").0, 19.0, "{text}");
}

#[test]
fn each_engines_page_is_read_by_its_own_names() {
    let dns = Dns::default();
    let scaler = start(&dns);
    // (engine kind, engine key, metricType, percentile, name for DNS)
    let cases: [(Kind, &str, &str, &str); 6] = [
        (
            Kind::Sglang,
            "sglang",
            "generation_tokens_rate",
            "sglang.ml",
        ),
        (Kind::Sglang, "sglang", "queue_time_seconds", "sglang-q.ml"),
        (Kind::Trtllm, "trtllm", "request_rate", "trt.ml"),
        (Kind::Triton, "triton", "queue_time_seconds", "triton.ml"),
        (Kind::Triton, "triton", "ttft_seconds", "triton-t.ml"),
        (Kind::VllmOld, "vllm", "itl_seconds", "old.ml"),
    ];
    for (kind, engine, metric, name) in cases {
        let load = |n: u64| Load {
            model: String::from("m"),
            tp_copies: 2,
            finished: finished(n, &[(0.3, n)]),
            ..Load::default()
        };
        let fleet = Fleet::start(kind, &[load(4), load(4)]);
        dns.set(name, &fleet.ips());
        let at = format!("{name}:{}", fleet.port);
        let percentile = if engine == "triton" && metric == "queue_time_seconds" {
            "mean"
        } else {
            "0.5"
        };
        let mut pairs = vec![
            ("engine", engine),
            ("metricType", metric),
            ("targetValue", "1"),
            ("engineEndpoints", at.as_str()),
        ];
        if metric.ends_with("_seconds") {
            pairs.push(("percentile", percentile));
        }
        if engine == "triton" {
            // Every model of a Triton ensemble counts every request.
            pairs.push(("engineModel", "ensemble"));
        }
        assert_warming_up(&scaler, &pairs);
        for replica in &fleet.replicas {
            replica.set(|b| b.load = load(14));
        }
        let value = wait_for_ok(&scaler.client, &pairs);
        let explained = explain_text(&scaler, &pairs);
        if metric == "request_rate" {
            assert_eq!(
                stated(&explained, "requests").0,
                20.0,
                "{name}: {explained}"
            );
        } else if metric.ends_with("_rate") {
            // 10 requests × 10 generated tokens on each of 2 replicas.
            assert_eq!(stated(&explained, "tokens").0, 200.0, "{name}: {explained}");
        } else if percentile == "mean" {
            // Triton's µs totals over its request count, in seconds.
            assert!((value - 0.3).abs() < 1e-6, "{name}: {value}");
        } else {
            // 20 observations at 0.3 s: the median interpolates within
            // the bucket holding 0.3 (Triton's in whole ms: 300 ≤ 500).
            assert!(value > 0.0 && value <= 0.5, "{name}: {value} {explained}");
            assert!(explained.contains("20 observations"), "{name}: {explained}");
        }
    }
}

#[test]
fn engine_metric_reads_a_counter_as_a_rate_and_refuses_a_summary() {
    let dns = Dns::default();
    let summary = "# TYPE app_latency_seconds summary\n\
        app_latency_seconds{quantile=\"0.9\"} 0.4\n\
        app_latency_seconds_sum 10\napp_latency_seconds_count 30\n";
    let pages = Fleet::pages(Kind::Vllm, &[summary]);
    dns.set("app.ml", &pages.ips());
    let fleet = Fleet::start(Kind::Vllm, &[loaded(finished(10, &[]))]);
    dns.set("vllm.ml", &fleet.ips());
    let scaler = start(&dns);
    let at = format!("vllm.ml:{}", fleet.port);
    // The family as declared, without _total: the page's TYPE line has it.
    let counter = [
        ("engineMetric", "vllm:request_success"),
        ("engine", "vllm"),
        ("targetValue", "1"),
        ("engineEndpoints", at.as_str()),
    ];
    assert_warming_up(&scaler, &counter);
    fleet.replicas[0].set(|b| b.load.finished = finished(16, &[]));
    assert!(wait_for_ok(&scaler.client, &counter) > 0.0);
    // A percentile on a counter is refused by name.
    let with_percentile = [&counter[..], &[("percentile", "0.9")]].concat();
    let refused = wait_for_error(
        &scaler.client,
        &with_percentile,
        RpcStatusCode::INVALID_ARGUMENT,
        "invalid percentile for engineMetric",
    );
    assert!(refused.contains("it is a counter"), "{refused}");
    let at = format!("app.ml:{}", pages.port);
    let summary = [
        ("engineMetric", "app_latency_seconds"),
        ("targetValue", "1"),
        ("engineEndpoints", at.as_str()),
    ];
    let refused = wait_for_error(
        &scaler.client,
        &summary,
        RpcStatusCode::INVALID_ARGUMENT,
        "is a summary",
    );
    assert!(refused.contains("cannot be merged"), "{refused}");
}

#[test]
fn bad_slo_metadata_is_refused_naming_the_key() {
    let dns = Dns::default();
    let scaler = start(&dns);
    let base = [
        ("engine", "vllm"),
        ("targetValue", "1"),
        ("engineEndpoints", "vllm.ml:8000"),
    ];
    let cases: [(&[(&str, &str)], &str); 9] = [
        (
            &[("metricType", "ttft_seconds"), ("percentile", "1")],
            "invalid percentile \"1\": expected a quantile strictly between 0 and 1",
        ),
        (
            &[("metricType", "ttft_seconds"), ("percentile", "p90")],
            "invalid percentile \"p90\"",
        ),
        (
            &[("metricType", "request_rate"), ("percentile", "0.9")],
            "percentile applies to latencies",
        ),
        (
            &[("metricType", "queue_length"), ("engineWindow", "60s")],
            "engineWindow applies to rates and latencies",
        ),
        (
            &[("metricType", "ttft_seconds"), ("engineWindow", "11m")],
            "invalid engineWindow \"11m\": expected a duration of at most 600s",
        ),
        (
            // Under twice the 500 ms sample interval.
            &[("metricType", "ttft_seconds"), ("engineWindow", "900ms")],
            "at least twice this scaler's sample interval",
        ),
        (
            &[("metricType", "ttft_seconds"), ("aggregation", "avg")],
            "averaging replicas' percentiles gives a different, wrong number",
        ),
        (
            &[("metricType", "request_rate"), ("aggregation", "max")],
            "rates add up across replicas; expected sum",
        ),
        (
            &[("metricType", "itl_seconds"), ("engine", "triton")],
            "engine triton has no source for metricType itl_seconds",
        ),
    ];
    for (extra, needle) in cases {
        let mut pairs: Vec<(&str, &str)> = base
            .iter()
            .copied()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .collect();
        pairs.extend_from_slice(extra);
        let answer = scaler.value(&pairs);
        assert!(
            matches!(&answer, Err((RpcStatusCode::INVALID_ARGUMENT, m)) if m.contains(needle)),
            "{extra:?}: {answer:?}"
        );
    }
    // Triton's e2e has only a total: a quantile is refused, mean is not.
    let triton = [
        ("engine", "triton"),
        ("metricType", "e2e_latency_seconds"),
        ("targetValue", "1"),
        ("engineEndpoints", "triton.ml:8002"),
    ];
    let answer = scaler.value(&triton);
    assert!(
        matches!(&answer, Err((RpcStatusCode::INVALID_ARGUMENT, m)) if m.contains("set percentile to mean")),
        "{answer:?}"
    );
    let mean = [&triton[..], &[("percentile", "mean")]].concat();
    let answer = scaler.value(&mean);
    assert!(
        !matches!(&answer, Err((RpcStatusCode::INVALID_ARGUMENT, _))),
        "{answer:?}"
    );
}

#[test]
fn a_windowed_trigger_needs_no_window_key_and_names_its_metric() {
    let dns = Dns::default();
    let scaler = start(&dns);
    let so = scaled_object(&[
        ("engine", "vllm"),
        ("metricType", "ttft_seconds"),
        ("percentile", "0.99"),
        ("targetValue", "0.5"),
        ("engineEndpoints", "vllm.ml:8000"),
    ]);
    let spec = metric_spec(&scaler.client, &so).unwrap();
    assert_eq!(spec.metricSpecs()[0].metricName(), "vllm-ttft-seconds-p99");
}
