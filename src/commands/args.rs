//! The command line: subcommands, flags and their environment twins.
//! Parsing only checks what was typed; commands build what they need.

use std::path::PathBuf;
use std::time::Duration;

use crate::engine::policy::{self, EndpointPolicy};
use crate::grpc::tls::TlsFiles;
use crate::node::backend::{BackendChoice, BackendConfig};
use crate::scaling::duration::parse_duration;

pub const USAGE: &str = "\
keda-gpu-scaler: a KEDA external scaler that reads GPU load from NVML or AMD SMI

USAGE:
    keda-gpu-scaler [serve] [--listen ADDR] [--sample-interval D] [--gpu-backend B]
                            [--nvml-library PATH] [--amd-smi-library PATH]
                            [--tls-cert PATH --tls-key PATH [--tls-client-ca PATH]]
                            [--probe-listen ADDR] [--node-name NAME] [--peers LIST]
                            [--peer-timeout D] [--peer-server-name NAME]
                            [--pod-resources-socket PATH]
                            [--gpu-resource-names LIST] [--metrics-listen ADDR]
                            [--engine-allow-cidrs LIST] [--engine-any-namespace]
                            [--cluster-domain DOMAIN]
    keda-gpu-scaler devices [--json] [--gpu-backend B] [--nvml-library PATH]
                            [--amd-smi-library PATH]
    keda-gpu-scaler query [--address HOST:PORT] [--metadata KEY=VALUE]... [--replicas N]
                          [--name NAME] [--namespace NS] [--timeout D]
                          [--ca PATH [--cert PATH --key PATH] [--server-name NAME]]
                          [--explain]

