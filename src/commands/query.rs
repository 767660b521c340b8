//! `query`: calls a running scaler exactly as KEDA does (GetMetricSpec,
//! then GetMetrics, then IsActive) and shows what the HPA would do.

use std::sync::Arc;

use grpcio::{
    CallOption, ChannelBuilder, ChannelCredentials, ChannelCredentialsBuilder, EnvBuilder,
};

use crate::commands::args::{ClientTls, QueryArgs};
use crate::proto::externalscaler::{GetMetricsRequest, ScaledObjectRef};
use crate::proto::externalscaler_grpc::ExternalScalerClient;
use crate::proto::node::{ExplainRequest, ExplainResponse};
use crate::proto::node_grpc::NodeClient;
use crate::scaling::hpa::{desired_replicas, MetricType};

/// What KEDA would see in one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub metric_name: String,
    pub target: f64,
    pub target_size: i64,
    pub value: f64,
    pub value_int: i64,
    pub active: bool,
}

pub fn run(args: &QueryArgs) -> Result<(), String> {
    let answer = call(args)?;
    print!("{}", render(args, &answer));
    if args.explain {
        print!("{}", render_explanation(&explain(args)?));
    }
    Ok(())
}

fn channel(args: &QueryArgs) -> Result<grpcio::Channel, String> {
    let env = Arc::new(EnvBuilder::new().cq_count(1).name_prefix("query").build());
    Ok(match &args.tls {
        None => ChannelBuilder::new(env).connect(&args.address),
        Some(tls) => {
            let mut builder = ChannelBuilder::new(env);
            if let Some(name) = &tls.server_name {
                builder = builder.override_ssl_target(name.clone());
            }
            builder
                .set_credentials(client_credentials(tls)?)
                .connect(&args.address)
        }
    })
}

/// `Node.Explain`: each GPU's part in the value.
pub fn explain(args: &QueryArgs) -> Result<ExplainResponse, String> {
    let client = NodeClient::new(channel(args)?);
    let mut request = ExplainRequest::new();
    request.set_namespace(args.namespace.clone());
    request.mut_metadata().extend(args.metadata.iter().cloned());
    client
        .explain_opt(&request, CallOption::default().timeout(args.timeout))
        .map_err(|e| format!("Explain: {}", describe(&e)))
}

/// One line per node and GPU, or per engine replica.
pub fn render_explanation(explanation: &ExplainResponse) -> String {
    if !explanation.replicas().is_empty() {
        return render_replicas(explanation);
    }
    let mut out = String::from("\nexplain (per node and GPU):\n");
    out.push_str(&format!(
        "  {:<16} {:>3}  {:<40} {:>8}  {:<7} {:<32} {}\n",
        "NODE", "GPU", "UUID", "VALUE", "COUNTED", "PODS", "WHY"
    ));
    for line in explanation.lines() {
        let value = if line.has_value() {
            format!("{:.2}", line.value())
        } else {
            "n/a".to_string()
        };
        let pods = if line.pods().is_empty() {
            "-".to_string()
        } else {
            line.pods().join(",")
        };
        out.push_str(&format!(
            "  {:<16} {:>3}  {:<40} {:>8}  {:<7} {:<32} {}\n",
            if line.node().is_empty() {
                "(this node)"
            } else {
                line.node()
            },
            line.gpu_index(),
            line.gpu_uuid(),
            value,
            if line.counted() { "yes" } else { "no" },
            pods,
            line.reason()
        ));
    }
    render_end(explanation, &mut out);
    out
}

/// One line per replica of an engine trigger's endpoints.
fn render_replicas(explanation: &ExplainResponse) -> String {
    let mut out = String::from("\nexplain (per engine replica):\n");
    out.push_str(&format!(
        "  {:<40} {:<24} {:>10}  {:<7} {}\n",
        "ENDPOINT", "ADDRESS", "VALUE", "COUNTED", "WHY"
    ));
    for line in explanation.replicas() {
        let value = if line.has_value() {
            format!("{:.2}", line.value())
        } else {
            "n/a".to_string()
        };
        out.push_str(&format!(
            "  {:<40} {:<24} {:>10}  {:<7} {}\n",
            line.endpoint(),
            if line.address().is_empty() {
                "-"
            } else {
                line.address()
            },
            value,
            if line.counted() { "yes" } else { "no" },
            line.reason()
        ));
    }
    render_end(explanation, &mut out);
    out
}

