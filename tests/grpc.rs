//! The ExternalScaler service over a real loopback gRPC connection, the
//! way KEDA calls it, against the fake NVML.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use grpcio::RpcStatusCode;
use keda_gpu_scaler::proto::externalscaler::IsActiveResponse;

fn three_gpus(a: u32, b: u32, c: u32) -> String {
    format!("{}{}{}", gpu_line(0, a), gpu_line(1, b), gpu_line(2, c))
}

#[test]
fn keda_call_sequence_spec_then_metrics_then_is_active() {
    let fake = FakeNvml::new(&three_gpus(20, 70, 45));
    let server = start_server(&fake);
    let client = client(server.port());
    let so = scaled_object(&[
        ("scalerAddress", "keda-gpu-scaler.keda:6000"),
        ("profile", "vllm-inference"),
    ]);
    wait_for_value(&client, &[("profile", "vllm-inference")], 70.0);

    let spec = metric_spec(&client, &so).unwrap();
    assert_eq!(spec.metricSpecs().len(), 1);
    let spec = &spec.metricSpecs()[0];
    assert_eq!(spec.metricName(), "gpu-utilization-max");
    assert_eq!((spec.targetSize(), spec.targetSizeFloat()), (80, 80.0));

    // KEDA strips its `sN-` prefix and asks with exactly the spec's name.
    let response = metrics(&client, &so, "gpu-utilization-max").unwrap();
    assert_eq!(response.metricValues().len(), 1);
    let value = &response.metricValues()[0];
    assert_eq!(value.metricName(), "gpu-utilization-max");
    assert_eq!((value.metricValue(), value.metricValueFloat()), (70, 70.0));

    assert!(client.is_active_opt(&so, call_option()).unwrap().result());
}

#[test]
fn integer_fields_are_rounded_and_floats_exact() {
    let fake = FakeNvml::new(&three_gpus(20, 70, 45));
    let server = start_server(&fake);
    let client = client(server.port());
    let pairs = [("aggregation", "avg"), ("targetValue", "62.5")];
    wait_for_value(&client, &pairs, 45.0);
    fake.set(&three_gpus(20, 71, 45));
    wait_for_value(&client, &pairs, 136.0 / 3.0);
    let response = metrics(&client, &scaled_object(&pairs), "gpu-utilization-avg").unwrap();
    assert_eq!(response.metricValues()[0].metricValue(), 45);
    let spec = metric_spec(&client, &scaled_object(&pairs)).unwrap();
    assert_eq!(spec.metricSpecs()[0].targetSize(), 63);
    assert_eq!(spec.metricSpecs()[0].targetSizeFloat(), 62.5);
}

#[test]
fn get_metrics_for_another_name_is_invalid_argument() {
    let fake = FakeNvml::new(&three_gpus(20, 70, 45));
    let server = start_server(&fake);
    let client = client(server.port());
    let so = scaled_object(&[("aggregation", "avg")]);
    for wrong in ["s0-gpu-utilization-avg", "gpu-utilization-max", ""] {
        let (code, message) = status_of(metrics(&client, &so, wrong).unwrap_err());
        assert_eq!(
            code,
            RpcStatusCode::INVALID_ARGUMENT,
            "{wrong:?}: {message}"
        );
        assert_eq!(
            message,
            format!("invalid metricName {wrong:?}: this trigger's metric is \"gpu-utilization-avg\" (from GetMetricSpec)")
        );
    }
}

#[test]
fn tiny_target_never_reports_integer_zero() {
    let fake = FakeNvml::new(&gpu_line(0, 1));
    let server = start_server(&fake);
    let client = client(server.port());
    let spec = metric_spec(&client, &scaled_object(&[("targetValue", "0.25")])).unwrap();
    assert_eq!(spec.metricSpecs()[0].targetSize(), 1);
    assert_eq!(spec.metricSpecs()[0].targetSizeFloat(), 0.25);
}