SERVE (the default):
    --listen ADDR          gRPC address [env KEDA_GPU_SCALER_LISTEN] [default 0.0.0.0:6000]
    --sample-interval D    GPU sampling period, 100ms to 60s
                           [env KEDA_GPU_SCALER_SAMPLE_INTERVAL] [default 1s]
    --gpu-backend B        auto, nvidia (NVML) or amd (AMD SMI); auto tries
                           NVML, then AMD SMI [env KEDA_GPU_SCALER_GPU_BACKEND]
                           [default auto]
    --nvml-library PATH    libnvidia-ml.so.1 to load instead of searching
                           [env NVML_LIBRARY_PATH]
    --amd-smi-library PATH libamd_smi.so to load instead of searching
                           [env AMD_SMI_LIBRARY_PATH]
    --tls-cert PATH        serve TLS with this PEM certificate chain
                           [env KEDA_GPU_SCALER_TLS_CERT]
    --tls-key PATH         and this PEM private key [env KEDA_GPU_SCALER_TLS_KEY]
    --tls-client-ca PATH   require client certificates signed by this CA (mTLS)
                           [env KEDA_GPU_SCALER_TLS_CLIENT_CA]
    --probe-listen ADDR    also serve grpc.health.v1 alone, in plaintext, here:
                           kubelet's gRPC probes cannot speak TLS
                           [env KEDA_GPU_SCALER_PROBE_LISTEN]
    --node-name NAME       this node's name [env NODE_NAME] [default: hostname]
    --peers LIST           peer scaler pods, comma-separated HOST:PORT, each
                           resolved to all its addresses on every sweep (a
                           headless Service); enables the cluster-wide view
                           [env KEDA_GPU_SCALER_PEERS]
    --peer-timeout D       deadline for each peer call, below --sample-interval
                           [env KEDA_GPU_SCALER_PEER_TIMEOUT] [default: half the
                           sample interval]
    --peer-server-name NAME
                           name peers' TLS certificates must carry
                           [env KEDA_GPU_SCALER_PEER_SERVER_NAME]
                           [default: the first peer's host]
    --pod-resources-socket PATH
                           the kubelet's PodResources socket
                           [env KEDA_GPU_SCALER_POD_RESOURCES_SOCKET]
                           [default /var/lib/kubelet/pod-resources/kubelet.sock]
    --gpu-resource-names LIST
                           resource names that are GPUs besides nvidia.com/gpu,
                           nvidia.com/mig-*, amd.com/gpu and amd.com/<mode>_nps<N>
                           [env KEDA_GPU_SCALER_GPU_RESOURCE_NAMES]
    --metrics-listen ADDR  serve a Prometheus page (GET /metrics) for people
                           here; scaling never needs it [env
                           KEDA_GPU_SCALER_METRICS_LISTEN] [default: off]
    --engine-allow-cidrs LIST
                           address ranges engine endpoints may resolve to,
                           comma-separated CIDRs; loopback, link-local,
                           unspecified, multicast and broadcast addresses stay
                           refused unless a range names them from inside
                           [env KEDA_GPU_SCALER_ENGINE_ALLOW_CIDRS] [default
                           10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,
                           100.64.0.0/10,fc00::/7]
    --engine-any-namespace let triggers name Services of other namespaces and
                           IP addresses (within the allowed ranges)
                           [env KEDA_GPU_SCALER_ENGINE_ANY_NAMESPACE=true]
                           [default: only the ScaledObject's own namespace]
    --cluster-domain DOMAIN
                           the cluster's DNS domain, for SVC.NS.svc.DOMAIN
                           [env KEDA_GPU_SCALER_CLUSTER_DOMAIN]
                           [default cluster.local]

DEVICES: one read of the GPUs (NVML or AMD SMI, as for serve), printed as
a table (or JSON with --json).

QUERY: calls a running scaler the way KEDA does (GetMetricSpec, GetMetrics,
IsActive) and shows the replica count the HPA would choose.
    --address HOST:PORT    [default 127.0.0.1:6000]
    --metadata KEY=VALUE   trigger metadata, repeatable (e.g. profile=vllm-inference)
    --replicas N           current replicas for the HPA arithmetic [default 1]
    --name, --namespace    the ScaledObject to claim to be [default query, default]
    --timeout D            per-call deadline [default 5s]
    --ca PATH              connect with TLS, trusting this CA
    --cert, --key PATH     client certificate and key, for mTLS
    --server-name NAME     name to verify in the server certificate [default: the host]
    --explain              also list, per node and GPU, the value, the pods, and
                           whether it counted and why

Logging: RUST_LOG (default info).
";

pub const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_SAMPLE_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Boxed: the largest by far, and parsed once.
    Serve(Box<ServeArgs>),
    Devices(DevicesArgs),
    Query(QueryArgs),
    Help,
    Version,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServeArgs {
    pub listen: String,
    pub sample_interval: Duration,
    pub backend: BackendConfig,
    pub tls: Option<TlsFiles>,
    pub probe_listen: Option<String>,
    /// Serve the Prometheus page here.
    pub metrics_listen: Option<String>,
    /// `None`: the hostname.
    pub node_name: Option<String>,
    pub peers: Vec<String>,
    pub peer_timeout: Duration,
    pub peer_server_name: Option<String>,
    pub pod_resources_socket: PathBuf,
    pub gpu_resource_names: Vec<String>,
    /// Which engine endpoints triggers may name and read.
    pub engine_policy: EndpointPolicy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DevicesArgs {
    pub json: bool,
    pub backend: BackendConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueryArgs {
    pub address: String,
    pub metadata: Vec<(String, String)>,
    pub replicas: u32,
    pub name: String,
    pub namespace: String,
    pub timeout: Duration,
    pub tls: Option<ClientTls>,
    pub explain: bool,
}

/// `query`'s TLS: the CA to trust, and a client certificate for mTLS.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    pub server_name: Option<String>,
}

/// A usage mistake; `main` prints it with a pointer to `--help`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (see --help)", self.0)
    }
}

impl std::error::Error for UsageError {}

/// Parses arguments (without the program name); `env` looks up variables.
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Command, UsageError> {
    let (command, rest) = match args.first().map(String::as_str) {
        Some("serve") => ("serve", &args[1..]),
        Some("devices") => ("devices", &args[1..]),
        Some("query") => ("query", &args[1..]),
        Some("help" | "--help" | "-h") => return Ok(Command::Help),
        Some("--version" | "-V") => return Ok(Command::Version),
        Some(other) if !other.starts_with('-') => {
            return Err(UsageError(format!(
                "unknown command {other:?}; commands are serve, devices, query"
            )))
        }
        _ => ("serve", args),
    };
    let mut flags = Flags::new(rest)?;
    if flags.take_switch("--help") {
        return Ok(Command::Help);
    }
    let command = match command {
        "serve" => Command::Serve(Box::new(serve_args(&mut flags, env)?)),
        "devices" => Command::Devices(DevicesArgs {
            json: flags.take_switch("--json"),
            backend: backend(&mut flags, env)?,
        }),
        _ => Command::Query(query_args(&mut flags)?),
    };
    flags.finish()?;
    Ok(command)
}

fn serve_args(
    flags: &mut Flags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ServeArgs, UsageError> {
    let listen = flags
        .take_value("--listen")?
        .or_else(|| env("KEDA_GPU_SCALER_LISTEN"))
        .unwrap_or_else(|| "0.0.0.0:6000".to_string());
    check_address("--listen", &listen)?;
    let probe_listen = flags
        .take_value("--probe-listen")?
        .or_else(|| env("KEDA_GPU_SCALER_PROBE_LISTEN").filter(|v| !v.is_empty()));
    if let Some(address) = &probe_listen {
        check_address("--probe-listen", address)?;
    }
    let metrics_listen = flags
        .take_value("--metrics-listen")?
        .or_else(|| env("KEDA_GPU_SCALER_METRICS_LISTEN").filter(|v| !v.is_empty()));
    if let Some(address) = &metrics_listen {
        check_address("--metrics-listen", address)?;
    }
    let sample_interval = match flags
        .take_value("--sample-interval")?
        .or_else(|| env("KEDA_GPU_SCALER_SAMPLE_INTERVAL"))
    {
        Some(text) => sample_interval(&text)?,
        None => Duration::from_secs(1),
    };
    Ok(ServeArgs {
        listen,
        sample_interval,
        backend: backend(flags, env)?,
        tls: server_tls(flags, env)?,
        probe_listen,
        metrics_listen,
        node_name: flags
            .take_value("--node-name")?
            .or_else(|| env("NODE_NAME").filter(|v| !v.is_empty())),
        peers: list(
            flags
                .take_value("--peers")?
                .or_else(|| env("KEDA_GPU_SCALER_PEERS")),
        )
        .into_iter()
        .map(|peer| check_address("--peers", &peer).map(|()| peer))
        .collect::<Result<_, _>>()?,
        peer_timeout: peer_timeout(
            flags
                .take_value("--peer-timeout")?
                .or_else(|| env("KEDA_GPU_SCALER_PEER_TIMEOUT").filter(|v| !v.is_empty())),
            sample_interval,
        )?,
        peer_server_name: flags
            .take_value("--peer-server-name")?
            .or_else(|| env("KEDA_GPU_SCALER_PEER_SERVER_NAME").filter(|v| !v.is_empty())),
        pod_resources_socket: flags
            .take_value("--pod-resources-socket")?
            .or_else(|| env("KEDA_GPU_SCALER_POD_RESOURCES_SOCKET").filter(|v| !v.is_empty()))
            .map_or_else(
                || PathBuf::from(crate::node::kubelet::DEFAULT_SOCKET),
                PathBuf::from,
            ),
        gpu_resource_names: list(
            flags
                .take_value("--gpu-resource-names")?
                .or_else(|| env("KEDA_GPU_SCALER_GPU_RESOURCE_NAMES")),
        ),
        engine_policy: engine_policy(flags, env)?,
    })
}

/// `--engine-allow-cidrs`, `--engine-any-namespace`, `--cluster-domain`.
fn engine_policy(
    flags: &mut Flags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<EndpointPolicy, UsageError> {
    let mut policy = EndpointPolicy::default();
    if let Some(text) = flags
        .take_value(policy::ALLOW_FLAG)?
        .or_else(|| env("KEDA_GPU_SCALER_ENGINE_ALLOW_CIDRS").filter(|v| !v.is_empty()))
    {
        let allowed = policy::parse_cidrs(&text)
            .map_err(|e| UsageError(format!("invalid {}: {e}", policy::ALLOW_FLAG)))?;
        if allowed.is_empty() {
            return Err(UsageError(format!(
                "invalid {} {text:?}: name at least one range, e.g. 10.0.0.0/8",
                policy::ALLOW_FLAG
            )));
        }
        policy.allowed = allowed;
    }
    policy.any_namespace = flags.take_switch(policy::ANY_NAMESPACE_FLAG)
        || match env("KEDA_GPU_SCALER_ENGINE_ANY_NAMESPACE").as_deref() {
            None | Some("" | "false" | "0") => false,
            Some("true" | "1") => true,
            Some(other) => {
                return Err(UsageError(format!(
                    "invalid KEDA_GPU_SCALER_ENGINE_ANY_NAMESPACE {other:?}: expected true or false"
                )))
            }
        };
    if let Some(domain) = flags
        .take_value(policy::CLUSTER_DOMAIN_FLAG)?
        .or_else(|| env("KEDA_GPU_SCALER_CLUSTER_DOMAIN").filter(|v| !v.is_empty()))
    {
        let valid = domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        if !valid {
            return Err(UsageError(format!(
                "invalid {} {domain:?}: expected a DNS domain, e.g. cluster.local",
                policy::CLUSTER_DOMAIN_FLAG
            )));
        }
        policy.cluster_domain = domain;
    }
    Ok(policy)
}

/// `--peer-timeout`: below the sample interval, so that a silent peer
/// cannot make every cached view expire before it is used; by default half
/// the interval.
fn peer_timeout(text: Option<String>, sample_interval: Duration) -> Result<Duration, UsageError> {
    let Some(text) = text else {
        return Ok(sample_interval / 2);
    };
    let timeout = parse_duration(&text)
        .ok()
        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(30))
        .ok_or_else(|| {
            UsageError(format!(
                "invalid --peer-timeout {text:?}: allowed range is 1ms to 30s"
            ))
        })?;
    if timeout >= sample_interval {
        return Err(UsageError(format!(
            "invalid --peer-timeout {text:?}: it must be below --sample-interval ({}), or one silent peer holds every request for a whole sweep",
            crate::scaling::duration::format_duration(sample_interval)
        )));
    }
    Ok(timeout)
}

/// A comma-separated list, blanks dropped.
fn list(text: Option<String>) -> Vec<String> {
    text.map(|t| {
        t.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

fn check_address(flag: &str, address: &str) -> Result<(), UsageError> {
    match address.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(UsageError(format!(
            "invalid {flag} {address:?}: expected HOST:PORT, e.g. 0.0.0.0:6000"
        ))),
    }
}

fn server_tls(
    flags: &mut Flags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<TlsFiles>, UsageError> {
    let mut path = |flag: &str, var: &str| -> Result<Option<PathBuf>, UsageError> {
        Ok(flags
            .take_value(flag)?
            .or_else(|| env(var).filter(|v| !v.is_empty()))
            .map(PathBuf::from))
    };
    let cert = path("--tls-cert", "KEDA_GPU_SCALER_TLS_CERT")?;
    let key = path("--tls-key", "KEDA_GPU_SCALER_TLS_KEY")?;
    let client_ca = path("--tls-client-ca", "KEDA_GPU_SCALER_TLS_CLIENT_CA")?;
    match (cert, key, client_ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), client_ca) => Ok(Some(TlsFiles {
            cert,
            key,
            client_ca,
        })),
        (None, None, Some(_)) => Err(UsageError(
            "--tls-client-ca needs --tls-cert and --tls-key".to_string(),
        )),
        _ => Err(UsageError(
            "--tls-cert and --tls-key go together; give both or neither".to_string(),
        )),
    }
}

fn sample_interval(text: &str) -> Result<Duration, UsageError> {
    let interval =
        parse_duration(text).map_err(|e| UsageError(format!("invalid --sample-interval: {e}")))?;
    if !(MIN_SAMPLE_INTERVAL..=MAX_SAMPLE_INTERVAL).contains(&interval) {
        return Err(UsageError(format!(
            "invalid --sample-interval {text:?}: allowed range is 100ms to 60s"
        )));
    }
    Ok(interval)
}

/// `--gpu-backend` and each library's path.
fn backend(
    flags: &mut Flags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BackendConfig, UsageError> {
    let choice = match flags
        .take_value("--gpu-backend")?
        .or_else(|| env("KEDA_GPU_SCALER_GPU_BACKEND").filter(|v| !v.is_empty()))
    {
        None => BackendChoice::default(),
        Some(text) => BackendChoice::parse(&text).ok_or_else(|| {
            UsageError(format!(
                "invalid --gpu-backend {text:?}: expected one of {}",
                BackendChoice::ALLOWED
            ))
        })?,
    };
    let mut path = |flag: &str, twin: &str| -> Result<Option<PathBuf>, UsageError> {
        Ok(flags
            .take_value(flag)?
            .or_else(|| env(twin).filter(|p| !p.is_empty()))
            .map(PathBuf::from))
    };
    Ok(BackendConfig {
        choice,
        nvml_library: path("--nvml-library", "NVML_LIBRARY_PATH")?,
        amd_smi_library: path("--amd-smi-library", "AMD_SMI_LIBRARY_PATH")?,
    })
}

fn query_args(flags: &mut Flags) -> Result<QueryArgs, UsageError> {
    let mut metadata = Vec::new();
    while let Some(pair) = flags.take_value("--metadata")? {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            UsageError(format!("invalid --metadata {pair:?}: expected KEY=VALUE"))
        })?;
        metadata.push((key.to_string(), value.to_string()));
    }
    let replicas = match flags.take_value("--replicas")? {
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                UsageError(format!(
                    "invalid --replicas {text:?}: expected an integer >= 1"
                ))
            })?,
        None => 1,
    };
    let timeout = match flags.take_value("--timeout")? {
        Some(text) => {
            parse_duration(&text).map_err(|e| UsageError(format!("invalid --timeout: {e}")))?
        }
        None => Duration::from_secs(5),
    };
    let ca = flags.take_value("--ca")?.map(PathBuf::from);
    let cert = flags.take_value("--cert")?.map(PathBuf::from);
    let key = flags.take_value("--key")?.map(PathBuf::from);
    let server_name = flags.take_value("--server-name")?;
    let tls = match (ca, cert, key) {
        (None, None, None) if server_name.is_none() => None,
        (Some(ca), None, None) => Some(ClientTls {
            ca,
            cert_and_key: None,
            server_name,
        }),
        (Some(ca), Some(cert), Some(key)) => Some(ClientTls {
            ca,
            cert_and_key: Some((cert, key)),
            server_name,
        }),
        (None, _, _) => {
            return Err(UsageError(
                "--cert, --key and --server-name need --ca".to_string(),
            ))
        }
        _ => return Err(UsageError("--cert and --key go together".to_string())),
    };
    Ok(QueryArgs {
        tls,
        explain: flags.take_switch("--explain"),
        address: flags
            .take_value("--address")?
            .unwrap_or_else(|| "127.0.0.1:6000".to_string()),
        metadata,
        replicas,
        name: flags
            .take_value("--name")?
            .unwrap_or_else(|| "query".to_string()),
        namespace: flags
            .take_value("--namespace")?
            .unwrap_or_else(|| "default".to_string()),
        timeout,
    })
}

