#!/usr/bin/env python3
"""Checks what CI can check of the deployment without a cluster or Docker.

- the Helm chart lints, and with default values renders the same objects as
  deploy/manifests.yaml (less the Namespace); with TLS values it renders too;
- deploy/manifests.yaml and the rendered charts validate against the
  Kubernetes schemas (kubernetes-validate, strict);
- every example validates against KEDA's ScaledObject/TriggerAuthentication
  CRD schemas (../shared/keda) and its other objects against Kubernetes'
  schemas; percent triggers and latencies (an SLO in seconds) use metricType
  Value, summed queues and workload rates (per second, a counter's rate)
  AverageValue; engine endpoints name a headless Service of the example; a
  trigger on the workload's own engine, which has nothing to read at zero
  replicas, comes with minReplicaCount 1 or a demand-side trigger; the SLO,
  token-rate and wake-from-router examples show what they are there for
  (EXAMPLE_PURPOSES); and the real scaler accepts every external trigger's
  metadata and, for engine triggers, reads a value from a fake engine of
  that kind (for a page of no engine, such as production-stack's router, a
  fake page served here, its counters rising);
- the chart's `platform` (generic, gpu-operator, gke, eks, aks, oke): each
  renders, validates, and its node affinity is exactly the OR of the GPU-node
  labels that platform documents (PLATFORMS), landing on sample GPU nodes of
  that platform (labels and taints as documented) and on no sample node
  without an NVIDIA GPU; a driver mount (GKE) is read-only, of the
  documented host directory, at a container path holding directories of the
  scaler's NVML search path (read from src/nvml/library.rs); no platform's
  pod differs from generic's beyond affinity, tolerations, runtimeClassName,
  that one hostPath and (GKE) device-injector entries naming only GPU device
  nodes; an unknown platform fails listing the known ones; and every
  platform setting can be overridden on its own;
- the chart's AMD flavour (amd.enabled): a second DaemonSet for AMD nodes
  reading AMD SMI from the host's ROCm, read-only, with no NVIDIA settings,
  selecting only its own pods, in the same Services as the NVIDIA pods;
- the chart's optional PodMonitor and ServiceMonitor (prometheus-operator)
  select the scaler pods' metrics port, and validate: strictly against the
  operator's CRD schemas when --monitor-crds names a folder holding them,
  else with the JSON-schema validators of the npm package
  @kubernetes-models/prometheus-operator (--monitor-models, which .ci/run
  installs), which check types, patterns and required fields but not
  misspelt ones;
- the Dockerfile: hadolint, a nonroot distroless final stage, an entrypoint
  naming the binary, and a release binary that needs nothing but glibc.

Usage: check.py --helm HELM --binary BIN --release-binary BIN --fake-nvml LIB
                --fake-engine BIN (--monitor-models DIR | --monitor-crds DIR)
"""

import argparse
import contextlib
import copy
import glob
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART = os.path.join(ROOT, "deploy", "helm", "keda-gpu-scaler")
MANIFESTS = os.path.join(ROOT, "deploy", "manifests.yaml")
KEDA_CRDS = os.path.join(ROOT, "..", "shared", "keda")
PERCENT_METRICS = {"gpu_utilization", "memory_utilization", "memory_used_percent",
                   "sm_activity", "sm_occupancy", "tensor_activity", "dram_bandwidth_utilization",
                   "kv_cache_usage_percent"}
PROFILE_METRICS = {
    "vllm-inference": "gpu_utilization",
    "triton-inference": "gpu_utilization",
    "training": "gpu_utilization",
    "batch": "memory_used_percent",
    "vllm-queue": "queue_length",
    "vllm-kv-cache": "kv_cache_usage_percent",
    "sglang-queue": "queue_length",
    "sglang-kv-cache": "kv_cache_usage_percent",
}
PROFILE_ENGINES = {"vllm-queue": "vllm", "vllm-kv-cache": "vllm",
                   "sglang-queue": "sglang", "sglang-kv-cache": "sglang"}
# Engine metricTypes read over engineWindow: latencies (a percentile or the
# mean, in seconds, compared as is with the SLO: Value) and workload rates
# (totals per second, divided across replicas: AverageValue).
LATENCY_METRICS = {"ttft_seconds", "itl_seconds", "e2e_latency_seconds", "queue_time_seconds"}
RATE_METRICS = {"request_rate", "prompt_tokens_rate", "generation_tokens_rate"}
ENGINE_PORTS = {"vllm": 8000, "sglang": 30000, "trtllm": 8000, "triton": 8002}
# The fake engine page for each engine (Triton: with the TensorRT-LLM backend).
FAKE_ENGINE_KINDS = {"vllm": "vllm", "sglang": "sglang", "trtllm": "trtllm", "triton": "triton-trtllm"}
GLIBC = {"libc.so.6", "libm.so.6", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}

failures = []
passes = []


def check(condition, message):
    print(("ok    " if condition else "FAIL  ") + message)
    (passes if condition else failures).append(message)


def load_all(text):
    return [d for d in yaml.safe_load_all(text) if d]


def helm(args, helm_bin):
    return subprocess.run([helm_bin] + args, check=True, capture_output=True, text=True).stdout


def key(obj):
    return (obj["kind"], obj["metadata"]["name"])


