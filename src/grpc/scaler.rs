//! `externalscaler.ExternalScaler`, the service KEDA calls. Handlers look
//! the trigger up (parsed once per change) and answer from the scope's
//! view: the latest snapshot, or the cluster view. They never call NVML and
//! never block.

use std::sync::Arc;
use std::time::Instant;

use grpcio::{RpcContext, RpcStatus, RpcStatusCode, ServerStreamingSink, UnarySink};

use crate::cluster::scope::Scope;
use crate::grpc::reply::{answer, config_status, eval_status, reply};
use crate::grpc::streams::{forward, ActiveWatch, StreamHub};
use crate::observe::stats::{Stats, TriggerAnswer};
use crate::proto::externalscaler::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};
use crate::proto::externalscaler_grpc::ExternalScaler;
use crate::scaling::outcome::Detail;
use crate::scaling::trigger_cache::{Parsed, TriggerCache};

/// The service: a cheap clone over shared state.
#[derive(Clone)]
pub struct ScalerService {
    scope: Scope,
    streams: StreamHub,
    triggers: Arc<TriggerCache>,
    stats: Arc<Stats>,
}

/// Records a call's code and latency, and what the trigger was told.
fn record<T>(
    stats: &Stats,
    method: &'static str,
    started: Instant,
    scaled_object: &ScaledObjectRef,
    parsed: Option<&Parsed>,
    result: &Result<T, RpcStatus>,
    told: impl FnOnce(&T) -> Option<TriggerAnswer>,
) {
    let code = match result {
        Ok(_) => "OK",
        Err(status) => code_name(status.code()),
    };
    stats.request(method, code, started.elapsed());
    let Some(parsed) = parsed else { return };
    let answer = match result {
        Ok(response) => told(response),
        Err(_) => Some(TriggerAnswer::Error(code)),
    };
    if let Some(answer) = answer {
        let key = (
            scaled_object.namespace().to_string(),
            scaled_object.name().to_string(),
            parsed.metric_name.clone(),
        );
        stats.trigger(key, parsed.trigger.target, answer);
    }
}

fn code_name(code: RpcStatusCode) -> &'static str {
    match code {
        RpcStatusCode::OK => "OK",
        RpcStatusCode::INVALID_ARGUMENT => "INVALID_ARGUMENT",
        RpcStatusCode::UNAVAILABLE => "UNAVAILABLE",
        RpcStatusCode::UNIMPLEMENTED => "UNIMPLEMENTED",
        RpcStatusCode::DEADLINE_EXCEEDED => "DEADLINE_EXCEEDED",
        RpcStatusCode::CANCELLED => "CANCELLED",
        RpcStatusCode::RESOURCE_EXHAUSTED => "RESOURCE_EXHAUSTED",
        RpcStatusCode::INTERNAL => "INTERNAL",
        _ => "OTHER",
    }
}

/// A unary call being answered, for the record of it.
struct Call {
    method: &'static str,
    started: Instant,
    scaled_object: ScaledObjectRef,
}

impl ScalerService {
    /// The one path from a unary request to its reply: evaluate the
    /// trigger (when it parsed), shape the answer, record the call and
    /// what the trigger was told, answer.
    fn respond<T: Send + 'static>(
        &self,
        ctx: &RpcContext,
        sink: UnarySink<T>,
        call: Call,
        parsed: Result<Arc<Parsed>, RpcStatus>,
        shape: impl FnOnce(&Parsed, f64) -> T + Send + 'static,
        told: impl FnOnce(&T) -> Option<TriggerAnswer> + Send + 'static,
    ) {
        let evaluation = parsed.map(|parsed| {
            let outcome = self.scope.outcome(&parsed.trigger, Detail::ValueOnly);
            (outcome, parsed)
        });
        let stats = Arc::clone(&self.stats);
        ctx.spawn(async move {
            let (result, parsed) = match evaluation {
                Err(status) => (Err(status), None),
                Ok((outcome, parsed)) => {
                    let result = outcome
                        .await
                        .value
                        .map(|value| shape(&parsed, value))
                        .map_err(|e| eval_status(&e));
                    (result, Some(parsed))
                }
            };
            record(
                &stats,
                call.method,
                call.started,
                &call.scaled_object,
                parsed.as_deref(),
                &result,
                told,
            );
            answer(sink, result).await;
        });
    }

    pub fn new(
        scope: Scope,
        streams: StreamHub,
        stats: Arc<Stats>,
        triggers: TriggerCache,
    ) -> Self {
        Self {
            scope,
            streams,
            triggers: Arc::new(triggers),
            stats,
        }
    }

    fn trigger(&self, scaled_object: &ScaledObjectRef) -> Result<Arc<Parsed>, RpcStatus> {
        self.triggers
            .get(
                scaled_object.namespace(),
                scaled_object.name(),
                scaled_object.scalerMetadata(),
            )
            .map_err(|e| config_status(&e))
    }

    fn metric_spec(
        &self,
        scaled_object: &ScaledObjectRef,
    ) -> Result<GetMetricSpecResponse, RpcStatus> {
        let parsed = self.trigger(scaled_object)?;
        let mut spec = MetricSpec::new();
        spec.set_metricName(parsed.metric_name.clone());
        // KEDA before 2.17 reads the integer; 0 would break the HPA, so at least 1.
        spec.set_targetSize(round_to_i64(parsed.trigger.target).max(1));
        spec.set_targetSizeFloat(parsed.trigger.target);
        let mut response = GetMetricSpecResponse::new();
        response.mut_metricSpecs().push(spec);
        Ok(response)
    }
}

