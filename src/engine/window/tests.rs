//! Unit tests of the window arithmetic: Prometheus' quantile, resets,
//! thinning, merging, and pages read into readings.

use super::*;
use crate::engine::prom::families_and_names;
use crate::engine::signals::{self, Engine, Signal};

fn histogram(bounds: &[f64], counts: &[f64], sum: f64) -> Histogram {
    Histogram {
        bounds: bounds.to_vec(),
        counts: counts.to_vec(),
        sum,
    }
}

#[test]
fn quantiles_are_prometheus_histogram_quantile() {
    // 100 observations: 40 up to 0.1, 45 more up to 0.5, 10 up to 1, 5 above.
    let h = histogram(&[0.1, 0.5, 1.0], &[40.0, 85.0, 95.0, 100.0], 30.0);
    // rank 90 falls in (0.5, 1]: 0.5 + 0.5 × (90 − 85) / 10.
    assert_eq!(quantile(0.9, &h).unwrap().value, 0.75);
    // rank 20 in the lowest bucket: from 0 to 0.1.
    assert_eq!(quantile(0.2, &h).unwrap().value, 0.05);
    // rank 99 in +Inf: the highest finite bound, "at least".
    let top = quantile(0.99, &h).unwrap();
    assert_eq!((top.value, top.at_least, top.bucket), (1.0, true, 3));
    // A rank exactly at a bucket's count takes that bucket's bound.
    assert_eq!(quantile(0.85, &h).unwrap().value, 0.5);
    // A lowest bound of 0 (SGLang's queue time) is answered as is.
    let zero = histogram(&[0.0, 0.001], &[50.0, 80.0, 100.0], 0.0);
    assert_eq!(quantile(0.3, &zero).unwrap().value, 0.0);
    // No observations, no finite bound: no answer.
    assert_eq!(quantile(0.9, &histogram(&[0.1], &[0.0, 0.0], 0.0)), None);
    assert_eq!(quantile(0.9, &histogram(&[], &[5.0], 1.0)), None);
    assert_eq!(mean(&h), Some(0.3));
    assert_eq!(mean(&histogram(&[], &[0.0], 0.0)), None);
}

#[test]
fn merged_replicas_are_one_distribution_not_an_average_of_percentiles() {
    // One replica fast (all 90 under 0.1), one slow (all 10 in (0.5, 1]).
    let fast = histogram(&[0.1, 0.5, 1.0], &[90.0, 90.0, 90.0, 90.0], 4.5);
    let slow = histogram(&[0.1, 0.5, 1.0], &[0.0, 0.0, 10.0, 10.0], 8.0);
    let merged = merge(&[&fast, &slow]);
    assert_eq!(merged.counts, vec![90.0, 90.0, 100.0, 100.0]);
    assert_eq!(merged.sum, 12.5);
    // p90 of all 100: rank 90 reaches the 0.1 bucket.
    assert_eq!(quantile(0.9, &merged).unwrap().value, 0.1);
    // The average of the replicas' own p90s would be (0.09 + 0.95) / 2.
    let own: Vec<f64> = [&fast, &slow]
        .iter()
        .map(|h| quantile(0.9, h).unwrap().value)
        .collect();
    assert_ne!(
        quantile(0.9, &merged).unwrap().value,
        (own[0] + own[1]) / 2.0
    );
    // Different bounds: unioned and sorted, as Prometheus does.
    let other = histogram(&[0.25], &[5.0, 5.0], 1.0);
    let union = merge(&[&fast, &other]);
    assert_eq!(union.bounds, vec![0.1, 0.25, 0.5, 1.0]);
    assert_eq!(union.counts, vec![90.0, 90.0, 90.0, 90.0, 95.0]);
}