def check_chart(helm_bin, tmp):
    helm(["lint", CHART], helm_bin)
    check(True, "helm lint passes")
    rendered = helm(["template", "keda-gpu-scaler", CHART, "--namespace", "keda"], helm_bin)
    with open(MANIFESTS) as f:
        plain = [o for o in load_all(f.read()) if o["kind"] != "Namespace"]
    chart = load_all(rendered)
    same = sorted(plain, key=key) == sorted(chart, key=key)
    check(same, "chart defaults render the objects of deploy/manifests.yaml")
    if not same:
        for a, b in zip(sorted(plain, key=key), sorted(chart, key=key)):
            if a != b:
                print(yaml.safe_dump(a), "--- differs from chart ---\n", yaml.safe_dump(b))
    tls = helm(["template", "keda-gpu-scaler", CHART, "--namespace", "keda",
                "--set", "tls.secretName=scaler-tls", "--set", "tls.requireClientCert=true",
                "--set", "image.digest=sha256:" + "0" * 64], helm_bin)
    daemonset = next(o for o in load_all(tls) if o["kind"] == "DaemonSet")
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    check(env.get("KEDA_GPU_SCALER_TLS_CLIENT_CA") == "/etc/keda-gpu-scaler/tls/ca.crt"
          and container["readinessProbe"]["grpc"]["port"] == 6001
          and container["image"].endswith("@sha256:" + "0" * 64),
          "chart with TLS mounts the secret, probes the plaintext probe port, pins the digest")
    refused = subprocess.run([helm_bin, "template", "x", CHART, "--set", "tls.secretName=s"],
                             capture_output=True, text=True)
    check(refused.returncode != 0 and "tls.requireClientCert=true" in refused.stderr,
          "chart refuses peers over TLS without client certificates, saying why")
    def daemonset_env(text):
        daemonset = next(o for o in load_all(text) if o["kind"] == "DaemonSet")
        return {e["name"]: e.get("value") for e in daemonset["spec"]["template"]["spec"]["containers"][0]["env"]}
    check(not any(name.startswith("KEDA_GPU_SCALER_ENGINE_") for name in daemonset_env(rendered)),
          "chart's default engine endpoint policy is the scaler's strict one (own namespace, private ranges)")
    relaxed = daemonset_env(helm(["template", "keda-gpu-scaler", CHART, "--namespace", "keda",
                                  "--set", "engineEndpoints.anyNamespace=true",
                                  "--set", "engineEndpoints.allowCidrs[0]=10.0.0.0/8",
                                  "--set", "engineEndpoints.clusterDomain=k8s.lab"], helm_bin))
    check(relaxed.get("KEDA_GPU_SCALER_ENGINE_ANY_NAMESPACE") == "true"
          and relaxed.get("KEDA_GPU_SCALER_ENGINE_ALLOW_CIDRS") == "10.0.0.0/8"
          and relaxed.get("KEDA_GPU_SCALER_CLUSTER_DOMAIN") == "k8s.lab",
          "chart passes engineEndpoints values to the scaler")
    annotated = helm(["template", "keda-gpu-scaler", CHART, "--namespace", "keda",
                      "--set", "metrics.annotations=true"], helm_bin)
    annotations = next(o for o in load_all(annotated) if o["kind"] == "DaemonSet")["spec"]["template"]["metadata"]
    ports = next(o for o in load_all(rendered) if o["kind"] == "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["ports"]
    check(annotations.get("annotations", {}).get("prometheus.io/port") == "9400"
          and any(p["name"] == "metrics" and p["containerPort"] == 9400 for p in ports),
          "chart serves /metrics on a port named metrics, with optional prometheus.io annotations")
    amd = load_all(helm(["template", "keda-gpu-scaler", CHART, "--namespace", "keda",
                         "--set", "amd.enabled=true",
                         "--set", "amd.libraryDirs[0]=/opt/amdgpu/lib/x86_64-linux-gnu"], helm_bin))
    daemonsets = {o["metadata"]["name"]: o for o in amd if o["kind"] == "DaemonSet"}
    nvidia_ds, amd_ds = daemonsets.get("keda-gpu-scaler"), daemonsets.get("keda-gpu-scaler-amd")
    check(nvidia_ds is not None and amd_ds is not None, "chart with amd.enabled renders an NVIDIA and an AMD DaemonSet")
    amd_pod = amd_ds["spec"]["template"]
    amd_container = amd_pod["spec"]["containers"][0]
    amd_env = {e["name"]: e.get("value") for e in amd_container["env"]}
    mounts = {m["name"]: m for m in amd_container["volumeMounts"]}
    host = {v["name"]: v.get("hostPath", {}) for v in amd_pod["spec"]["volumes"]}
    check(amd_env.get("KEDA_GPU_SCALER_GPU_BACKEND") == "amd"
          and amd_env.get("LD_LIBRARY_PATH") == "/opt/rocm/lib:/host-lib/0"
          and not any(k.startswith("NVIDIA_") for k in amd_env)
          and "runtimeClassName" not in amd_pod["spec"]
          and mounts["rocm"]["readOnly"] and mounts["rocm"]["mountPath"] == host["rocm"]["path"] == "/opt/rocm"
          and mounts["amd-lib-0"]["readOnly"] and mounts["amd-lib-0"]["mountPath"] == "/host-lib/0"
          and host["amd-lib-0"]["path"] == "/opt/amdgpu/lib/x86_64-linux-gnu"
          and amd_container["securityContext"]["capabilities"]["drop"] == ["ALL"]
          and not amd_container["securityContext"]["privileged"],
          "AMD DaemonSet reads AMD SMI from the host's ROCm, read-only, unprivileged, without NVIDIA settings")
    nvidia_env = {e["name"]: e.get("value") for e in nvidia_ds["spec"]["template"]["spec"]["containers"][0]["env"]}
    amd_selector = amd_ds["spec"]["selector"]["matchLabels"]
    nvidia_labels = nvidia_ds["spec"]["template"]["metadata"]["labels"]
    services = [o for o in amd if o["kind"] == "Service"]
    check(nvidia_env.get("KEDA_GPU_SCALER_GPU_BACKEND") == "nvidia"
          and amd_selector.items() <= amd_pod["metadata"]["labels"].items()
          and not amd_selector.items() <= nvidia_labels.items()
          and all(s["spec"]["selector"].items() <= amd_pod["metadata"]["labels"].items()
                  and s["spec"]["selector"].items() <= nvidia_labels.items() for s in services),
          "AMD DaemonSet selects only its own pods; every Service (and the peers) reaches both flavours")
    terms = amd_pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    keys = {e["key"] for t in terms for e in t["matchExpressions"]}
    check("feature.node.kubernetes.io/amd-gpu" in keys and "feature.node.kubernetes.io/pci-1200_1002.present" in keys
          and "nodeSelector" not in amd_pod["spec"],
          "AMD DaemonSet runs on nodes NFD, the AMD GPU Operator or AMD's labeller mark as AMD GPU nodes")
    amd_only = load_all(helm(["template", "keda-gpu-scaler", CHART, "--set", "amd.enabled=true",
                              "--set", "nvidia.enabled=false"], helm_bin))
    check([o["metadata"]["name"] for o in amd_only if o["kind"] == "DaemonSet"] == ["keda-gpu-scaler-amd"],
          "chart with nvidia.enabled=false renders the AMD DaemonSet alone")
    over = subprocess.run([helm_bin, "template", "x", CHART, "--set", "amd.enabled=true",
                           "--set", "amd.rocmPath=/usr/lib"], capture_output=True, text=True)
    check(over.returncode != 0 and "would be mounted over the image's own system directories" in over.stderr,
          "chart refuses an amd.rocmPath over the image's system directories, saying why")
    refused = subprocess.run([helm_bin, "template", "x", CHART, "--set", "nvidia.enabled=false"],
                             capture_output=True, text=True)
    check(refused.returncode != 0 and "nvidia.enabled and amd.enabled are both false" in refused.stderr,
          "chart refuses neither flavour, saying why")
    local_only = helm(["template", "keda-gpu-scaler", CHART, "--namespace", "keda",
                       "--set", "peers.enabled=false", "--set", "podResources.enabled=false"], helm_bin)
    objects = load_all(local_only)
    pod = next(o for o in objects if o["kind"] == "DaemonSet")["spec"]["template"]["spec"]
    check(len([o for o in objects if o["kind"] == "Service"]) == 1
          and pod["securityContext"]["runAsUser"] == 65532 and "volumes" not in pod,
          "chart without peers and pod resources runs as nonroot with no hostPath")
    paths = []
    for name, text in [("rendered-default.yaml", rendered), ("rendered-tls.yaml", tls),
                       ("rendered-local.yaml", local_only), ("rendered-amd.yaml", yaml.safe_dump_all(amd))]:
        path = os.path.join(tmp, name)
        with open(path, "w") as f:
            f.write(text)
        paths.append(path)
    return paths


# What each platform documents about its NVIDIA GPU nodes (the README's
# "Install on …" sections give the sources): the node labels the chart's
# node affinity must be (an OR, one term each), the taints its GPU nodes
# carry, the driver directory (host → container) where no NVIDIA runtime
# injects libnvidia-ml.so.1, and the runtimeClassName it needs.
NVIDIA = [("nvidia.com/gpu.present", "In", ("true",))]  # GPU Operator (from NFD); EKS AL2023 nodeadm, k8s 1.35+
NFD_NVIDIA = [("feature.node.kubernetes.io/pci-10de.present", "In", ("true",))]  # NFD, PCI vendor 10de
GKE = [("cloud.google.com/gke-accelerator", "Exists", ())]
EKS = [("karpenter.k8s.aws/instance-gpu-manufacturer", "In", ("nvidia",)),  # Karpenter
       ("eks.amazonaws.com/instance-gpu-manufacturer", "In", ("nvidia",))]  # EKS Auto Mode
AKS = [("kubernetes.azure.com/accelerator", "In", ("nvidia",))]
OKE_SHAPES = ("VM.GPU.A10.1", "VM.GPU.A10.2", "BM.GPU.A10.4", "BM.GPU.L40S.4", "BM.GPU4.8", "BM.GPU.A100-v2.8",
              "BM.GPU.H100.8", "BM.GPU.H200.8", "BM.GPU.B4.8", "BM.GPU.B200.8", "BM.GPU.B300.8", "BM.GPU.GB200.4",
              "BM.GPU.GB200-v2.4", "BM.GPU.GB200-v3.4", "BM.GPU.GB300.4", "BM.GPU.RTXPRO.8")
PLATFORMS = {
    "generic": {"labels": NVIDIA + NFD_NVIDIA + GKE + EKS + AKS,
                "taints": [("nvidia.com/gpu", "present", "NoSchedule"), ("sku", "gpu", "NoSchedule")],
                "driver": None, "runtime_class": None},
    "gpu-operator": {"labels": NVIDIA, "taints": [("nvidia.com/gpu", "", "NoSchedule")],
                     "driver": None, "runtime_class": "nvidia"},
    "gke": {"labels": GKE, "taints": [("nvidia.com/gpu", "present", "NoSchedule")],
            "driver": ("/home/kubernetes/bin/nvidia", "/usr/local/nvidia"), "runtime_class": None},
    "eks": {"labels": NVIDIA + EKS, "taints": [("nvidia.com/gpu", "true", "NoSchedule")],
            "driver": None, "runtime_class": None},
    "aks": {"labels": AKS, "taints": [("sku", "gpu", "NoSchedule"), ("nvidia.com/gpu", "", "NoSchedule")],
            "driver": None, "runtime_class": None},
    "oke": {"labels": NVIDIA + NFD_NVIDIA + [("node.kubernetes.io/instance-type", "In", OKE_SHAPES)],
            "taints": [("nvidia.com/gpu", "present", "NoSchedule")], "driver": None, "runtime_class": None},
}
# Nodes as each platform labels and taints them: (platform, labels, taints).
GPU_NODES = [
    ("gke", {"cloud.google.com/gke-accelerator": "nvidia-l4", "cloud.google.com/gke-gpu": "true",
             "cloud.google.com/gke-nodepool": "gpu-pool"}, [("nvidia.com/gpu", "present", "NoSchedule")]),
    ("eks", {"nvidia.com/gpu.present": "true", "node.kubernetes.io/instance-type": "g6.xlarge"}, []),
    ("eks", {"karpenter.k8s.aws/instance-gpu-manufacturer": "nvidia", "karpenter.k8s.aws/instance-gpu-name": "l4"},
     [("nvidia.com/gpu", "true", "NoSchedule")]),
    ("eks", {"eks.amazonaws.com/instance-gpu-manufacturer": "nvidia"}, [("nvidia.com/gpu", "", "NoSchedule")]),
    ("aks", {"kubernetes.azure.com/accelerator": "nvidia", "kubernetes.azure.com/agentpool": "gpunp"},
     [("sku", "gpu", "NoSchedule")]),
    ("gpu-operator", {"nvidia.com/gpu.present": "true", "feature.node.kubernetes.io/pci-10de.present": "true"},
     [("nvidia.com/gpu", "", "NoSchedule")]),
    ("oke", {"node.kubernetes.io/instance-type": "BM.GPU.H100.8"}, [("nvidia.com/gpu", "present", "NoSchedule")]),
    ("oke", {"node.kubernetes.io/instance-type": "VM.GPU.A10.1"}, [("nvidia.com/gpu", "present", "NoSchedule")]),
]
NON_GPU_NODES = [
    ("GKE CPU node", {"cloud.google.com/gke-nodepool": "default-pool", "node.kubernetes.io/instance-type": "e2-standard-4"}),
    ("GKE TPU node", {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice", "cloud.google.com/gke-nodepool": "tpu"}),
    ("EKS CPU node (Karpenter)", {"karpenter.k8s.aws/instance-category": "m", "node.kubernetes.io/instance-type": "m7i.large"}),
    ("EKS AMD GPU node (Karpenter)", {"karpenter.k8s.aws/instance-gpu-manufacturer": "amd", "node.kubernetes.io/instance-type": "g4ad.xlarge"}),
    ("EKS Inferentia node (Auto Mode)", {"eks.amazonaws.com/instance-accelerator-manufacturer": "aws"}),
    ("AKS CPU node", {"kubernetes.azure.com/agentpool": "system", "kubernetes.azure.com/mode": "system"}),
    ("OKE CPU node", {"node.kubernetes.io/instance-type": "VM.Standard.E5.Flex"}),
    ("OKE AMD GPU node", {"node.kubernetes.io/instance-type": "BM.GPU.MI300X.8"}),
    ("NFD AMD GPU node", {"feature.node.kubernetes.io/pci-1002.present": "true", "feature.node.kubernetes.io/amd-gpu": "true"}),
    ("NFD Grace CPU node, no GPU", {"feature.node.kubernetes.io/cpu-model.vendor_id": "NVIDIA"}),
]
DEVICE_KEY = "devices.gke.io/container.keda-gpu-scaler"
GKE_GPUS = 2


def nvml_search_dirs():
    """The directories the scaler searches for libnvidia-ml.so.1, read from
    the source (src/nvml/library.rs DRIVER_DIRS)."""
    with open(os.path.join(ROOT, "src", "nvml", "library.rs")) as f:
        found = re.search(r"DRIVER_DIRS: &\[&str\] = &\[(.*?)\];", f.read(), re.S)
    return re.findall(r'"([^"]+)"', found.group(1)) if found else []


def expression_matches(expr, labels):
    k, op, values = expr["key"], expr["operator"], expr.get("values", [])
    if op == "In":
        return k in labels and labels[k] in values
    if op == "NotIn":
        return k not in labels or labels[k] not in values
    if op == "Exists":
        return k in labels
    if op == "DoesNotExist":
        return k not in labels
    if op in ("Gt", "Lt"):
        return k in labels and (int(labels[k]) > int(values[0])) == (op == "Gt")
    raise ValueError(op)


def tolerated(tolerations, taint):
    key, value, effect = taint
    for t in tolerations or []:
        if t.get("effect") and t["effect"] != effect:
            continue
        if t.get("operator", "Equal") == "Exists":
            if not t.get("key") or t["key"] == key:
                return True
        elif t.get("key") == key and t.get("value", "") == value:
            return True
    return False


def lands_on(pod, labels, taints=()):
    """Whether the scheduler may put the pod on a node with these labels and taints."""
    if any(labels.get(k) != v for k, v in pod.get("nodeSelector", {}).items()):
        return False
    required = pod.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    if required and not any(all(expression_matches(e, labels) for e in term.get("matchExpressions", []))
                            for term in required["nodeSelectorTerms"]):
        return False
    return all(tolerated(pod.get("tolerations"), t) for t in taints if t[2] in ("NoSchedule", "NoExecute"))


def affinity_terms(pod):
    """The node affinity as a set of (key, operator, values), or None when a
    term is not a single expression (the chart's are)."""
    required = pod.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    if not required:
        return set()
    terms = [t.get("matchExpressions", []) for t in required["nodeSelectorTerms"]]
    if any(len(t) != 1 or set(required["nodeSelectorTerms"][i]) != {"matchExpressions"} for i, t in enumerate(terms)):
        return None
    return {(e["key"], e["operator"], tuple(e.get("values", ()))) for (e,) in terms}


def platform_pod(helm_bin, platform, *sets, values=None):
    args = ["template", "keda-gpu-scaler", CHART, "--namespace", "keda", "--set", f"platform={platform}"]
    if platform == "gke":
        args += ["--set", f"gke.gpusPerNode={GKE_GPUS}"]
    for s in sets:
        args += ["--set", s]
    if values:
        args += ["-f", values]
    text = helm(args, helm_bin)
    daemonset = next(o for o in load_all(text) if o["kind"] == "DaemonSet")
    return text, daemonset["spec"]["template"]


def split_grants(template):
    """A pod template less what a platform may change: node affinity,
    tolerations, runtimeClassName, the platform env var, the driver
    hostPath (returned: volume, mount) and the GKE device annotation
    (returned: the device paths)."""
    template = copy.deepcopy(template)
    spec, meta = template["spec"], template["metadata"]
    for field in ("affinity", "tolerations", "runtimeClassName"):
        spec.pop(field, None)
    container = spec["containers"][0]
    container["env"] = [e for e in container["env"] if e["name"] != "KEDA_GPU_SCALER_PLATFORM"]
    volume = next((v for v in spec.get("volumes", []) if v["name"] == "nvidia-driver"), None)
    mount = next((m for m in container.get("volumeMounts", []) if m["name"] == "nvidia-driver"), None)
    spec["volumes"] = [v for v in spec.get("volumes", []) if v["name"] != "nvidia-driver"]
    container["volumeMounts"] = [m for m in container.get("volumeMounts", []) if m["name"] != "nvidia-driver"]
    annotations = meta.get("annotations", {})
    devices = [d["path"] for d in yaml.safe_load(annotations.pop(DEVICE_KEY, "[]"))]
    if not annotations:
        meta.pop("annotations", None)
    return template, volume, mount, devices


def check_platforms(helm_bin, tmp):
    """Renders the chart once per platform and checks each render against
    what that platform documents (PLATFORMS), and that none grants more
    than generic beyond its one driver hostPath."""
    search = nvml_search_dirs()
    check(len(search) >= 4 and "/usr/local/nvidia/lib64" in search,
          f"the NVML search path is read from src/nvml/library.rs DRIVER_DIRS: {search}")
    paths = []
    pods = {}
    for platform in PLATFORMS:
        text, pods[platform] = platform_pod(helm_bin, platform)
        path = os.path.join(tmp, f"rendered-platform-{platform}.yaml")
        with open(path, "w") as f:
            f.write(text)
        paths.append(path)
    base, _, _, _ = split_grants(pods["generic"])
    for platform, doc in PLATFORMS.items():
        template = pods[platform]
        pod = template["spec"]
        terms = affinity_terms(pod)
        check(terms == set(doc["labels"]),
              f"{platform}: node affinity is an OR of the labels {platform} documents"
              + ("" if terms == set(doc["labels"]) else f": {terms}"))
        # generic: every platform's nodes that carry a label (checked below).
        own = [(labels, taints) for p, labels, taints in GPU_NODES if p == platform or platform == "generic" and p != "oke"]
        check(own and all(lands_on(pod, labels, taints) for labels, taints in own),
              f"{platform}: lands on " + ("the GPU nodes of GKE, EKS, AKS and the GPU Operator, without choosing a platform"
                                         if platform == "generic" else f"{platform}'s GPU nodes (labels and taints as documented)"))
        wrong = [name for name, labels in NON_GPU_NODES if lands_on(pod, labels)]
        check(not wrong, f"{platform}: never lands on a node without an NVIDIA GPU"
              + ("" if not wrong else f": {wrong}"))
        check(all(tolerated(pod.get("tolerations"), t) for t in doc["taints"]),
              f"{platform}: tolerates the GPU-node taints {platform} documents")
        check(pod.get("runtimeClassName") == doc["runtime_class"],
              f"{platform}: runtimeClassName is {doc['runtime_class'] or 'unset'}")
        rest, volume, mount, devices = split_grants(template)
        if platform != "generic":
            same = rest == base
            check(same, f"{platform}: grants nothing generic does not (security contexts, volumes, env, resources,"
                  " host namespaces) beyond its driver hostPath")
            if not same:
                print(yaml.safe_dump(rest), "--- differs from generic ---\n", yaml.safe_dump(base))
        if doc["driver"]:
            host, container = doc["driver"]
            under = [d for d in search if d == container or d.startswith(container + "/")]
            check(volume is not None and mount is not None
                  and volume["hostPath"] == {"path": host, "type": "Directory"}
                  and mount["mountPath"] == container and mount.get("readOnly") is True
                  and set(volume) == {"name", "hostPath"} and set(mount) == {"name", "mountPath", "readOnly"}
                  and under,
                  f"{platform}: mounts the driver's {host} read-only at {container}, over the NVML search path {under}")
        else:
            check(volume is None and mount is None, f"{platform}: mounts no driver directory (the NVIDIA runtime injects NVML)")
        hosts = [v["hostPath"]["path"] for v in template["spec"].get("volumes", []) if "hostPath" in v]
        check(sorted(hosts) == sorted(["/var/lib/kubelet/pod-resources"] + ([doc["driver"][0]] if doc["driver"] else [])),
              f"{platform}: hostPaths are the pod-resources directory"
              + (" and the driver directory" if doc["driver"] else "") + " only")
        expected = ["/dev/nvidiactl"] + [f"/dev/nvidia{i}" for i in range(GKE_GPUS)] if platform == "gke" else []
        check(devices == expected,
              f"{platform}: " + (f"the device injector gives only the GPU device nodes (nvidiactl, nvidia0..{GKE_GPUS - 1})"
                                 if expected else "asks no device injector for devices"))

    # Failures, each saying why.
    known = sorted(PLATFORMS)
    for flags, where in [([], "schema"), (["--skip-schema-validation"], "template")]:
        refused = subprocess.run([helm_bin, "template", "x", CHART, "--set", "platform=openshift", *flags],
                                 capture_output=True, text=True)
        check(refused.returncode != 0 and all(f"{p}" in refused.stderr for p in known),
              f"an unknown platform fails the install ({where}), listing the known ones")
    refused = subprocess.run([helm_bin, "template", "x", CHART, "--set", "platform=gke"], capture_output=True, text=True)
    check(refused.returncode != 0 and "gke.gpusPerNode" in refused.stderr,
          "platform=gke without gke.gpusPerNode fails, saying why")
    refused = subprocess.run([helm_bin, "template", "x", CHART, "--set", "platform=gke", "--set", "gke.gpusPerNode=1",
                              "--set", "driverMount.mountPath=/usr/lib"], capture_output=True, text=True)
    allowed = re.search(r"use one of: (.*)$", refused.stderr, re.M)
    allowed = [a.strip() for a in allowed.group(1).split(",")] if allowed else []
    check(refused.returncode != 0 and allowed, "a driver mount over the image's own /usr/lib fails, listing where it may go")
    for mount_path in allowed:
        _, template = platform_pod(helm_bin, "gke", f"driverMount.mountPath={mount_path}")
        mount = next(m for m in template["spec"]["containers"][0]["volumeMounts"] if m["name"] == "nvidia-driver")
        under = [d for d in search if d == mount_path or d.startswith(mount_path + "/")]
        check(mount["readOnly"] and under, f"driverMount.mountPath={mount_path} is read-only and holds NVML search directories {under}")

    # Every piece overridable on its own: each override changes that piece only.
    _, gke = platform_pod(helm_bin, "gke")
    overrides = os.path.join(tmp, "platform-overrides.yaml")
    with open(overrides, "w") as f:
        yaml.safe_dump({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "cloud.google.com/gke-nodepool", "operator": "In",
                                                         "values": ["gpu-pool"]}]}]}}},
                        "tolerations": []}, f)

    def changed(a, b):
        return sorted({k for k in set(a["spec"]) | set(b["spec"]) if a["spec"].get(k) != b["spec"].get(k)}
                      | ({"annotations"} if a["metadata"].get("annotations") != b["metadata"].get("annotations") else set()))

    for sets, values, expect, what in [
        ([], overrides, ["affinity", "tolerations"], "affinity and tolerations (values file)"),
        (["runtimeClassName=nvidia"], None, ["runtimeClassName"], "runtimeClassName"),
        (["driverMount.hostPath=/opt/nvidia-driver"], None, ["volumes"], "driverMount.hostPath"),
        (["driverMount.mountPath=/usr/local/nvidia/lib64"], None, ["containers"], "driverMount.mountPath"),
        (["podResources.hostPath=/data/kubelet/pod-resources"], None, ["volumes"], "podResources.hostPath"),
        (["gke.deviceInjector=false"], None, ["annotations"], "gke.deviceInjector"),
    ]:
        _, template = platform_pod(helm_bin, "gke", *sets, values=values)
        diff = changed(gke, template)
        check(diff == expect, f"platform=gke with {what} overridden changes {', '.join(expect)} only"
              + ("" if diff == expect else f": {diff}"))
    _, none = platform_pod(helm_bin, "gpu-operator", "runtimeClassName=")
    check("runtimeClassName" not in none["spec"], "runtimeClassName=\"\" drops the platform's runtimeClassName")
    return paths