impl ExternalScaler for ScalerService {
    fn is_active(
        &mut self,
        ctx: RpcContext,
        req: ScaledObjectRef,
        sink: UnarySink<IsActiveResponse>,
    ) {
        let started = Instant::now();
        let parsed = self.trigger(&req);
        self.respond(
            &ctx,
            sink,
            Call {
                method: "IsActive",
                started,
                scaled_object: req,
            },
            parsed,
            |parsed, value| is_active_response(parsed.trigger.is_active(value)),
            |r| Some(TriggerAnswer::Active(r.result())),
        );
    }

    fn stream_is_active(
        &mut self,
        ctx: RpcContext,
        req: ScaledObjectRef,
        sink: ServerStreamingSink<IsActiveResponse>,
    ) {
        let parsed = match self.trigger(&req) {
            Ok(parsed) => parsed,
            Err(status) => {
                return ctx.spawn(async move {
                    let _ = sink.fail(status).await;
                })
            }
        };
        let outcome = self.scope.outcome(&parsed.trigger, Detail::ValueOnly);
        let streams = self.streams.clone();
        ctx.spawn(async move {
            let first = outcome.await.value;
            match ActiveWatch::open(parsed.trigger.clone(), first) {
                Ok((watch, pushed)) => {
                    streams.add(Box::new(watch));
                    forward(pushed, sink, is_active_response).await;
                }
                Err(status) => {
                    let _ = sink.fail(status).await;
                }
            }
        });
    }

    fn get_metric_spec(
        &mut self,
        ctx: RpcContext,
        req: ScaledObjectRef,
        sink: UnarySink<GetMetricSpecResponse>,
    ) {
        let started = Instant::now();
        let result = self.metric_spec(&req);
        record(
            &self.stats,
            "GetMetricSpec",
            started,
            &req,
            None,
            &result,
            |_| None,
        );
        reply(&ctx, sink, result);
    }

    fn get_metrics(
        &mut self,
        ctx: RpcContext,
        req: GetMetricsRequest,
        sink: UnarySink<GetMetricsResponse>,
    ) {
        let started = Instant::now();
        let parsed = self.trigger(req.scaledObjectRef()).and_then(|parsed| {
            // KEDA strips its `sN-` prefix, so it asks for exactly the name
            // GetMetricSpec gave; anything else is a caller's mistake.
            let name = &parsed.metric_name;
            if req.metricName() == name {
                return Ok(parsed);
            }
            Err(RpcStatus::with_message(
                RpcStatusCode::INVALID_ARGUMENT,
                format!(
                    "invalid metricName {:?}: this trigger's metric is {name:?} (from GetMetricSpec)",
                    req.metricName()
                ),
            ))
        });
        self.respond(
            &ctx,
            sink,
            Call {
                method: "GetMetrics",
                started,
                scaled_object: req.scaledObjectRef().clone(),
            },
            parsed,
            |parsed, value| metrics_response(parsed.metric_name.clone(), value),
            |r| {
                r.metricValues()
                    .first()
                    .map(|v| TriggerAnswer::Value(v.metricValueFloat()))
            },
        );
    }

    fn stream_metric_spec(
        &mut self,
        ctx: RpcContext,
        _req: ScaledObjectRef,
        sink: ServerStreamingSink<GetMetricSpecResponse>,
    ) {
        let status = RpcStatus::with_message(
            RpcStatusCode::UNIMPLEMENTED,
            "targets are fixed by trigger metadata; KEDA polls GetMetricSpec".to_string(),
        );
        ctx.spawn(async move {
            let _ = sink.fail(status).await;
        });
    }
}

fn metrics_response(name: String, value: f64) -> GetMetricsResponse {
    let mut metric = MetricValue::new();
    metric.set_metricName(name);
    metric.set_metricValue(round_to_i64(value));
    metric.set_metricValueFloat(value);
    let mut response = GetMetricsResponse::new();
    response.mut_metricValues().push(metric);
    response
}

fn is_active_response(active: bool) -> IsActiveResponse {
    let mut response = IsActiveResponse::new();
    response.set_result(active);
    response
}

/// Values are finite and non-negative by construction; rounding is to nearest.
fn round_to_i64(value: f64) -> i64 {
    value.round() as i64
}
