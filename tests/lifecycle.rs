//! Starting and stopping leave no thread behind. Alone in its own test
//! binary, so that no other test's threads are counted.

mod common;

use std::net::TcpListener;

use common::*;
use keda_gpu_scaler::grpc::server;

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The names of this process's threads, for failure messages.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

#[test]
fn a_start_that_fails_leaves_no_thread_running() {
    let fake = FakeNvml::new(&gpu_line(0, 50));
    // The probe port is taken: the failure comes after the main port is
    // bound, with every part (sampler, sweeper, notifier) configured.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = local_config(&fake.library);
    config.peers = vec!["127.0.0.1:1".into()];
    config.peer_timeout = INTERVAL / 2;
    config.probe_listen = Some(taken.local_addr().unwrap().to_string());
    // gRPC's process-wide threads start with the first server and stay.
    assert!(server::start(&config).is_err());
    let before = thread_count();
    let names = thread_names();
    for _ in 0..3 {
        let error = server::start(&config)
            .err()
            .expect("the probe port is taken");
        assert!(error.contains("--probe-listen"), "{error}");
    }
    assert!(
        wait_until(PATIENCE, || thread_count() <= before),
        "threads grew from {before} {names:?} to {:?} after failed starts",
        thread_names()
    );
    // A start that succeeds, then stops, returns to the same count too.
    config.probe_listen = None;
    let running = server::start(&config).expect("start");
    assert!(thread_count() > before);
    running.shutdown();
    assert!(
        wait_until(PATIENCE, || thread_count() <= before),
        "threads grew from {before} {names:?} to {:?} after a shutdown",
        thread_names()
    );
}