MONITOR_KINDS = ("PodMonitor", "ServiceMonitor")


def monitor_validator(crds_dir, models_dir):
    """A function from a list of monitor objects to a list of errors (None
    where valid), and what it validates against."""
    if crds_dir:
        schemas, versions = {}, set()
        for path in glob.glob(os.path.join(crds_dir, "*.yaml")):
            with open(path) as f:
                crd = yaml.safe_load(f)
            if crd.get("kind") != "CustomResourceDefinition" or crd["spec"]["names"]["kind"] not in MONITOR_KINDS:
                continue
            versions.add(crd["metadata"].get("annotations", {}).get("operator.prometheus.io/version", "?"))
            for version in crd["spec"]["versions"]:
                if version["name"] == "v1":
                    schemas[crd["spec"]["names"]["kind"]] = strict(version["schema"]["openAPIV3Schema"])
        if set(schemas) != set(MONITOR_KINDS):
            sys.exit(f"{crds_dir} lacks the PodMonitor and ServiceMonitor CRDs (found {sorted(schemas)})")

        def validate(objects):
            errors = []
            for obj in objects:
                try:
                    jsonschema.validate(obj, schemas[obj["kind"]])
                    errors.append(None)
                except jsonschema.ValidationError as e:
                    errors.append(f"{'/'.join(map(str, e.absolute_path))}: {e.message}")
            return errors
        return validate, f"prometheus-operator {', '.join(sorted(versions))} CRD schemas (strict)"
    with open(os.path.join(models_dir, "node_modules", "@kubernetes-models", "prometheus-operator",
                           "package.json")) as f:
        models_version = json.load(f)["version"]
    script = (
        'import { readFileSync } from "node:fs";'
        'import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";'
        'import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";'
        'const kinds = { PodMonitor, ServiceMonitor };'
        'const objects = JSON.parse(readFileSync(0, "utf8"));'
        'console.log(JSON.stringify(objects.map((o) => {'
        '  try { new kinds[o.kind](o).validate(); return null; } catch (e) { return e.message; }'
        '})));'
    )

    def validate(objects):
        result = subprocess.run(["node", "--input-type=module", "-e", script], cwd=models_dir,
                                input=json.dumps(objects), capture_output=True, text=True, check=True)
        return json.loads(result.stdout)
    return validate, f"@kubernetes-models/prometheus-operator {models_version} schemas"