/// `--flag value` and `--flag=value`, taken one by one; leftovers are errors.
struct Flags {
    items: Vec<(String, Option<String>)>,
}

impl Flags {
    fn new(args: &[String]) -> Result<Self, UsageError> {
        let mut items = Vec::new();
        let mut iter = args.iter().peekable();
        while let Some(arg) = iter.next() {
            if !arg.starts_with("--") {
                return Err(UsageError(format!("unexpected argument {arg:?}")));
            }
            match arg.split_once('=') {
                Some((flag, value)) => items.push((flag.to_string(), Some(value.to_string()))),
                None => {
                    let value = iter.next_if(|next| !next.starts_with("--")).cloned();
                    items.push((arg.clone(), value));
                }
            }
        }
        Ok(Self { items })
    }

    fn take_switch(&mut self, flag: &str) -> bool {
        match self
            .items
            .iter()
            .position(|(f, v)| f == flag && v.is_none())
        {
            Some(i) => {
                self.items.remove(i);
                true
            }
            None => false,
        }
    }

    fn take_value(&mut self, flag: &str) -> Result<Option<String>, UsageError> {
        let Some(i) = self.items.iter().position(|(f, _)| f == flag) else {
            return Ok(None);
        };
        match self.items.remove(i) {
            (_, Some(value)) => Ok(Some(value)),
            (_, None) => Err(UsageError(format!("{flag} needs a value"))),
        }
    }