#[test]
fn a_reset_counts_as_increase_does_and_thinning_loses_none_of_it() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut history = History::new(at(0), Reading::Counter(100.0), Busy::default());
    // +20, then a restart (down to 5: a new run from 0), then +10.
    history.push(at(1), Reading::Counter(120.0), Busy::default());
    history.push(at(2), Reading::Counter(5.0), Busy::default());
    history.push(at(3), Reading::Counter(15.0), Busy::default());
    let span = history.span(at(0)).unwrap();
    assert_eq!(span.increase, Reading::Counter(35.0));
    assert_eq!((span.resets, span.reads), (1, 4));
    // Many more reads than kept: the total increase is unchanged.
    let mut value = 15.0;
    for s in 4..200 {
        value += 2.0;
        if s % 50 == 0 {
            value = 1.0;
        }
        history.push(at(s), Reading::Counter(value), Busy::default());
    }
    assert!(history.points().len() <= MAX_POINTS);
    let span = history.span(at(0)).unwrap();
    // 35, then 196 reads of +2 each, except 3 resets that count the new
    // value (1) instead.
    assert_eq!(span.increase, Reading::Counter(35.0 + 193.0 * 2.0 + 3.0));
    assert_eq!(span.resets, 4);
    // A histogram with other bounds cannot follow: the history restarts.
    let mut h = History::new(
        at(0),
        Reading::Histogram(histogram(&[1.0], &[1.0, 1.0], 0.5)),
        Busy::default(),
    );
    let joined = h.push(
        at(1),
        Reading::Histogram(histogram(&[2.0], &[1.0, 1.0], 0.5)),
        Busy::default(),
    );
    assert_eq!((joined, h.points().len()), (Joined::Restarted, 1));
}

#[test]
fn a_histogram_reset_is_any_bucket_going_down() {
    let t0 = Instant::now();
    let later = t0 + Duration::from_secs(1);
    let mut h = History::new(
        t0,
        Reading::Histogram(histogram(&[1.0], &[4.0, 6.0], 3.0)),
        Busy::default(),
    );
    // The lowest bucket went down: a restarted replica; its new totals
    // are the increase.
    h.push(
        later,
        Reading::Histogram(histogram(&[1.0], &[1.0, 7.0], 9.0)),
        Busy::default(),
    );
    let span = h.span(t0).unwrap();
    assert_eq!(
        span.increase,
        Reading::Histogram(histogram(&[1.0], &[1.0, 7.0], 9.0))
    );
    assert_eq!(span.resets, 1);
}

fn window_query(engine: Engine, signal: Signal) -> WindowQuery {
    let gauge = |signal| Query {
        series: signals::table(engine, signal),
        within: signal.within_pod(),
        model: None,
        gauges_only: false,
        breakdown: signals::breakdown_label(engine),
    };
    WindowQuery {
        source: signals::window_source(engine, signal).unwrap(),
        model: None,
        breakdown: signals::breakdown_label(engine),
        percentile: Percentile::DEFAULT,
        percentile_given: false,
        window: DEFAULT_WINDOW,
        waiting: Some(gauge(Signal::QueueLength)),
        running: Some(gauge(Signal::RunningRequests)),
    }
}

fn read(query: &WindowQuery, page: &str) -> Result<PageRead, Unread> {
    let wants = query.wants();
    let names: Vec<&str> = wants.iter().map(|w| w.family.as_str()).collect();
    let (found, declared) = families_and_names(page, &names, 10_000).unwrap();
    query.read(&found, &declared)
}

#[test]
fn vllm_counters_add_every_finish_reason_and_engine() {
    let page = "# HELP vllm:request_success_total Count of successfully processed requests.\n\
        # TYPE vllm:request_success_total counter\n\
        vllm:request_success_total{engine=\"0\",finished_reason=\"stop\",model_name=\"m\"} 10.0\n\
        vllm:request_success_total{engine=\"0\",finished_reason=\"length\",model_name=\"m\"} 3.0\n\
        vllm:request_success_total{engine=\"1\",finished_reason=\"abort\",model_name=\"m\"} 2.0\n";
    let query = window_query(Engine::Vllm, Signal::RequestRate);
    assert_eq!(
        read(&query, page),
        Ok(PageRead::Reading(Reading::Counter(15.0)))
    );
    // The OpenMetrics spelling: TYPE without _total, samples with it.
    let open = "# TYPE vllm:request_success counter\nvllm:request_success_total{engine=\"0\"} 4\n";
    assert_eq!(
        read(&query, open),
        Ok(PageRead::Reading(Reading::Counter(4.0)))
    );
    // Triton's prometheus-cpp counters have no _total at all.
    let triton = "# TYPE nv_inference_request_success counter\n\
        nv_inference_request_success{model=\"a\",version=\"1\"} 7\n";
    let query = window_query(Engine::Triton, Signal::RequestRate);
    assert_eq!(
        read(&query, triton),
        Ok(PageRead::Reading(Reading::Counter(7.0)))
    );
}