def check_monitors(helm_bin, tmp, validate, against):
    """The optional PodMonitor / ServiceMonitor: valid, and selecting the
    scaler pods' metrics port. Returns the rendered files for the
    Kubernetes-schema check (monitors left out: they are not built in)."""
    paths = []
    for kind, flag in [("PodMonitor", "podMonitor"), ("ServiceMonitor", "serviceMonitor")]:
        text = helm(["template", "keda-gpu-scaler", CHART, "--namespace", "keda",
                     "--set", f"metrics.{flag}.enabled=true",
                     "--set", f"metrics.{flag}.labels.release=kube-prometheus-stack"], helm_bin)
        objects = load_all(text)
        monitor = next(o for o in objects if o["kind"] == kind)
        errors = validate([monitor])
        check(errors == [None], f"chart's {kind} validates against {against}"
              + ("" if errors == [None] else f": {errors[0]}"))
        broken = copy.deepcopy(monitor)
        endpoints = broken["spec"]["podMetricsEndpoints" if kind == "PodMonitor" else "endpoints"]
        endpoints[0]["interval"] = "every minute"
        check(validate([broken])[0] is not None, f"a {kind} with a malformed interval fails the same validation")
        pod = next(o for o in objects if o["kind"] == "DaemonSet")["spec"]["template"]
        pod_labels = pod["metadata"]["labels"]
        ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
        endpoint = monitor["spec"]["podMetricsEndpoints" if kind == "PodMonitor" else "endpoints"][0]
        selector = monitor["spec"]["selector"]["matchLabels"]
        if kind == "PodMonitor":
            selects = selector.items() <= pod_labels.items() and endpoint["port"] in ports
        else:
            services = [o for o in objects if o["kind"] == "Service" and selector.items() <= o["metadata"]["labels"].items()]
            selects = (len(services) == 1 and services[0]["spec"]["selector"].items() <= pod_labels.items()
                       and services[0]["spec"].get("clusterIP") == "None"
                       and any(p["name"] == endpoint["port"] and p["targetPort"] in ports
                               for p in services[0]["spec"]["ports"]))
        check(selects and monitor["metadata"]["labels"].get("release") == "kube-prometheus-stack"
              and endpoint["path"] == "/metrics",
              f"chart's {kind} selects every scaler pod's metrics port and carries the selector labels")
        path = os.path.join(tmp, f"rendered-{flag}.yaml")
        with open(path, "w") as f:
            yaml.safe_dump_all([o for o in objects if o["kind"] not in MONITOR_KINDS], f)
        paths.append(path)
    for sets, why in [(["metrics.podMonitor.enabled=true", "metrics.serviceMonitor.enabled=true"], "both true"),
                      (["metrics.podMonitor.enabled=true", "metrics.enabled=false"], "needs metrics.enabled=true")]:
        args = [helm_bin, "template", "x", CHART]
        for s in sets:
            args += ["--set", s]
        refused = subprocess.run(args, capture_output=True, text=True)
        check(refused.returncode != 0 and why in refused.stderr, f"chart refuses {' '.join(sets)}, saying why")
    return paths