    fn finish(self) -> Result<(), UsageError> {
        match self.items.first() {
            None => Ok(()),
            Some((flag, _)) => Err(UsageError(format!("unknown flag {flag}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn serve_is_the_default_with_defaults() {
        let expected = Command::Serve(Box::new(ServeArgs {
            listen: "0.0.0.0:6000".into(),
            sample_interval: Duration::from_secs(1),
            backend: BackendConfig::default(),
            tls: None,
            probe_listen: None,
            metrics_listen: None,
            node_name: None,
            peers: vec![],
            peer_timeout: Duration::from_millis(500),
            peer_server_name: None,
            pod_resources_socket: PathBuf::from("/var/lib/kubelet/pod-resources/kubelet.sock"),
            gpu_resource_names: vec![],
            engine_policy: EndpointPolicy::default(),
        }));
        assert_eq!(parse(&[], &no_env), Ok(expected.clone()));
        assert_eq!(parse(&args("serve"), &no_env), Ok(expected));
    }

    #[test]
    fn engine_policy_flags_and_their_twins() {
        let Ok(Command::Serve(serve)) = parse(
            &args("--engine-allow-cidrs 127.0.0.0/8,fd00::/8 --engine-any-namespace --cluster-domain k8s.lab"),
            &no_env,
        ) else {
            panic!()
        };
        let policy = serve.engine_policy;
        assert_eq!(
            policy.allowed,
            policy::parse_cidrs("127.0.0.0/8,fd00::/8").unwrap()
        );
        assert!(policy.any_namespace);
        assert_eq!(policy.cluster_domain, "k8s.lab");
        let env = |key: &str| match key {
            "KEDA_GPU_SCALER_ENGINE_ALLOW_CIDRS" => Some("10.0.0.0/8".to_string()),
            "KEDA_GPU_SCALER_ENGINE_ANY_NAMESPACE" => Some("true".to_string()),
            _ => None,
        };
        let Ok(Command::Serve(serve)) = parse(&[], &env) else {
            panic!()
        };
        assert_eq!(serve.engine_policy.allowed.len(), 1);
        assert!(serve.engine_policy.any_namespace);
        let refused = |line: &str| parse(&args(line), &no_env).unwrap_err().0;
        assert_eq!(
            refused("--engine-allow-cidrs 10.0.0.1/8"),
            "invalid --engine-allow-cidrs: \"10.0.0.1/8\" has host bits set; the network is 10.0.0.0/8"
        );
        assert_eq!(
            refused("--engine-allow-cidrs ,"),
            "invalid --engine-allow-cidrs \",\": name at least one range, e.g. 10.0.0.0/8"
        );
        assert_eq!(
            refused("--cluster-domain bad..domain"),
            "invalid --cluster-domain \"bad..domain\": expected a DNS domain, e.g. cluster.local"
        );
        let yes =
            |key: &str| (key == "KEDA_GPU_SCALER_ENGINE_ANY_NAMESPACE").then(|| "yes".to_string());
        assert_eq!(
            parse(&[], &yes).unwrap_err().0,
            "invalid KEDA_GPU_SCALER_ENGINE_ANY_NAMESPACE \"yes\": expected true or false"
        );
    }

    #[test]
    fn flags_beat_environment_twins() {
        let env = |key: &str| match key {
            "KEDA_GPU_SCALER_LISTEN" => Some("127.0.0.1:7000".to_string()),
            "KEDA_GPU_SCALER_SAMPLE_INTERVAL" => Some("500ms".to_string()),
            "NVML_LIBRARY_PATH" => Some("/env/libnvidia-ml.so.1".to_string()),
            "KEDA_GPU_SCALER_GPU_BACKEND" => Some("amd".to_string()),
            "AMD_SMI_LIBRARY_PATH" => Some("/env/libamd_smi.so".to_string()),
            _ => None,
        };
        let Ok(Command::Serve(from_env)) = parse(&[], &env) else {
            panic!()
        };
        assert_eq!(from_env.listen, "127.0.0.1:7000");
        assert_eq!(from_env.sample_interval, Duration::from_millis(500));
        assert_eq!(
            from_env.backend.nvml_library,
            Some(PathBuf::from("/env/libnvidia-ml.so.1"))
        );
        assert_eq!(from_env.backend.choice, BackendChoice::Amd);
        assert_eq!(
            from_env.backend.amd_smi_library,
            Some(PathBuf::from("/env/libamd_smi.so"))
        );
        let Ok(Command::Serve(from_flags)) = parse(
            &args("--listen=[::]:6001 --sample-interval 2s --nvml-library /x.so --gpu-backend nvidia --amd-smi-library /a.so"),
            &env,
        ) else {
            panic!()
        };
        assert_eq!(from_flags.listen, "[::]:6001");
        assert_eq!(from_flags.sample_interval, Duration::from_secs(2));
        assert_eq!(
            from_flags.backend,
            BackendConfig {
                choice: BackendChoice::Nvidia,
                nvml_library: Some(PathBuf::from("/x.so")),
                amd_smi_library: Some(PathBuf::from("/a.so")),
            }
        );
    }

    #[test]
    fn an_unknown_gpu_backend_names_the_flag_and_the_choices() {
        for command in ["serve", "devices"] {
            let error =
                parse(&args(&format!("{command} --gpu-backend rocm")), &no_env).unwrap_err();
            assert_eq!(
                error.0,
                "invalid --gpu-backend \"rocm\": expected one of auto, nvidia, amd"
            );
        }
        let env = |key: &str| (key == "KEDA_GPU_SCALER_GPU_BACKEND").then(|| "NVIDIA".to_string());
        assert!(parse(&[], &env).unwrap_err().0.contains("\"NVIDIA\""));
    }

    #[test]
    fn sample_interval_range_is_enforced() {
        for bad in ["50ms", "61s", "10", "fast"] {
            let err = parse(&args(&format!("serve --sample-interval {bad}")), &no_env).unwrap_err();
            assert!(
                err.0.starts_with("invalid --sample-interval"),
                "{bad}: {err}"
            );
        }
        assert!(parse(&args("--sample-interval 100ms"), &no_env).is_ok());
        assert!(parse(&args("--sample-interval 60s"), &no_env).is_ok());
    }

    #[test]
    fn unknown_flags_and_commands_are_errors() {
        assert_eq!(
            parse(&args("serve --port 1"), &no_env).unwrap_err().0,
            "unknown flag --port"
        );
        assert!(parse(&args("status"), &no_env)
            .unwrap_err()
            .0
            .contains("unknown command \"status\""));
        assert_eq!(
            parse(&args("serve --listen"), &no_env).unwrap_err().0,
            "--listen needs a value"
        );
    }

    #[test]
    fn query_collects_repeated_metadata() {
        let Ok(Command::Query(query)) = parse(
            &args("query --address h:1 --metadata profile=batch --metadata targetValue=50 --replicas 3"),
            &no_env,
        ) else {
            panic!()
        };
        assert_eq!(query.address, "h:1");
        assert_eq!(
            query.metadata,
            vec![
                ("profile".into(), "batch".into()),
                ("targetValue".into(), "50".into())
            ]
        );
        assert_eq!(query.replicas, 3);
        let refused = |line: &str| parse(&args(line), &no_env).unwrap_err().0;
        assert_eq!(
            refused("query --metadata novalue"),
            "invalid --metadata \"novalue\": expected KEY=VALUE"
        );
        assert_eq!(
            refused("query --replicas 0"),
            "invalid --replicas \"0\": expected an integer >= 1"
        );
    }

    #[test]
    fn cluster_flags() {
        let env = |key: &str| match key {
            "NODE_NAME" => Some("gpu-node-7".to_string()),
            "KEDA_GPU_SCALER_PEERS" => Some("keda-gpu-scaler-peers.keda.svc:6000".to_string()),
            _ => None,
        };
        let Ok(Command::Serve(serve)) = parse(
            &args("--peer-timeout 250ms --gpu-resource-names a/b,,c/d"),
            &env,
        ) else {
            panic!()
        };
        assert_eq!(serve.node_name.as_deref(), Some("gpu-node-7"));
        assert_eq!(serve.peers, ["keda-gpu-scaler-peers.keda.svc:6000"]);
        assert_eq!(serve.peer_timeout, Duration::from_millis(250));
        assert_eq!(serve.gpu_resource_names, ["a/b", "c/d"]);
        let Ok(Command::Serve(serve)) =
            parse(&args("--peers 127.0.0.1:7001,127.0.0.1:7002"), &no_env)
        else {
            panic!()
        };
        assert_eq!(serve.peers, ["127.0.0.1:7001", "127.0.0.1:7002"]);
        let refused = |line: &str| parse(&args(line), &no_env).unwrap_err().0;
        assert_eq!(
            refused("--peers host-without-port"),
            "invalid --peers \"host-without-port\": expected HOST:PORT, e.g. 0.0.0.0:6000"
        );
        for bad in ["0s", "31s"] {
            assert_eq!(
                refused(&format!("--peer-timeout {bad} --sample-interval 60s")),
                format!("invalid --peer-timeout \"{bad}\": allowed range is 1ms to 30s")
            );
        }
        let error = parse(&args("--peer-timeout 1s"), &no_env).unwrap_err();
        assert!(
            error.0.contains("must be below --sample-interval (1s)"),
            "{error}"
        );
        let Ok(Command::Serve(serve)) = parse(&args("--sample-interval 200ms"), &no_env) else {
            panic!()
        };
        assert_eq!(serve.peer_timeout, Duration::from_millis(100));
        let Ok(Command::Serve(serve)) = parse(
            &args("--peer-server-name peers.keda.svc --peer-timeout 2s --sample-interval 5s"),
            &no_env,
        ) else {
            panic!()
        };
        assert_eq!(serve.peer_server_name.as_deref(), Some("peers.keda.svc"));
        assert_eq!(serve.peer_timeout, Duration::from_secs(2));
        let Ok(Command::Query(query)) = parse(&args("query --explain"), &no_env) else {
            panic!()
        };
        assert!(query.explain);
    }

    #[test]
    fn tls_flags_come_as_a_set() {
        let Ok(Command::Serve(serve)) = parse(
            &args("--tls-cert c.pem --tls-key k.pem --tls-client-ca ca.pem"),
            &no_env,
        ) else {
            panic!()
        };
        assert_eq!(
            serve.tls,
            Some(TlsFiles {
                cert: "c.pem".into(),
                key: "k.pem".into(),
                client_ca: Some("ca.pem".into())
            })
        );
        let env = |key: &str| (key == "KEDA_GPU_SCALER_TLS_KEY").then(|| "k.pem".to_string());
        assert_eq!(
            parse(&args("--tls-cert c.pem"), &no_env).unwrap_err().0,
            "--tls-cert and --tls-key go together; give both or neither"
        );
        assert!(matches!(
            parse(&args("--tls-cert c.pem"), &env),
            Ok(Command::Serve(serve)) if serve.tls.is_some()
        ));
        assert_eq!(
            parse(&args("--tls-client-ca ca.pem"), &no_env)
                .unwrap_err()
                .0,
            "--tls-client-ca needs --tls-cert and --tls-key"
        );
        assert_eq!(
            parse(&args("query --cert c --key k"), &no_env)
                .unwrap_err()
                .0,
            "--cert, --key and --server-name need --ca"
        );
        assert_eq!(
            parse(&args("query --ca ca --cert c"), &no_env)
                .unwrap_err()
                .0,
            "--cert and --key go together"
        );
        let Ok(Command::Query(query)) = parse(
            &args("query --ca ca --cert c --key k --server-name s"),
            &no_env,
        ) else {
            panic!()
        };
        assert_eq!(
            query.tls,
            Some(ClientTls {
                ca: "ca".into(),
                cert_and_key: Some(("c".into(), "k".into())),
                server_name: Some("s".into())
            })
        );
    }

    #[test]
    fn devices_takes_json_switch() {
        assert_eq!(
            parse(&args("devices --json"), &no_env),
            Ok(Command::Devices(DevicesArgs {
                json: true,
                backend: BackendConfig::default(),
            }))
        );
    }
}