#[test]
fn sglang_histograms_fold_rank_copies_and_sum_streaming_series() {
    // Queue time per scheduler rank: two TP ranks report the same requests.
    let page = "# TYPE sglang:queue_time_seconds histogram\n\
        sglang:queue_time_seconds_bucket{le=\"0.0\",model_name=\"m\",tp_rank=\"0\"} 2.0\n\
        sglang:queue_time_seconds_bucket{le=\"0.5\",model_name=\"m\",tp_rank=\"0\"} 6.0\n\
        sglang:queue_time_seconds_bucket{le=\"+Inf\",model_name=\"m\",tp_rank=\"0\"} 8.0\n\
        sglang:queue_time_seconds_sum{model_name=\"m\",tp_rank=\"0\"} 4.0\n\
        sglang:queue_time_seconds_count{model_name=\"m\",tp_rank=\"0\"} 8.0\n\
        sglang:queue_time_seconds_bucket{le=\"0.0\",model_name=\"m\",tp_rank=\"1\"} 2.0\n\
        sglang:queue_time_seconds_bucket{le=\"0.5\",model_name=\"m\",tp_rank=\"1\"} 6.0\n\
        sglang:queue_time_seconds_bucket{le=\"+Inf\",model_name=\"m\",tp_rank=\"1\"} 8.0\n\
        sglang:queue_time_seconds_sum{model_name=\"m\",tp_rank=\"1\"} 4.0\n\
        sglang:queue_time_seconds_count{model_name=\"m\",tp_rank=\"1\"} 8.0\n";
    let query = window_query(Engine::Sglang, Signal::QueueTimeSeconds);
    assert_eq!(
        read(&query, page),
        Ok(PageRead::Reading(Reading::Histogram(histogram(
            &[0.0, 0.5],
            &[2.0, 6.0, 8.0],
            4.0
        ))))
    );
    // TTFT split by is_streaming: both series add up by le.
    let ttft = "# TYPE sglang:time_to_first_token_seconds histogram\n\
        sglang:time_to_first_token_seconds_bucket{is_streaming=\"true\",le=\"0.1\",model_name=\"m\"} 1.0\n\
        sglang:time_to_first_token_seconds_bucket{is_streaming=\"true\",le=\"+Inf\",model_name=\"m\"} 3.0\n\
        sglang:time_to_first_token_seconds_sum{is_streaming=\"true\",model_name=\"m\"} 0.9\n\
        sglang:time_to_first_token_seconds_bucket{is_streaming=\"false\",le=\"0.1\",model_name=\"m\"} 4.0\n\
        sglang:time_to_first_token_seconds_bucket{is_streaming=\"false\",le=\"+Inf\",model_name=\"m\"} 4.0\n\
        sglang:time_to_first_token_seconds_sum{is_streaming=\"false\",model_name=\"m\"} 0.2\n";
    let query = window_query(Engine::Sglang, Signal::TtftSeconds);
    let Ok(PageRead::Reading(Reading::Histogram(h))) = read(&query, ttft) else {
        panic!("{:?}", read(&query, ttft));
    };
    assert_eq!((h.bounds, h.counts), (vec![0.1], vec![5.0, 7.0]));
    assert!((h.sum - 1.1).abs() < 1e-12);
}

#[test]
fn triton_is_read_in_its_own_units() {
    let page = "# TYPE nv_inference_first_response_histogram_ms histogram\n\
        nv_inference_first_response_histogram_ms_bucket{model=\"a\",version=\"1\",le=\"100\"} 3\n\
        nv_inference_first_response_histogram_ms_bucket{model=\"a\",version=\"1\",le=\"500\"} 4\n\
        nv_inference_first_response_histogram_ms_bucket{model=\"a\",version=\"1\",le=\"+Inf\"} 4\n\
        nv_inference_first_response_histogram_ms_sum{model=\"a\",version=\"1\"} 400\n\
        nv_inference_first_response_histogram_ms_count{model=\"a\",version=\"1\"} 4\n\
        # TYPE nv_inference_request_success counter\n\
        nv_inference_request_success{model=\"a\",version=\"1\"} 8\n\
        # TYPE nv_inference_queue_duration_us counter\n\
        nv_inference_queue_duration_us{model=\"a\",version=\"1\"} 2000000\n";
    let query = window_query(Engine::Triton, Signal::TtftSeconds);
    let Ok(PageRead::Reading(Reading::Histogram(h))) = read(&query, page) else {
        panic!()
    };
    assert_eq!(
        (h.bounds, h.counts, h.sum),
        (vec![0.1, 0.5], vec![3.0, 4.0, 4.0], 0.4)
    );
    // Queue time: a mean from two counters, in seconds.
    let query = window_query(Engine::Triton, Signal::QueueTimeSeconds);
    assert_eq!(
        read(&query, page),
        Ok(PageRead::Reading(Reading::Histogram(histogram(
            &[],
            &[8.0],
            2.0
        ))))
    );
    assert!(signals::window_source(Engine::Triton, Signal::ItlSeconds).is_err());
}

