//! A cluster on one machine: several scaler instances on loopback, each
//! with its own fake NVML and its own fake kubelet (a real PodResources
//! gRPC server on a unix socket), peered with each other.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use grpcio::RpcStatusCode;
use keda_gpu_scaler::grpc::server::{self, RunningServer};
use keda_gpu_scaler::proto::externalscaler_grpc::ExternalScalerClient;
use keda_gpu_scaler::scaling::hpa::{desired_replicas, MetricType};

/// Slower than a single node's tests, so that a loaded test machine does
/// not make peers miss their deadline.
const CLUSTER_INTERVAL: Duration = Duration::from_millis(200);
const PEER_TIMEOUT: Duration = Duration::from_millis(150);

fn health_client(port: u16) -> keda_gpu_scaler::proto::health_grpc::HealthClient {
    keda_gpu_scaler::proto::health_grpc::HealthClient::new(
        grpcio::ChannelBuilder::new(Arc::new(grpcio::EnvBuilder::new().cq_count(1).build()))
            .connect(&format!("127.0.0.1:{port}")),
    )
}

/// One simulated node: fake NVML, fake kubelet, and a scaler peered with the others.
struct Node {
    fake: FakeNvml,
    kubelet: FakeKubelet,
    kubelet_server: Option<grpcio::Server>,
    scaler: Option<RunningServer>,
    port: u16,
}

impl Node {
    fn client(&self) -> ExternalScalerClient {
        client(self.port)
    }

    /// Whether the node's readiness check says SERVING (its snapshot is
    /// fresh).
    fn ready(&self) -> bool {
        let request = keda_gpu_scaler::proto::health::HealthCheckRequest::new();
        health_client(self.port)
            .check_opt(&request, call_option())
            .is_ok_and(|answer| {
                answer.status()
                    == keda_gpu_scaler::proto::health::health_check_response::ServingStatus::SERVING
            })
    }

    fn set_pods(&self, pods: &[(&str, &str, &str)]) {
        self.kubelet.set_pods(pods);
    }

    fn stop_kubelet(&mut self) {
        if let Some(mut server) = self.kubelet_server.take() {
            let _ = futures_executor::block_on(server.shutdown());
        }
        let _ = std::fs::remove_file(self.fake.dir.join("kubelet.sock"));
    }

    fn stop_scaler(&mut self) {
        self.scaler.take();
    }
}

/// `scenarios[i]` is node i's fake NVML scenario; every node peers with all.
fn cluster(scenarios: &[String]) -> Vec<Node> {
    cluster_with(scenarios, &[], CLUSTER_INTERVAL, PEER_TIMEOUT)
}

/// As `cluster`, with `extra` peers beside the nodes and other timings.
fn cluster_with(
    scenarios: &[String],
    extra: &[String],
    interval: Duration,
    peer_timeout: Duration,
) -> Vec<Node> {
    let ports: Vec<u16> = scenarios.iter().map(|_| free_port()).collect();
    let mut peers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    peers.extend(extra.iter().cloned());
    scenarios
        .iter()
        .zip(&ports)
        .enumerate()
        .map(|(i, (scenario, port))| {
            let fake = FakeNvml::new(scenario);
            let kubelet = FakeKubelet::default();
            let socket = fake.dir.join("kubelet.sock");
            let kubelet_server = kubelet.serve(&socket);
            let mut config = local_config(&fake.library);
            config.listen = format!("127.0.0.1:{port}");
            config.node_name = format!("node-{i}");
            config.peers = peers.clone();
            config.sample_interval = interval;
            config.peer_timeout = peer_timeout;
            config.pod_resources_socket = socket;
            let scaler = server::start(&config).expect("start scaler");
            Node {
                fake,
                kubelet,
                kubelet_server: Some(kubelet_server),
                scaler: Some(scaler),
                port: *port,
            }
        })
        .collect()
}

/// Node `node`'s GPU `index` UUID, as the fake names it.
fn uuid(index: u32, node: usize) -> String {
    format!("GPU-{node}-{index}")
}

fn gpus(node: usize, utils: &[u32]) -> String {
    utils
        .iter()
        .enumerate()
        .map(|(i, util)| {
            format!(
                "gpu {i} uuid={} util={util} mem_total_mib=81920 mem_used_mib=8192\n",
                uuid(i as u32, node)
            )
        })
        .collect()
}

