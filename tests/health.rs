//! grpc.health.v1 as kubelet probes use it: readiness follows NVML and
//! freshness, liveness does not.

mod common;

use std::sync::Arc;

use common::*;
use futures_util::StreamExt;
use grpcio::{CallOption, ChannelBuilder, EnvBuilder, RpcStatusCode};
use keda_gpu_scaler::proto::health::{
    health_check_response::ServingStatus as Status, HealthCheckRequest,
};
use keda_gpu_scaler::proto::health_grpc::HealthClient;

fn health_client(port: u16) -> HealthClient {
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    HealthClient::new(ChannelBuilder::new(env).connect(&format!("127.0.0.1:{port}")))
}

fn check(client: &HealthClient, service: &str) -> Result<Status, RpcStatusCode> {
    let mut request = HealthCheckRequest::new();
    request.set_service(service.to_string());
    client
        .check_opt(
            &request,
            CallOption::default().timeout(std::time::Duration::from_secs(5)),
        )
        .map(|r| r.status())
        .map_err(|e| status_of(e).0)
}

#[test]
fn readiness_follows_nvml_and_liveness_stays_up() {
    let fake = FakeNvml::new("init_error DRIVER_NOT_LOADED\n");
    let server = start_server(&fake);
    let health = health_client(server.port());
    assert_eq!(check(&health, ""), Ok(Status::NOT_SERVING));
    assert_eq!(check(&health, "liveness"), Ok(Status::SERVING));

    fake.set(&gpu_line(0, 10));
    assert!(wait_until(PATIENCE, || check(&health, "") == Ok(Status::SERVING)));
    assert_eq!(
        check(&health, "externalscaler.ExternalScaler"),
        Ok(Status::SERVING)
    );

    // A hung NVML makes the pod unready, never dead.
    fake.set(&format!("{}hang 0 * 60000\n", gpu_line(0, 10)));
    assert!(wait_until(PATIENCE, || check(&health, "") == Ok(Status::NOT_SERVING)));
    assert_eq!(check(&health, "liveness"), Ok(Status::SERVING));

    fake.set(&gpu_line(0, 10));
    assert!(wait_until(PATIENCE, || check(&health, "") == Ok(Status::SERVING)));
}

#[test]
fn unknown_service_is_not_found() {
    let fake = FakeNvml::new(&gpu_line(0, 10));
    let server = start_server(&fake);
    assert_eq!(
        check(&health_client(server.port()), "no.such.Service"),
        Err(RpcStatusCode::NOT_FOUND)
    );
}

#[test]
fn watch_pushes_the_status_and_its_changes() {
    let fake = FakeNvml::new(&gpu_line(0, 10));
    let server = start_server(&fake);
    let health = health_client(server.port());
    assert!(wait_until(PATIENCE, || check(&health, "") == Ok(Status::SERVING)));
    let option = CallOption::default().timeout(std::time::Duration::from_secs(60));
    let mut stream = health
        .watch_opt(&HealthCheckRequest::new(), option)
        .unwrap();
    let mut next = || {
        futures_executor::block_on(stream.next())
            .expect("stream open")
            .map(|r| r.status())
            .map_err(|e| status_of(e).0)
    };
    assert_eq!(next(), Ok(Status::SERVING));
    fake.set(&format!("{}hang 0 * 60000\n", gpu_line(0, 10)));
    assert_eq!(next(), Ok(Status::NOT_SERVING));
    fake.set(&gpu_line(0, 10));
    assert_eq!(next(), Ok(Status::SERVING));

    let mut unknown = HealthCheckRequest::new();
    unknown.set_service("no.such.Service".into());
    let mut stream = health.watch(&unknown).unwrap();
    let first = futures_executor::block_on(stream.next()).unwrap().unwrap();
    assert_eq!(first.status(), Status::SERVICE_UNKNOWN);
}