#[test]
fn broken_histograms_and_wrong_types_are_named() {
    let query = window_query(Engine::Vllm, Signal::TtftSeconds);
    let no_inf = "# TYPE vllm:time_to_first_token_seconds histogram\n\
        vllm:time_to_first_token_seconds_bucket{le=\"0.1\"} 1\n";
    let error = read(&query, no_inf).unwrap_err();
    assert!(error.to_string().contains("no le=\"+Inf\""), "{error}");
    // A bound of -Inf or NaN is no bound (-Inf used to count as +Inf).
    for le in ["-Inf", "NaN", "inf"] {
        let bad = format!(
            "# TYPE vllm:time_to_first_token_seconds histogram\n\
             vllm:time_to_first_token_seconds_bucket{{le=\"{le}\"}} 1\n\
             vllm:time_to_first_token_seconds_bucket{{le=\"+Inf\"}} 1\n"
        );
        let error = read(&query, &bad).unwrap_err();
        assert!(
            error.to_string().contains("is not a number"),
            "{le}: {error}"
        );
    }
    let gauge =
        "# TYPE vllm:time_to_first_token_seconds gauge\nvllm:time_to_first_token_seconds 1\n";
    let error = read(&query, gauge).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("is a gauge on this page; this trigger reads a histogram"),
        "{error}"
    );
    let mut many = String::from("# TYPE vllm:time_to_first_token_seconds histogram\n");
    for i in 0..=MAX_BUCKETS {
        many.push_str(&format!(
            "vllm:time_to_first_token_seconds_bucket{{le=\"{i}\"}} {i}\n"
        ));
    }
    many.push_str("vllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 99\n");
    let error = read(&query, &many).unwrap_err();
    assert!(
        error.to_string().contains("more than 64 bucket bounds"),
        "{error}"
    );
    // Exactly at the cap is read.
    let at_cap: String = many
        .lines()
        .filter(|l| !l.contains(&format!("le=\"{MAX_BUCKETS}\"")))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(read(&query, &at_cap).is_ok());
    // A summary named by engineMetric is refused by name.
    let typed = WindowQuery {
        source: WindowSource::Typed(signals::counter_names("x")),
        ..query
    };
    let summary = "# TYPE x summary\nx{quantile=\"0.5\"} 1\nx_sum 1\nx_count 1\n";
    let error = read(&typed, summary).unwrap_err();
    assert!(error.to_string().contains("cannot be merged"), "{error}");
    let gauge = "# TYPE x gauge\nx 3\n";
    assert_eq!(read(&typed, gauge), Ok(PageRead::Gauge));
}

#[test]
fn percentiles_print_as_users_write_them() {
    assert_eq!(Percentile::Quantile(0.9).to_string(), "p90");
    assert_eq!(Percentile::Quantile(0.995).to_string(), "p99.5");
    assert_eq!(Percentile::Mean.to_string(), "mean");
}

#[test]
fn a_history_holds_at_most_its_cap_of_reads_and_says_its_bytes() {
    let t0 = Instant::now();
    let bounds: Vec<f64> = (1..=22).map(f64::from).collect();
    let read = |n: f64| Reading::Histogram(histogram(&bounds, &[n; 23], n));
    let mut history = History::new(t0, read(0.0), Busy::default());
    for i in 1..=100u64 {
        history.push(t0 + Duration::from_secs(i), read(i as f64), Busy::default());
    }
    assert_eq!(history.points().len(), MAX_POINTS);
    // 32 reads of 22 bounds: 64 + (56 + 8 × 45) + 32 × (48 + 56 + 8 × 45).
    assert_eq!(history.bytes(), 64 + 416 + 32 * 464);
    // The first and the last read are kept: the increase is whole.
    let span = history.span(t0).unwrap();
    assert_eq!(span.increase.events(), 100.0);
}