const VLLM_POD_A: &str = "vllm-7d9f8b6c5d-x2k4p";
const VLLM_POD_B: &str = "vllm-7d9f8b6c5d-q8w2e";

#[test]
fn workload_gpus_across_nodes_count_and_other_tenants_do_not() {
    let nodes = cluster(&[gpus(0, &[60, 100]), gpus(1, &[80, 95])]);
    nodes[0].set_pods(&[
        ("default", VLLM_POD_A, &uuid(0, 0)),
        ("default", "batch-0", &uuid(1, 0)),
    ]);
    nodes[1].set_pods(&[("default", VLLM_POD_B, &uuid(0, 1))]);
    let pairs = [("workload", "vllm"), ("aggregation", "avg")];
    // Every instance answers the same: (60 + 80) / 2, not the busier tenants.
    for node in &nodes {
        wait_for_value(&node.client(), &pairs, 70.0);
    }
    // Node-wide over the fleet: all four GPUs.
    wait_for_value(&nodes[1].client(), &[("aggregation", "max")], 100.0);
}

#[test]
fn every_instance_answers_the_same_within_an_interval() {
    let nodes = cluster(&[gpus(0, &[10, 20]), gpus(1, &[30]), gpus(2, &[40])]);
    let pairs = [("aggregation", "sum")];
    // Asked at the same moment, every instance gives the same answer.
    let agree_on = |expected: f64| {
        let mut last = Vec::new();
        let agreed = wait_until(PATIENCE, || {
            last = answers_at_once(&nodes, &pairs);
            last.iter().all(|v| *v == Some(expected))
        });
        assert!(agreed, "never all {expected} at once; last: {last:?}");
    };
    agree_on(100.0);
    nodes[2].fake.set(&gpus(2, &[90]));
    agree_on(150.0);
    // And once they agree, they go on agreeing, for three intervals.
    let until = std::time::Instant::now() + 3 * CLUSTER_INTERVAL;
    while std::time::Instant::now() < until {
        let round = answers_at_once(&nodes, &pairs);
        assert!(round.iter().all(|v| *v == Some(150.0)), "{round:?}");
    }
}