/// `p95` and `p99` as the Go keda-gpu-scaler defines them: nearest rank,
/// `sorted[ceil(p × N) − 1]`, over 20 GPUs at 1%..20% (p95 = 19, p99 = 20;
/// an interpolating percentile would give 19.05 and 19.81).
#[test]
fn p95_and_p99_over_twenty_gpus_are_nearest_rank() {
    let scenario: String = (0..20).map(|i| gpu_line(i, 20 - i)).collect();
    let fake = FakeNvml::new(&scenario);
    let server = start_server(&fake);
    let client = client(server.port());
    wait_for_value(&client, &[("aggregation", "max")], 20.0);
    assert_eq!(value(&client, &[("aggregation", "p95")]), Ok(19.0));
    assert_eq!(value(&client, &[("aggregation", "p99")]), Ok(20.0));
    let so = scaled_object(&[("aggregation", "p95")]);
    let spec = metric_spec(&client, &so).unwrap();
    assert_eq!(spec.metricSpecs()[0].metricName(), "gpu-utilization-p95");
}

#[test]
fn aggregations_over_the_node() {
    let fake = FakeNvml::new(&three_gpus(20, 70, 45));
    let server = start_server(&fake);
    let client = client(server.port());
    wait_for_value(&client, &[], 70.0);
    assert_eq!(value(&client, &[("aggregation", "max")]), Ok(70.0));
    assert_eq!(value(&client, &[("aggregation", "min")]), Ok(20.0));
    assert_eq!(value(&client, &[("aggregation", "avg")]), Ok(45.0));
    assert_eq!(value(&client, &[("aggregation", "sum")]), Ok(135.0));
    assert_eq!(value(&client, &[("gpuIndex", "2")]), Ok(45.0));
    assert_eq!(
        value(
            &client,
            &[("metricType", "power_draw"), ("aggregation", "sum")]
        ),
        Ok(300.0)
    );
    assert_eq!(
        value(&client, &[("metricType", "memory_used_percent")]),
        Ok(10.0)
    );
}

#[test]
fn profiles_pick_metric_target_and_activation() {
    let fake = FakeNvml::new("gpu 0 util=5 mem_util=3 mem_total_mib=1000 mem_used_mib=900\n");
    let server = start_server(&fake);
    let client = client(server.port());
    wait_for_value(&client, &[], 5.0);
    // vLLM: VRAM is 90% full, but it scales on utilization, and 5 is not above 5.
    assert_eq!(value(&client, &[("profile", "vllm-inference")]), Ok(5.0));
    assert!(!is_active(&client, &[("profile", "vllm-inference")])
        .unwrap()
        .result());
    // training: activation 0, so any load keeps it active.
    assert!(is_active(&client, &[("profile", "training")])
        .unwrap()
        .result());
    // triton: activation 10.
    assert!(!is_active(&client, &[("profile", "triton-inference")])
        .unwrap()
        .result());
    // batch: memory_used_percent against 70.
    assert_eq!(value(&client, &[("profile", "batch")]), Ok(90.0));
    let spec = metric_spec(&client, &scaled_object(&[("profile", "batch")])).unwrap();
    assert_eq!(
        spec.metricSpecs()[0].metricName(),
        "memory-used-percent-max"
    );
    assert_eq!(spec.metricSpecs()[0].targetSizeFloat(), 70.0);
}

#[test]
fn bad_metadata_is_invalid_argument_on_every_call() {
    let fake = FakeNvml::new(&gpu_line(0, 50));
    let server = start_server(&fake);
    let client = client(server.port());
    let so = scaled_object(&[("targetValue", "NaN")]);
    let expected = "invalid targetValue \"NaN\": expected a finite number > 0";
    let spec = status_of(metric_spec(&client, &so).unwrap_err());
    assert_eq!(
        spec,
        (RpcStatusCode::INVALID_ARGUMENT, expected.to_string())
    );
    let metrics = status_of(metrics(&client, &so, "m").unwrap_err());
    assert_eq!(
        metrics,
        (RpcStatusCode::INVALID_ARGUMENT, expected.to_string())
    );
    let active = status_of(client.is_active_opt(&so, call_option()).unwrap_err());
    assert_eq!(
        active,
        (RpcStatusCode::INVALID_ARGUMENT, expected.to_string())
    );
    let stream = client.stream_is_active(&so).unwrap();
    let first = futures_executor::block_on(stream.into_future())
        .0
        .expect("a status");
    assert_eq!(
        status_of(first.unwrap_err()).0,
        RpcStatusCode::INVALID_ARGUMENT
    );
}