fn render_end(explanation: &ExplainResponse, out: &mut String) {
    for note in explanation.notes() {
        out.push_str(&format!("  note: {note}\n"));
    }
    if explanation.has_value() {
        out.push_str(&format!("  = {:.2}\n", explanation.value()));
    } else {
        out.push_str(&format!("  = error: {}\n", explanation.error()));
    }
}

/// The three calls, in KEDA's order; the first failure is the error.
pub fn call(args: &QueryArgs) -> Result<Answer, String> {
    let client = ExternalScalerClient::new(channel(args)?);
    let option = || CallOption::default().timeout(args.timeout);

    let mut scaled_object = ScaledObjectRef::new();
    scaled_object.set_name(args.name.clone());
    scaled_object.set_namespace(args.namespace.clone());
    scaled_object
        .mut_scalerMetadata()
        .extend(args.metadata.iter().cloned());

    let spec = client
        .get_metric_spec_opt(&scaled_object, option())
        .map_err(|e| format!("GetMetricSpec on {}: {}", args.address, describe(&e)))?;
    let spec = spec
        .metricSpecs()
        .first()
        .ok_or("GetMetricSpec returned no metric spec")?
        .clone();

    let mut request = GetMetricsRequest::new();
    request.set_scaledObjectRef(scaled_object.clone());
    request.set_metricName(spec.metricName().to_string());
    let metrics = client
        .get_metrics_opt(&request, option())
        .map_err(|e| format!("GetMetrics: {}", describe(&e)))?;
    let value = metrics
        .metricValues()
        .first()
        .ok_or("GetMetrics returned no metric value")?
        .clone();

    let active = client
        .is_active_opt(&scaled_object, option())
        .map_err(|e| format!("IsActive: {}", describe(&e)))?;

    Ok(Answer {
        metric_name: spec.metricName().to_string(),
        target: spec.targetSizeFloat(),
        target_size: spec.targetSize(),
        value: value.metricValueFloat(),
        value_int: value.metricValue(),
        active: active.result(),
    })
}

fn client_credentials(tls: &ClientTls) -> Result<ChannelCredentials, String> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let mut builder = ChannelCredentialsBuilder::new().root_cert(read(&tls.ca)?);
    if let Some((cert, key)) = &tls.cert_and_key {
        builder = builder.cert(read(cert)?, read(key)?);
    }
    Ok(builder.build())
}

fn describe(error: &grpcio::Error) -> String {
    match error {
        grpcio::Error::RpcFailure(status) => {
            // The code's Debug form is "3-INVALID_ARGUMENT"; show the name.
            let code = format!("{:?}", status.code());
            let name = code.split_once('-').map_or(code.as_str(), |(_, name)| name);
            format!("{name}: {}", status.message())
        }
        other => other.to_string(),
    }
}

/// The report printed for the user.
pub fn render(args: &QueryArgs, answer: &Answer) -> String {
    let n = args.replicas;
    let (value, target) = (answer.value, answer.target);
    let mut out = String::new();
    out.push_str(&format!("scaledObject  {}/{}\n", args.namespace, args.name));
    out.push_str(&format!("metric        {}\n", answer.metric_name));
    out.push_str(&format!(
        "value         {value:.2} (int {})\n",
        answer.value_int
    ));
    out.push_str(&format!(
        "target        {target} (int {})\n",
        answer.target_size
    ));
    out.push_str(&format!("active        {}\n", answer.active));
    if !answer.active {
        out.push_str("              inactive: KEDA scales to minReplicaCount (0 if set) after cooldownPeriod\n");
    }
    out.push_str(&format!(
        "HPA with {n} current replica(s), 10% tolerance, before min/max bounds:\n"
    ));
    out.push_str(&format!(
        "  metricType: AverageValue (default)  -> {:>3}   ceil({value:.2} / {target})\n",
        desired_replicas(MetricType::AverageValue, n, value, target)
    ));
    out.push_str(&format!(
        "  metricType: Value                   -> {:>3}   ceil({n} x {value:.2} / {target})\n",
        desired_replicas(MetricType::Value, n, value, target)
    ));
    out
}