/// Every node's answer to `pairs`, the calls made at the same moment (a
/// barrier releases them together); `None` for an error.
fn answers_at_once(nodes: &[Node], pairs: &[(&str, &str)]) -> Vec<Option<f64>> {
    let clients: Vec<ExternalScalerClient> = nodes.iter().map(Node::client).collect();
    let barrier = std::sync::Barrier::new(clients.len());
    std::thread::scope(|scope| {
        let calls: Vec<_> = clients
            .iter()
            .map(|client| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    value(client, pairs).ok()
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    })
}

#[test]
fn a_dead_peer_is_skipped_and_all_dead_is_unavailable() {
    let mut nodes = cluster(&[gpus(0, &[10]), gpus(1, &[20]), gpus(2, &[30])]);
    let pairs = [("aggregation", "sum")];
    wait_for_value(&nodes[0].client(), &pairs, 60.0);
    nodes[2].stop_scaler();
    wait_for_value(&nodes[0].client(), &pairs, 30.0);
    let cluster = nodes[0].scaler.as_ref().unwrap().cluster().unwrap().clone();
    assert!(cluster.failed_calls() > 0);
    nodes[1].stop_scaler();
    wait_for_error(
        &nodes[0].client(),
        &pairs,
        RpcStatusCode::UNAVAILABLE,
        "no peer answered",
    );
}

#[test]
fn missing_pod_resources_socket_fails_only_workload_triggers() {
    let mut nodes = cluster(&[gpus(0, &[50]), gpus(1, &[70])]);
    nodes[0].set_pods(&[("default", VLLM_POD_A, &uuid(0, 0))]);
    wait_for_value(&nodes[0].client(), &[("workload", "vllm")], 50.0);
    nodes[1].stop_kubelet();
    let message = wait_for_error(
        &nodes[0].client(),
        &[("workload", "vllm")],
        RpcStatusCode::UNAVAILABLE,
        "pod attribution is unavailable on node node-1",
    );
    assert!(message.contains("does not exist"), "{message}");
    // Node-wide triggers do not need attribution.
    wait_for_value(&nodes[0].client(), &[("aggregation", "max")], 70.0);
}

#[test]
fn a_deployment_name_that_prefixes_another_does_not_match_it() {
    let nodes = cluster(&[gpus(0, &[30, 90])]);
    nodes[0].set_pods(&[
        ("default", VLLM_POD_A, &uuid(0, 0)),
        ("default", "vllm-canary-5c6d7e8f9a-zz9yx", &uuid(1, 0)),
    ]);
    wait_for_value(&nodes[0].client(), &[("workload", "vllm")], 30.0);
    wait_for_value(&nodes[0].client(), &[("workload", "vllm-canary")], 90.0);
    wait_for_value(&nodes[0].client(), &[("podNamePattern", "vllm-*")], 90.0);
}

#[test]
fn mig_and_time_sliced_ids_map_to_their_gpus() {
    let scenario = format!(
        "gpu 0 uuid={} util=40\ngpu 1 uuid={} mig=1 mig_uuids=MIG-aa,MIG-bb mem_total_mib=1000 mem_used_mib=900\nmig 1 1 uuid=MIG-bb mem_total_mib=1000 mem_used_mib=500\n",
        uuid(0, 0),
        uuid(1, 0)
    );
    let nodes = cluster(&[scenario]);
    nodes[0].set_pods(&[
        ("default", "vllm-0", &format!("{}::3", uuid(0, 0))),
        ("default", "vllm-1", "MIG-bb"),
    ]);
    let pairs = [
        ("workload", "vllm"),
        ("metricType", "memory_used_percent"),
        ("aggregation", "sum"),
        ("targetValue", "80"),
    ];
    // GPU 0 (time-sliced id) uses 0% of its memory; the pod on MIG-bb reads
    // its own slice (50%), not its GPU (90%).
    wait_for_value(&nodes[0].client(), &pairs, 50.0);
    let utilization = [("workload", "vllm"), ("aggregation", "max")];
    // GPU 1 is MIG: no utilization; GPU 0 via its ::3 time-slice id counts.
    wait_for_value(&nodes[0].client(), &utilization, 40.0);
}

#[test]
fn workload_at_zero_pods_is_zero_and_inactive() {
    let nodes = cluster(&[gpus(0, &[99]), gpus(1, &[99])]);
    nodes[0].set_pods(&[("default", "other-0", &uuid(0, 0))]);
    let pairs = [("workload", "vllm")];
    wait_for_value(&nodes[1].client(), &pairs, 0.0);
    assert!(!is_active(&nodes[1].client(), &pairs).unwrap().result());
}

#[test]
fn explain_lists_each_gpu_and_why() {
    let nodes = cluster(&[gpus(0, &[60, 100]), gpus(1, &[80])]);
    nodes[0].set_pods(&[
        ("default", VLLM_POD_A, &uuid(0, 0)),
        ("default", "batch-0", &uuid(1, 0)),
    ]);
    nodes[1].set_pods(&[("default", VLLM_POD_B, &uuid(0, 1))]);
    let pairs = [("workload", "vllm"), ("aggregation", "avg")];
    wait_for_value(&nodes[0].client(), &pairs, 70.0);
    let explanation = explain(nodes[0].port, &pairs).unwrap();
    assert!(explanation.has_value());
    assert_eq!(explanation.value(), 70.0);
    let lines: Vec<(String, u32, bool, String)> = explanation
        .lines()
        .iter()
        .map(|l| {
            (
                l.node().to_string(),
                l.gpu_index(),
                l.counted(),
                l.reason().to_string(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("node-0".into(), 0, true, "counted".into()),
            (
                "node-0".into(),
                1,
                false,
                "held by other pods, not workload default/vllm".into()
            ),
            ("node-1".into(), 0, true, "counted".into()),
        ]
    );
}

#[test]
fn sweeps_are_cached_and_shared() {
    // A long interval, so that every call below falls within one sweep's
    // life, and the nodes ready (sampled) before the first call.
    let nodes = cluster_with(
        &[gpus(0, &[10]), gpus(1, &[20])],
        &[],
        Duration::from_secs(30),
        Duration::from_secs(5),
    );
    for node in &nodes {
        assert!(
            wait_until(PATIENCE, || node.ready()),
            "{} never ready",
            node.port
        );
    }
    let cluster = nodes[0].scaler.as_ref().unwrap().cluster().unwrap().clone();
    assert_eq!(cluster.sweeps(), 0);
    // 200 requests from 8 threads released together: the first starts the
    // one sweep, the rest wait for it or read it from the cache.
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let port = nodes[0].port;
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let client = client(port);
                barrier.wait();
                (0..25)
                    .map(|_| value(&client, &[("aggregation", "sum")]))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for thread in threads {
        let answers = thread.join().unwrap();
        assert!(answers.iter().all(|a| *a == Ok(30.0)), "{answers:?}");
    }
    assert_eq!(cluster.sweeps(), 1, "200 requests within one interval");
}

/// The HPA's choice from the scaler's answers over real gRPC.
#[test]
fn hpa_replicas_from_cluster_answers() {
    struct Case {
        name: &'static str,
        current: u32,
        metric_type: MetricType,
        expected: u32,
    }
    let nodes = cluster(&[gpus(0, &[100, 100, 20]), gpus(1, &[100, 20, 100])]);
    // Three vLLM replicas at 100% on two nodes; a fourth workload at 20%; a
    // third tenant at 100% shares node 1.
    nodes[0].set_pods(&[
        ("default", "vllm-7d9f8b6c5d-aaaaa", &uuid(0, 0)),
        ("default", "vllm-7d9f8b6c5d-bbbbb", &uuid(1, 0)),
        ("default", "light-6c5d4e3f2a-ccccc", &uuid(2, 0)),
    ]);
    nodes[1].set_pods(&[
        ("default", "vllm-7d9f8b6c5d-ddddd", &uuid(0, 1)),
        ("default", "light-6c5d4e3f2a-eeeee", &uuid(1, 1)),
        ("other", "tenant-0", &uuid(2, 1)),
    ]);
    let vllm = [("workload", "vllm"), ("aggregation", "avg")];
    let light = [("workload", "light"), ("aggregation", "avg")];
    wait_for_value(&nodes[0].client(), &vllm, 100.0);
    wait_for_value(&nodes[1].client(), &light, 20.0);
    let cases = [
        (
            Case {
                name: "3 replicas at 100%, target 80, Value",
                current: 3,
                metric_type: MetricType::Value,
                expected: 4,
            },
            &vllm[..],
        ),
        (
            Case {
                name: "3 replicas at 100%, AverageValue caps at 2",
                current: 3,
                metric_type: MetricType::AverageValue,
                expected: 2,
            },
            &vllm[..],
        ),
        (
            Case {
                name: "4 replicas at 20%, Value",
                current: 4,
                metric_type: MetricType::Value,
                expected: 1,
            },
            &light[..],
        ),
        (
            Case {
                name: "2 replicas at 20% beside a tenant at 100%",
                current: 2,
                metric_type: MetricType::Value,
                expected: 1,
            },
            &light[..],
        ),
    ];
    for (case, pairs) in cases {
        let value = wait_for_ok(&nodes[1].client(), pairs);
        let desired = desired_replicas(case.metric_type, case.current, value, 80.0);
        assert_eq!(desired, case.expected, "{}: value {value}", case.name);
    }
    // Unchanged: 2 replicas on 2 nodes at 80% with a third tenant at 100% on one of them.
    nodes[0].fake.set(&gpus(0, &[80, 100, 20]));
    nodes[1].fake.set(&gpus(1, &[80, 20, 100]));
    nodes[0].set_pods(&[("default", "pair-0", &uuid(0, 0))]);
    nodes[1].set_pods(&[
        ("default", "pair-1", &uuid(0, 1)),
        ("other", "tenant-0", &uuid(2, 1)),
    ]);
    let pair = [("podNamePattern", "pair-?"), ("aggregation", "avg")];
    wait_for_value(&nodes[0].client(), &pair, 80.0);
    wait_for_value(&nodes[1].client(), &pair, 80.0);
    let value = wait_for_ok(&nodes[1].client(), &pair);
    assert_eq!(
        desired_replicas(MetricType::Value, 2, value, 80.0),
        2,
        "2 replicas on 2 nodes with a third tenant at 100%: unchanged (value {value})"
    );
}

#[test]
fn index_strategy_ids_attribute_to_nvml_indexes() {
    let scenario = format!(
        "gpu 0 uuid={} util=40\ngpu 1 uuid={} util=70\ngpu 2 uuid={} mig=1 mem_total_mib=1000 mem_used_mib=900\nmig 2 0 uuid=MIG-aa mem_total_mib=1000 mem_used_mib=250\n",
        uuid(0, 0),
        uuid(1, 0),
        uuid(2, 0)
    );
    let nodes = cluster(&[scenario]);
    // The device plugin with deviceIDStrategy: index.
    nodes[0].set_pods(&[
        ("default", "vllm-0", "1"),
        ("default", "other-0", "0::1"),
        ("default", "small-0", "2:0"),
    ]);
    wait_for_value(&nodes[0].client(), &[("workload", "vllm")], 70.0);
    wait_for_value(&nodes[0].client(), &[("workload", "other")], 40.0);
    let memory = [
        ("workload", "small"),
        ("metricType", "memory_used_percent"),
        ("targetValue", "80"),
    ];
    wait_for_value(&nodes[0].client(), &memory, 25.0);
}

#[test]
fn a_pod_holding_an_unplaceable_gpu_is_unavailable_naming_it() {
    let nodes = cluster(&[gpus(0, &[60]), gpus(1, &[80])]);
    nodes[0].set_pods(&[("default", VLLM_POD_A, &uuid(0, 0))]);
    // The kubelet says a vLLM pod holds a GPU NVML does not see (lost, or
    // an id from another node): its load cannot be read.
    nodes[1].set_pods(&[
        ("default", VLLM_POD_B, "GPU-not-on-this-node"),
        ("default", "batch-0", &uuid(0, 1)),
    ]);
    let message = wait_for_error(
        &nodes[0].client(),
        &[("workload", "vllm")],
        RpcStatusCode::UNAVAILABLE,
        &format!("cannot read the GPU of pod default/{VLLM_POD_B}"),
    );
    assert!(
        message.contains("on node node-1")
            && message.contains("\"GPU-not-on-this-node\"")
            && message.contains("matches no GPU"),
        "{message}"
    );
    // Other workloads and node-wide triggers still read.
    wait_for_value(&nodes[0].client(), &[("workload", "batch")], 80.0);
    wait_for_value(&nodes[0].client(), &[("aggregation", "sum")], 140.0);
    // Once the id can be placed, the workload reads again.
    nodes[1].set_pods(&[("default", VLLM_POD_B, &uuid(0, 1))]);
    wait_for_value(
        &nodes[0].client(),
        &[("workload", "vllm"), ("aggregation", "sum")],
        140.0,
    );
}

/// A peer that accepts TCP connections and never says a word: every call
/// to it runs into its deadline, as to a stopped or partitioned node.
fn silent_peer() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    (listener, address)
}

#[test]
fn heartbeats_of_200_streams_arrive_with_a_silent_peer() {
    let (_silent, address) = silent_peer();
    // A peer timeout just under the interval: a pass that evaluated each
    // stream through its own sweep would take 200 deadlines.
    let nodes = cluster_with(
        &[gpus(0, &[10]), gpus(1, &[20])],
        &[address],
        Duration::from_millis(100),
        Duration::from_millis(90),
    );
    let pairs = [("aggregation", "sum"), ("pollIntervalSeconds", "0.5")];
    wait_for_value(&nodes[0].client(), &pairs, 30.0);
    let client = nodes[0].client();
    let option = || grpcio::CallOption::default().timeout(PATIENCE);
    let mut streams: Vec<_> = (0..200)
        .map(|_| {
            client
                .stream_is_active_opt(&scaled_object(&pairs), option())
                .unwrap()
        })
        .collect();
    // The first message at once, then two heartbeats, for every stream.
    for _ in 0..3 {
        for stream in &mut streams {
            let next = futures_executor::block_on(futures_util::StreamExt::next(stream))
                .expect("stream ended without a status")
                .map(|r| r.result())
                .map_err(status_of);
            assert_eq!(next, Ok(true));
        }
    }
    let cluster = nodes[0].scaler.as_ref().unwrap().cluster().unwrap().clone();
    assert!(
        cluster.failed_calls() > 0,
        "the silent peer was never called"
    );
}

#[test]
fn a_slow_kubelet_delays_attribution_not_readings() {
    let nodes = cluster(&[gpus(0, &[60])]);
    *nodes[0].kubelet.delay.lock().unwrap() = Duration::from_secs(2);
    nodes[0].set_pods(&[("default", VLLM_POD_A, &uuid(0, 0))]);
    let client = nodes[0].client();
    wait_for_value(&client, &[], 60.0);
    // Until the kubelet's answer arrives, and after, NVML readings stay
    // fresh: node-wide triggers answer and the pod stays ready.
    let mut checks = 0;
    let attributed = wait_until(PATIENCE, || {
        checks += 1;
        assert_eq!(value(&client, &[]), Ok(60.0));
        assert!(nodes[0].ready());
        value(&client, &[("workload", "vllm")]) == Ok(60.0)
    });
    assert!(attributed, "the slow kubelet's answer was never attached");
    assert!(
        checks > 1,
        "attribution was there before the kubelet answered"
    );
}

/// A peer that answers `Node.Snapshot` with whatever the test sets.
#[derive(Clone, Default)]
struct FakePeer {
    answer: Arc<std::sync::Mutex<keda_gpu_scaler::proto::node::NodeSnapshot>>,
}

impl keda_gpu_scaler::proto::node_grpc::Node for FakePeer {
    fn snapshot(
        &mut self,
        ctx: grpcio::RpcContext,
        _req: keda_gpu_scaler::proto::node::SnapshotRequest,
        sink: grpcio::UnarySink<keda_gpu_scaler::proto::node::NodeSnapshot>,
    ) {
        let answer = self.answer.lock().unwrap().clone();
        ctx.spawn(async move {
            let _ = sink.success(answer).await;
        });
    }
}

/// A peer answer of GPUs at 1% each, enough of them to encode to
/// `bytes` give or take one GPU's size.
fn big_answer(bytes: usize) -> keda_gpu_scaler::proto::node::NodeSnapshot {
    use keda_gpu_scaler::proto::node::{Gpu, NodeSnapshot, Reading};
    use protobuf::Message;
    let gpu = |index: u32| {
        let mut gpu = Gpu::new();
        gpu.set_index(index);
        gpu.set_uuid(format!("GPU-{index:0>60}"));
        let mut reading = Reading::new();
        reading.set_metric("gpu_utilization".into());
        reading.set_value(1.0);
        gpu.mut_readings().push(reading);
        gpu
    };
    let mut answer = NodeSnapshot::new();
    answer.set_node_name("big-node".into());
    // Each GPU costs its size plus a tag and a length prefix.
    let each = gpu(0).compute_size() as usize + 4;
    let count = bytes / each;
    answer.set_gpus((0..count as u32).map(gpu).collect());
    answer
}

#[test]
fn a_peer_answer_over_the_size_cap_is_refused_not_buffered() {
    use keda_gpu_scaler::cluster::sweep::MAX_PEER_ANSWER_BYTES;
    use protobuf::Message;
    let peer = FakePeer::default();
    let mut server =
        grpcio::ServerBuilder::new(Arc::new(grpcio::EnvBuilder::new().cq_count(1).build()))
            .register_service(keda_gpu_scaler::proto::node_grpc::create_node(peer.clone()))
            .build()
            .unwrap();
    let port = server
        .add_listening_port("127.0.0.1:0", grpcio::ServerCredentials::insecure())
        .unwrap();
    server.start();
    let address = format!("127.0.0.1:{port}");
    // Just under the cap: accepted, its GPUs count.
    let under = big_answer(MAX_PEER_ANSWER_BYTES - 8 * 1024);
    assert!((under.compute_size() as usize) < MAX_PEER_ANSWER_BYTES);
    let gpus_under = under.gpus().len() as f64;
    *peer.answer.lock().unwrap() = under;
    let nodes = cluster_with(
        &[gpus(0, &[60])],
        std::slice::from_ref(&address),
        CLUSTER_INTERVAL,
        PEER_TIMEOUT,
    );
    let sum = [("aggregation", "sum")];
    wait_for_value(&nodes[0].client(), &sum, 60.0 + gpus_under);
    // Just over it: refused by gRPC, so the peer counts as not answering.
    let over = big_answer(MAX_PEER_ANSWER_BYTES + 8 * 1024);
    assert!((over.compute_size() as usize) > MAX_PEER_ANSWER_BYTES);
    *peer.answer.lock().unwrap() = over;
    let message = wait_for_error(
        &nodes[0].client(),
        &sum,
        RpcStatusCode::UNAVAILABLE,
        "no peer answered",
    );
    assert!(
        message.contains(&address) && message.contains("RESOURCE_EXHAUSTED"),
        "{message}"
    );
}