#[test]
fn gpu_index_the_node_lacks_is_an_error_not_a_value() {
    let fake = FakeNvml::new(&gpu_line(0, 50));
    let server = start_server(&fake);
    let client = client(server.port());
    wait_for_value(&client, &[], 50.0);
    let (code, message) = value(&client, &[("gpuIndex", "3")]).unwrap_err();
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    assert_eq!(
        message,
        "invalid gpuIndex \"3\": this node has GPU indexes 0 to 0"
    );
}

#[test]
fn stream_metric_spec_is_unimplemented() {
    let fake = FakeNvml::new(&gpu_line(0, 50));
    let server = start_server(&fake);
    let client = client(server.port());
    let stream = client.stream_metric_spec(&scaled_object(&[])).unwrap();
    let first = futures_executor::block_on(stream.into_future())
        .0
        .expect("a status");
    assert_eq!(
        status_of(first.unwrap_err()).0,
        RpcStatusCode::UNIMPLEMENTED
    );
}

/// Opens StreamIsActive with a deadline, so a missing message fails the
/// test with DEADLINE_EXCEEDED instead of hanging it.
fn open_stream(
    client: &keda_gpu_scaler::proto::externalscaler_grpc::ExternalScalerClient,
    pairs: &[(&str, &str)],
) -> grpcio::ClientSStreamReceiver<IsActiveResponse> {
    let option = grpcio::CallOption::default().timeout(Duration::from_secs(60));
    client
        .stream_is_active_opt(&scaled_object(pairs), option)
        .unwrap()
}

#[test]
fn stream_pushes_at_once_then_on_change() {
    let fake = FakeNvml::new(&gpu_line(0, 50));
    let server = start_server(&fake);
    let client = client(server.port());
    // An hour-long heartbeat: any further message is change-driven.
    let pairs = [
        ("activationThreshold", "30"),
        ("pollIntervalSeconds", "3600"),
    ];
    wait_for_value(&client, &pairs, 50.0);
    let mut stream = open_stream(&client, &pairs);
    assert_eq!(next_result(&mut stream), Ok(true));
    fake.set(&gpu_line(0, 10));
    assert_eq!(next_result(&mut stream), Ok(false));
    fake.set(&gpu_line(0, 90));
    assert_eq!(next_result(&mut stream), Ok(true));
}

#[test]
fn stream_repeats_the_result_every_poll_interval() {
    let fake = FakeNvml::new(&gpu_line(0, 50));
    let server = start_server(&fake);
    let client = client(server.port());
    wait_for_value(&client, &[], 50.0);
    // An unchanged result is repeated no sooner than pollIntervalSeconds:
    // with 0.3 s, each of three repeats comes at least that long after the
    // one before (a slow machine delays them, never hurries them).
    let interval = Duration::from_millis(300);
    let mut stream = open_stream(&client, &[("pollIntervalSeconds", "0.3")]);
    assert_eq!(next_result(&mut stream), Ok(true));
    let mut last = std::time::Instant::now();
    for _ in 0..3 {
        assert_eq!(next_result(&mut stream), Ok(true));
        let gap = last.elapsed();
        // Less a little for the client's own wake-up after the first.
        assert!(gap >= interval.mul_f64(0.9), "a repeat after {gap:?}");
        last = std::time::Instant::now();
    }
    // With an hour's interval, the one message pushed at once is the only
    // one before the stream's own 2 s deadline ends it.
    let option = grpcio::CallOption::default().timeout(Duration::from_secs(2));
    let mut stream = client
        .stream_is_active_opt(&scaled_object(&[("pollIntervalSeconds", "3600")]), option)
        .unwrap();
    assert_eq!(next_result(&mut stream), Ok(true));
    assert_eq!(
        next_result(&mut stream).map_err(|(code, _)| code),
        Err(RpcStatusCode::DEADLINE_EXCEEDED)
    );
}