def check_kubernetes_schemas(paths):
    result = subprocess.run(["kubernetes-validate", "--strict", "--quiet", *paths],
                            capture_output=True, text=True)
    check(result.returncode == 0, "manifests validate against Kubernetes schemas: "
          + ", ".join(os.path.basename(p) for p in paths))
    if result.returncode != 0:
        print(result.stdout, result.stderr)


def strict(schema):
    """CRD schemas allow unknown fields (the API server prunes them); forbid
    them here so that a misspelt field fails the check."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def crd_schemas():
    if not os.path.isdir(KEDA_CRDS):
        sys.exit(f"KEDA's CRDs are expected in {os.path.normpath(KEDA_CRDS)} (shared/ beside the checkout)")
    schemas = {}
    for path in glob.glob(os.path.join(KEDA_CRDS, "*.yaml")):
        with open(path) as f:
            crd = yaml.safe_load(f)
        for version in crd["spec"]["versions"]:
            if version["name"] == "v1alpha1":
                schemas[crd["spec"]["names"]["kind"]] = strict(version["schema"]["openAPIV3Schema"])
    return schemas


def external_triggers():
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy", "examples", "*.yaml"))):
        with open(path) as f:
            for obj in load_all(f.read()):
                if obj["kind"] != "ScaledObject":
                    continue
                for trigger in obj["spec"]["triggers"]:
                    if trigger["type"] in ("external", "external-push"):
                        if "workload" in trigger["metadata"]:
                            target = obj["spec"]["scaleTargetRef"]["name"]
                            check(trigger["metadata"]["workload"] == target,
                                  f"{os.path.basename(path)}: workload is the scale target {target}")
                        yield os.path.basename(path), trigger, obj["metadata"].get("namespace", "default")


def engine_of(meta):
    return meta.get("engine") or PROFILE_ENGINES.get(meta.get("profile"))


def metric_family(meta):
    """The family an engineMetric names, less its label matchers."""
    return meta.get("engineMetric", "").split("{")[0].strip()


def counter_metric(meta):
    """An engineMetric naming a counter (Prometheus text names its samples
    and, from prometheus_client, its family ..._total): read as its
    per-second rate over engineWindow, a workload rate."""
    return metric_family(meta).endswith("_total")


def windowed(meta):
    """Read over engineWindow: a rate needs a second read of the page."""
    return (meta.get("metricType") in LATENCY_METRICS | RATE_METRICS or counter_metric(meta)
            or "engineWindow" in meta or "percentile" in meta)


def reads_outside(trigger):
    """A demand-side trigger: another scaler's (a request queue, a gateway),
    or this scaler's on a page of no engine (a router's or gateway's
    /metrics), which counts demand while the workload has no replica."""
    if trigger["type"] not in ("external", "external-push"):
        return True
    meta = trigger["metadata"]
    return "engineMetric" in meta and engine_of(meta) is None


def reads_own_engine(trigger):
    """This scaler's trigger on the workload's own engine: nothing to read
    at zero replicas."""
    meta = trigger["metadata"]
    return (trigger["type"] in ("external", "external-push") and "engineEndpoints" in meta
            and engine_of(meta) is not None)


def only_spec(objects):
    return objects[0]["spec"] if len(objects) == 1 else {"triggers": []}


def shows_slo_ttft(objects):
    spec = only_spec(objects)
    latency = [t for t in spec["triggers"] if t["metadata"].get("metricType") == "ttft_seconds"]
    queue = [t for t in spec["triggers"] if t["metadata"].get("profile") == "vllm-queue"]
    if len(latency) != 1 or len(queue) != 1:
        return False
    meta = latency[0]["metadata"]
    return (spec.get("minReplicaCount", 0) >= 1 and latency[0].get("metricType") == "Value"
            and meta.get("engine") == "vllm" and meta.get("percentile") == "0.9"
            and meta.get("engineWindow") == "60s" and meta.get("targetValue") == "0.5"
            and meta.get("engineEndpoints") == queue[0]["metadata"].get("engineEndpoints"))


def shows_generation_tokens(objects):
    rate = [t for t in only_spec(objects)["triggers"]
            if t["metadata"].get("metricType") == "generation_tokens_rate"]
    return (len(rate) == 1 and engine_of(rate[0]["metadata"]) == "sglang"
            and rate[0].get("metricType") == "AverageValue"
            and rate[0]["metadata"].get("targetValue") == "2500")


def shows_wake_from_router(objects):
    spec = only_spec(objects)
    counter = [t for t in spec["triggers"]
               if metric_family(t["metadata"]) == "vllm:num_incoming_requests_total"]
    return (spec.get("minReplicaCount") == 0 and len(counter) == 1
            and counter[0].get("metricType") == "AverageValue"
            and counter[0]["metadata"].get("activationThreshold") == "0"
            and reads_outside(counter[0]))


# What some examples are there to show; each must go on showing it.
EXAMPLE_PURPOSES = {
    "vllm-slo-ttft.yaml": ("a p90 TTFT SLO of 0.5 s over 60 s (metricType Value) beside the vllm-queue "
                           "profile on the same endpoints, from 1 replica", shows_slo_ttft),
    "sglang-generation-tokens.yaml": ("SGLang's generated tokens per second (generation_tokens_rate), "
                                      "AverageValue, 2500 per replica", shows_generation_tokens),
    "wake-from-router.yaml": ("a wake from zero (minReplicaCount 0, activationThreshold 0) on "
                              "production-stack's router request counter, AverageValue",
                              shows_wake_from_router),
}


def check_examples(schemas, tmp):
    others = []
    headless = {}
    scaled = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy", "examples", "*.yaml"))):
        name = os.path.basename(path)
        with open(path) as f:
            text = f.read()
        check(re.search(r"^# Behaviour: ", text, re.M) is not None, f"{name} states its behaviour")
        for obj in load_all(text):
            if obj["kind"] == "ScaledObject":
                scaled.setdefault(name, []).append(obj)
            if obj["kind"] not in schemas:
                others.append(obj)
                if obj["kind"] == "Service" and obj["spec"].get("clusterIP") == "None":
                    ns = obj["metadata"]["namespace"]
                    host = f"{obj['metadata']['name']}.{ns}.svc.cluster.local"
                    headless[(name, host)] = [p["port"] for p in obj["spec"]["ports"]]
                continue
            try:
                jsonschema.validate(obj, schemas[obj["kind"]])
                check(True, f"{name}: {obj['kind']} {obj['metadata']['name']} matches KEDA's CRD")
            except jsonschema.ValidationError as e:
                check(False, f"{name}: {obj['kind']} {obj['metadata']['name']}: {e.message}")
    if others:
        path = os.path.join(tmp, "example-objects.yaml")
        with open(path, "w") as f:
            yaml.safe_dump_all(others, f)
        check_kubernetes_schemas([path])
    for name, trigger, _ in external_triggers():
        meta = trigger["metadata"]
        metric = meta.get("metricType") or PROFILE_METRICS.get(meta.get("profile"), "gpu_utilization")
        if "engineMetric" in meta:
            metric = meta["engineMetric"]
        if "targetGpuUtilization" in meta:
            metric = "gpu_utilization"
        if "targetMemoryUtilization" in meta:
            metric = "memory_used_percent"
        if metric in PERCENT_METRICS:
            check(trigger.get("metricType") == "Value", f"{name}: percent metric {metric} uses metricType Value")
        if metric in ("queue_length", "running_requests"):
            check(trigger.get("metricType", "AverageValue") == "AverageValue",
                  f"{name}: the summed {metric} uses metricType AverageValue (a target per replica)")
        if metric in LATENCY_METRICS or "percentile" in meta:
            check(trigger.get("metricType") == "Value",
                  f"{name}: the latency {metric} uses metricType Value (compared as is with the SLO)")
        if metric in RATE_METRICS or counter_metric(meta):
            check(trigger.get("metricType", "AverageValue") == "AverageValue",
                  f"{name}: the workload rate {metric} uses metricType AverageValue (a rate per replica)")
        if "engineEndpoints" in meta:
            for entry in meta["engineEndpoints"].split(","):
                host, _, port = entry.strip().removeprefix("http://").split("/")[0].partition(":")
                ports = headless.get((name, host))
                port = port or ENGINE_PORTS.get(engine_of(meta))
                check(ports is not None and port is not None and int(port) in ports,
                      f"{name}: engine endpoint {entry.strip()} is a port of a headless Service in the example")
        check(meta.get("scalerAddress") == "keda-gpu-scaler.keda.svc.cluster.local:6000",
              f"{name}: scalerAddress is the Service's address")
        if not reads_outside(trigger):
            # A router's page is not the workload's: without a selector, no
            # router pod reads as an error rather than as a workload at zero.
            check("workload" in meta or "podNamePattern" in meta, f"{name}: the trigger selects its workload")
    for name, objects in sorted(scaled.items()):
        for obj in objects:
            triggers = obj["spec"]["triggers"]
            if any(reads_own_engine(t) for t in triggers):
                check(obj["spec"].get("minReplicaCount", 0) >= 1 or any(reads_outside(t) for t in triggers),
                      f"{name}: {obj['metadata']['name']} reads its own engine, which says nothing at zero "
                      "replicas: minReplicaCount 1 or a demand-side trigger beside it")
    for name, (purpose, shows) in EXAMPLE_PURPOSES.items():
        check(name in scaled and shows(scaled[name]), f"{name} shows {purpose}")


def start_fake_engine(fake_engine, engine, model, tmp):
    state = os.path.join(tmp, f"engine-{engine}")
    with open(state, "w") as f:
        # rate/ttft_now: counters and histograms advance as a serving
        # engine's do, so rates and latencies read a value (a fake whose
        # counters stand still while requests wait reads as stuck).
        f.write(f"waiting=6 running=3 kv=0.5 model={model} rate=20 ttft_now=0.2")
    process = subprocess.Popen([fake_engine, "--engine", FAKE_ENGINE_KINDS[engine], "--state", state,
                                "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    address = process.stdout.readline().strip().removeprefix("listening on ")
    return process, address


def router_page(meta):
    """vLLM production-stack's router /metrics as prometheus_client writes it
    (src/vllm_router/services/metrics_service/__init__.py): per-backend
    gauges and the request counter by model, which rises by 3 a scrape for
    the model the trigger matches and by 1 for another model."""
    found = re.search(r'model="([^"]*)"', meta.get("engineMetric", ""))
    model = found.group(1) if found else "llm"
    help_text = "Total valid incoming requests to router (including when no backends available)."
    server = 'server="http://10.0.3.7:8000"'

    def page(scrapes):
        lines = ["# HELP python_info Python platform information", "# TYPE python_info gauge",
                 'python_info{implementation="CPython",major="3",minor="12",patchlevel="11",version="3.12.11"} 1.0']
        for family, text, value in (("vllm:num_requests_running", "Number of running requests", 3.0),
                                    ("vllm:num_requests_waiting", "Number of waiting requests", 0.0),
                                    ("vllm:current_qps", "Current Queries Per Second", 2.5),
                                    ("vllm:healthy_pods_total", "Number of healthy vLLM pods", 1.0)):
            lines += [f"# HELP {family} {text}", f"# TYPE {family} gauge", f"{family}{{{server}}} {value}"]
        counts = {model: 120.0 + 3 * scrapes, "other-model": 40.0 + scrapes}
        lines += [f"# HELP vllm:num_incoming_requests_total {help_text}",
                  "# TYPE vllm:num_incoming_requests_total counter"]
        lines += [f'vllm:num_incoming_requests_total{{model="{m}"}} {v}' for m, v in counts.items()]
        lines += [f"# HELP vllm:num_incoming_requests_created {help_text}",
                  "# TYPE vllm:num_incoming_requests_created gauge"]
        lines += [f'vllm:num_incoming_requests_created{{model="{m}"}} 1.7537953269353123e+09' for m in counts]
        return "\n".join(lines) + "\n"
    return page


# Pages of no engine (engineMetric without engine), by the family read.
FAKE_PAGES = {"vllm:num_incoming_requests_total": ("production-stack router", router_page)}


class FakePage(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.server.scrapes += 1
        found = self.path == "/metrics"
        body = (self.server.page(self.server.scrapes) if found else "not found\n").encode()
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def fake_endpoint(fake_engine, meta, tmp):
    """(what it fakes, its address) for the trigger's endpoints: a fake
    engine of the trigger's kind, or a page of no engine served here, by the
    family read (None when there is none for it)."""
    engine = engine_of(meta)
    if engine is not None:
        process, address = start_fake_engine(fake_engine, engine, meta.get("engineModel", "llm"), tmp)
        try:
            yield engine, address
        finally:
            process.terminate()
            process.wait(timeout=10)
        return
    what, page = FAKE_PAGES.get(metric_family(meta), (None, None))
    if page is None:
        yield f"page with {metric_family(meta) or 'no engineMetric'}", None
        return
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakePage)
    server.page, server.scrapes = page(meta), 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield what, f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def check_metadata_accepted(binary, fake_nvml, fake_engine, tmp):
    scenario = os.path.join(tmp, "scenario")
    with open(scenario, "w") as f:
        for i in range(4):
            f.write(f"gpu {i} util=50 mem_total_mib=81920 mem_used_mib=40960 temp=50 power_mw=300000\n")
    env = dict(os.environ, NVML_LIBRARY_PATH=fake_nvml, FAKE_NVML_SCENARIO=scenario, RUST_LOG="info")
    # A lab scaler reads the fake engines on loopback (by IP address); a
    # strict one, with the default endpoint policy, takes the metadata as
    # written, from the ScaledObject's namespace.
    servers = []
    ports = []
    try:
        for label, flags in (("lab", ["--engine-allow-cidrs", "127.0.0.0/8", "--engine-any-namespace"]),
                             ("strict", [])):
            log_path = os.path.join(tmp, f"serve-{label}.log")
            with open(log_path, "w") as log:
                servers.append(subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0"] + flags,
                                                env=env, stderr=log))
            port = None
            deadline = time.time() + 20
            while port is None and time.time() < deadline:
                with open(log_path) as f:
                    found = re.search(r"ExternalScaler on 127\.0\.0\.1:(\d+)", f.read())
                port = found and found.group(1)
                time.sleep(0.1)
            ports.append(port)
        port, strict_port = ports
        check(port is not None, "scaler started on the fake NVML")
        selector_keys = {"workload", "podNamePattern", "podNamespace"}
        check(strict_port is not None, "strict scaler started on the fake NVML")
        for name, trigger, namespace in external_triggers():
            meta = trigger["metadata"]
            if "engineEndpoints" in meta:
                # The endpoints pointed at a fake engine of the trigger's
                # kind, or at a fake page of what it reads (a router's).
                with fake_endpoint(fake_engine, meta, tmp) as (what, address):
                    read = None
                    if address is not None:
                        local = dict(meta, engineEndpoints=address)
                        read = query(binary, port, {k: v for k, v in local.items() if k not in selector_keys},
                                     first_reads=windowed(meta))
                check(read is not None and read.returncode == 0 and "value " in read.stdout,
                      f"{name}: the engine trigger reads a value from a fake {what}"
                      + ("" if read is None or read.returncode == 0 else ": " + read.stderr.strip()))
            else:
                # Node-wide (no pod selector): the fake GPUs give a value.
                node_wide = query(binary, port, {k: v for k, v in meta.items() if k not in selector_keys})
                check(node_wide.returncode == 0, f"{name}: the {trigger['type']} metadata gives a value node-wide"
                      + ("" if node_wide.returncode == 0 else ": " + node_wide.stderr.strip()))
            # As written: accepted; without a kubelet or cluster DNS here,
            # attribution is unavailable or the Service name unknown.
            full = query(binary, strict_port, meta, namespace)
            accepted = full.returncode == 0 or ("INVALID_ARGUMENT" not in full.stderr
                                                and ("pod attribution is unavailable" in full.stderr
                                                     or "unknown to DNS" in full.stderr
                                                     or "DNS lookup failed" in full.stderr
                                                     or "cannot resolve" in full.stderr))
            check(accepted, f"{name}: the scaler accepts the metadata as written"
                  + ("" if accepted else ": " + full.stderr.strip()))
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)


def query(binary, port, metadata, namespace="default", first_reads=False):
    """`first_reads`: a trigger read over engineWindow, whose first answers
    may fail until the scaler has read the page twice (a rate needs two
    counts): retried for longer, on any failure but rejected metadata."""
    args = [binary, "query", "--address", f"127.0.0.1:{port}", "--namespace", namespace]
    for k, v in metadata.items():
        args += ["--metadata", f"{k}={v}"]
    result = None
    for _ in range(200 if first_reads else 50):  # until the first sample (or second read) is in
        result = subprocess.run(args, capture_output=True, text=True)
        if result.returncode == 0:
            break
        starting = "have not been read yet" in result.stderr
        if not starting and not (first_reads and "INVALID_ARGUMENT" not in result.stderr):
            break
        time.sleep(0.1)
    return result


def check_dockerfile(release_binary):
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        lines = f.read()
    instructions = [l for l in re.sub(r"\\\n", " ", lines).splitlines() if l.strip() and not l.lstrip().startswith("#")]
    known = {"FROM", "RUN", "COPY", "WORKDIR", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "ENV", "ARG", "LABEL"}
    words = [l.split()[0].upper() for l in instructions]
    check(all(w in known for w in words), "Dockerfile parses: " + " ".join(words))
    froms = [l.split()[1] for l in instructions if l.upper().startswith("FROM ")]
    check(len(froms) >= 2 and all("@sha256:" in f or re.search(r":\d+\.\d+\.\d+", f) for f in froms),
          "Dockerfile base images are pinned by digest or exact version: " + ", ".join(froms))
    check(froms[-1].startswith("gcr.io/distroless/") and ":nonroot@" in froms[-1],
          "final stage is distroless nonroot")
    check("USER 65532:65532" in instructions, "runs as UID 65532")
    check("EXPOSE 6000" in instructions, "exposes the gRPC port")
    entry = re.search(r'^ENTRYPOINT \["([^"]+)"\]', "\n".join(instructions), re.M)
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        bin_name = re.search(r'\[\[bin\]\]\s*name = "([^"]+)"', f.read()).group(1)
    check(entry is not None and os.path.basename(entry.group(1)) == bin_name,
          f"ENTRYPOINT runs the {bin_name} binary")
    copied = re.search(r"^COPY --from=builder \S+ (\S+)$", "\n".join(instructions), re.M)
    check(copied is not None and entry is not None and copied.group(1) == entry.group(1),
          "the binary is copied where ENTRYPOINT looks")
    hadolint = shutil.which("hadolint")
    if hadolint:
        result = subprocess.run([hadolint, os.path.join(ROOT, "Dockerfile")], capture_output=True, text=True)
        check(result.returncode == 0, "hadolint passes" + ("" if result.returncode == 0 else ": " + result.stdout))
    else:
        print("skip  hadolint is not installed")
    dynamic = subprocess.run(["readelf", "-d", release_binary], check=True, capture_output=True, text=True).stdout
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic))
    check(needed and needed <= GLIBC, f"release binary needs only glibc: {sorted(needed)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--helm", required=True)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--release-binary", required=True)
    parser.add_argument("--fake-nvml", required=True)
    parser.add_argument("--fake-engine", required=True)
    monitors = parser.add_mutually_exclusive_group(required=True)
    monitors.add_argument("--monitor-models", help="a folder where npm installed @kubernetes-models/prometheus-operator")
    monitors.add_argument("--monitor-crds", help="a folder holding prometheus-operator's PodMonitor and ServiceMonitor CRDs")
    args = parser.parse_args()
    validate, against = monitor_validator(args.monitor_crds, args.monitor_models)
    with tempfile.TemporaryDirectory() as tmp:
        rendered = check_chart(args.helm, tmp)
        rendered += check_platforms(args.helm, tmp)
        rendered += check_monitors(args.helm, tmp, validate, against)
        check_kubernetes_schemas([MANIFESTS, *rendered])
        check_examples(crd_schemas(), tmp)
        check_metadata_accepted(args.binary, args.fake_nvml, args.fake_engine, tmp)
        check_dockerfile(args.release_binary)
    print(f"deployment checks: {len(passes)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