#[test]
fn stream_ends_with_unavailable_when_gpus_fail() {
    let fake = FakeNvml::new(&gpu_line(0, 50));
    let server = start_server(&fake);
    let client = client(server.port());
    let pairs = [("pollIntervalSeconds", "3600")];
    wait_for_value(&client, &pairs, 50.0);
    let mut stream = open_stream(&client, &pairs);
    assert_eq!(next_result(&mut stream), Ok(true));
    fake.set(&format!("{}fail 0 * GPU_IS_LOST\n", gpu_line(0, 50)));
    let (code, message) = next_result(&mut stream).unwrap_err();
    assert_eq!(code, RpcStatusCode::UNAVAILABLE);
    assert!(message.contains("GPU_IS_LOST"), "{message}");
}

#[test]
fn stream_ends_cleanly_on_server_shutdown() {
    let fake = FakeNvml::new(&gpu_line(0, 50));
    let server = start_server(&fake);
    let client = client(server.port());
    wait_for_value(&client, &[], 50.0);
    let mut stream = open_stream(&client, &[("pollIntervalSeconds", "3600")]);
    assert_eq!(next_result(&mut stream), Ok(true));
    server.shutdown();
    let (code, message) = next_result(&mut stream).unwrap_err();
    assert_eq!(
        (code, message.as_str()),
        (
            RpcStatusCode::UNAVAILABLE,
            "keda-gpu-scaler is shutting down"
        )
    );
}

#[test]
fn cancelled_streams_are_dropped() {
    let fake = FakeNvml::new(&gpu_line(0, 50));
    let server = start_server(&fake);
    let client = client(server.port());
    let pairs = [("pollIntervalSeconds", "0.2")];
    wait_for_value(&client, &pairs, 50.0);
    let mut stream = open_stream(&client, &pairs);
    assert_eq!(next_result(&mut stream), Ok(true));
    assert_eq!(server.streams().open_streams(), 1);
    stream.cancel();
    drop(stream);
    assert!(wait_until(PATIENCE, || server.streams().open_streams() == 0));
}

#[test]
fn a_thousand_streams_share_one_notifier_thread() {
    let fake = FakeNvml::new(&gpu_line(0, 50));
    let server = start_server(&fake);
    let client = client(server.port());
    let pairs = [
        ("activationThreshold", "30"),
        ("pollIntervalSeconds", "3600"),
    ];
    wait_for_value(&client, &pairs, 50.0);
    let threads_before = thread_count();
    let mut streams: Vec<_> = (0..1000).map(|_| open_stream(&client, &pairs)).collect();
    for stream in &mut streams {
        assert_eq!(next_result(stream), Ok(true));
    }
    assert_eq!(server.streams().open_streams(), 1000);
    // gRPC core's own pools may grow under load; a thread per stream would add 1000.
    assert!(
        thread_count() < threads_before + 32,
        "threads grew from {threads_before} to {}",
        thread_count()
    );
    fake.set(&gpu_line(0, 10));
    for stream in &mut streams {
        assert_eq!(next_result(stream), Ok(false));
    }
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn concurrent_get_metrics_while_the_sampler_swaps() {
    let fake = Arc::new(FakeNvml::new(&three_gpus(10, 20, 30)));
    let server = start_server(&fake);
    let port = server.port();
    wait_for_value(&client(port), &[("aggregation", "sum")], 60.0);
    let stop = Arc::new(AtomicBool::new(false));
    // Every scenario the writer sets sums to 60 or 90.
    let writer = std::thread::spawn({
        let (fake, stop) = (Arc::clone(&fake), Arc::clone(&stop));
        move || {
            let mut flip = false;
            while !stop.load(Ordering::SeqCst) {
                fake.set(&if flip {
                    three_gpus(10, 20, 30)
                } else {
                    three_gpus(20, 30, 40)
                });
                flip = !flip;
                std::thread::sleep(Duration::from_millis(15));
            }
        }
    });
    let readers: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let client = client(port);
                (0..150)
                    .map(|_| value(&client, &[("aggregation", "sum")]))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for reader in readers {
        for answer in reader.join().unwrap() {
            assert!(
                matches!(answer, Ok(v) if v == 60.0 || v == 90.0),
                "{answer:?}"
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
}
