#!/usr/bin/env bash
# The scaler doing its job on a machine without a GPU: it serves two
# simulated GPUs from the fake NVML library and shows, with `query`, what
# KEDA sees and what the HPA would do as the load changes and a GPU fails;
# then three fake vLLM replicas whose queue grows and one of which stops
# answering, read by an engine trigger.
# Installs cmake (needed to build gRPC's C core) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v c++ >/dev/null || missing+=(g++)
if ((${#missing[@]})); then
    echo "== installing ${missing[*]} (needed to build gRPC's C core)"
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "== building (the first build compiles gRPC and BoringSSL: about 6-10 minutes on 2 cores)"
cargo build --quiet
cargo build --quiet -p fake-nvml -p fake-amdsmi -p fake-engine
bin=target/debug/keda-gpu-scaler
work=$(mktemp -d)
export NVML_LIBRARY_PATH=$PWD/target/debug/libfake_nvml.so
export FAKE_NVML_SCENARIO=$work/scenario

scenario() { # util0 util1 [extra lines]
    cat > "$work/next" <<SCENARIO
driver 550.54.15
gpu 0 uuid=GPU-5e2c8a3b-0000-4000-8000-000000000000 name="Simulated H100" util=$1 mem_util=$(( $1 / 2 )) mem_total_mib=81559 mem_used_mib=73400 temp=$(( 35 + $1 / 3 )) power_mw=$(( 70000 + $1 * 6000 ))
gpu 1 uuid=GPU-9d41f07e-0000-4000-8000-000000000001 name="Simulated H100" util=$2 mem_util=$(( $2 / 2 )) mem_total_mib=81559 mem_used_mib=73400 temp=$(( 35 + $2 / 3 )) power_mw=$(( 70000 + $2 * 6000 ))
${3:-}
SCENARIO
    mv "$work/next" "$FAKE_NVML_SCENARIO"
}

scenario 95 70
# The replicas below listen on loopback, which a cluster's scaler refuses:
# a lab allows it, and IP addresses as endpoints, with two flags.
"$bin" serve --listen 127.0.0.1:0 --sample-interval 250ms \
    --engine-allow-cidrs 127.0.0.0/8 --engine-any-namespace 2> "$work/serve.log" &
server=$!
engines=()
trap 'kill -CONT ${engines[@]+"${engines[@]}"} 2>/dev/null || true; kill $server ${engines[@]+"${engines[@]}"} 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    port=$(sed -n 's/.*serving externalscaler.ExternalScaler on 127.0.0.1:\([0-9]*\).*/\1/p' "$work/serve.log")
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "${port:-}" ] || { cat "$work/serve.log"; exit 1; }
query() { "$bin" query --address "127.0.0.1:$port" --metadata profile=vllm-inference --replicas 3 "$@"; }
# Runs a query (the rest of the arguments) until its output, errors included,
# has a line matching PATTERN, so that no narration is printed against the
# values of an earlier scenario. Gives up after 30 s, showing the last answer.
wait_for() { # PATTERN command...
    local pattern=$1 out deadline=$((SECONDS + 30))
    shift
    while :; do
        out=$("$@" 2>&1) || true
        grep -q -- "$pattern" <<< "$out" && return 0
        if ((SECONDS >= deadline)); then
            printf 'demo: no line matching %s within 30 s from: %s\n%s\n' "$pattern" "$*" "$out" >&2
            exit 1
        fi
        sleep 0.1
    done
}
wait_for '^value  *95\.00 ' query

echo; echo "== what NVML reports on this node (simulated GPUs): keda-gpu-scaler devices"
"$bin" devices
echo; echo "== busy: 3 replicas, hottest GPU at 95% (profile vllm-inference: gpu_utilization, target 80)"
query
echo "   -> with trigger metricType: Value the HPA goes from 3 to 4 replicas."

scenario 2 1; wait_for '^value  *2\.00 ' query
echo; echo "== idle: 2% is below the profile's activation threshold of 5"
query
echo "   -> inactive: KEDA scales the deployment to zero (minReplicaCount: 0)."

scenario 60 50 "fail 1 * GPU_IS_LOST"; wait_for '^value  *60\.00 ' query
echo; echo "== GPU 1 falls off the bus: it is excluded, GPU 0 still counts"
query
scenario 60 50 "fail 0 * GPU_IS_LOST
fail 1 * GPU_IS_LOST"; wait_for 'UNAVAILABLE: no healthy GPU' query
echo; echo "== every GPU lost: an error, never a 0, so KEDA applies the ScaledObject's fallback"
query || echo "   -> query exited $? as KEDA would see an error"

echo; echo "== vLLM's own queue: three fake vLLM replicas on loopback (pages shaped like vLLM's /metrics)"
endpoints=()
for i in 0 1 2; do
    echo "waiting=1 running=4 kv=0.3" > "$work/vllm-$i"
    target/debug/fake-engine --engine vllm --state "$work/vllm-$i" --listen 127.0.0.1:0 > "$work/vllm-$i.out" &
    engines+=($!)
done
for i in 0 1 2; do
    for _ in $(seq 100); do
        address=$(sed -n 's/^listening on //p' "$work/vllm-$i.out")
        [ -n "$address" ] && break
        sleep 0.1
    done
    endpoints+=("$address")
done
list=$(IFS=,; echo "${endpoints[*]}")
# In a cluster: engineEndpoints=<headless Service>, which resolves to every ready pod.
engine_query() { "$bin" query --address "127.0.0.1:$port" --metadata profile=vllm-queue \
    --metadata "engineEndpoints=$list" --metadata engineTimeout=200ms --replicas 3 "$@"; }
wait_for '^value  *3\.00 ' engine_query
engine_query --explain
echo "   -> 3 waiting in all, 5 per replica wanted: AverageValue asks for ceil(3 / 5) = 1 replica."

for i in 0 1 2; do echo "waiting=12 running=8 kv=0.9" > "$work/vllm-$i"; done
wait_for '^value  *36\.00 ' engine_query
echo; echo "== the queue grows to 12 per replica (GPU utilization would read ~100% all along)"
engine_query
echo "   -> 36 waiting: ceil(36 / 5) = 8 replicas."

kill -STOP "${engines[2]}"; wait_for 'counted as its last read' engine_query --explain
echo; echo "== one replica stops answering (SIGSTOP): it counts as what it last said, not 0"
engine_query --explain
echo "   -> read under 30 s ago, the silent replica counts as its last read (12): still 36, still 8 replicas."
echo "      (a replica never read, or silent longer, counts by the HPA's rule for pods without metrics)"
kill -CONT "${engines[2]}"

echo; echo "== a latency SLO: p90 time to first token of every replica's requests merged, over a 10 s window"
# rate=20: each replica finishes 20 requests a second; ttft_now: their time to first token.
for i in 0 1 2; do echo "waiting=1 running=4 kv=0.3 rate=20 ttft_now=0.2" > "$work/vllm-$i"; done
slo_query() { "$bin" query --address "127.0.0.1:$port" --metadata engine=vllm \
    --metadata metricType=ttft_seconds --metadata percentile=0.9 --metadata engineWindow=10s \
    --metadata targetValue=0.5 --metadata "engineEndpoints=$list" --metadata engineTimeout=200ms \
    --replicas 3 "$@"; }
wait_for '^value  *0\.2' slo_query
slo_query
echo "   -> p90 about 0.24 s against an SLO of 0.5 s. Latencies are compared as they are (KEDA metricType"
echo "      Value): ceil(3 x 0.24 / 0.5) = 2 replicas; pair it with vllm-queue, KEDA takes the larger."

for i in 0 1 2; do echo "waiting=30 running=8 kv=0.95 rate=20 ttft_now=1.2" > "$work/vllm-$i"; done
wait_for '^value  *[1-9]' slo_query
echo; echo "== under load the first tokens slow to 1.2 s: the merged p90 crosses the SLO"
slo_query --explain
echo "   -> each replica's reads in the window, the merged buckets around the answer, and"
echo "      ceil(3 x p90 / 0.5) replicas. Until two reads exist a rate or latency is UNAVAILABLE, never 0."

echo; echo "== an AMD node: the same binary reads AMD SMI (a simulated MI300X, through the fake libamd_smi)"
cat > "$work/amd" <<SCENARIO
version 26.1.0
driver 6.10.5
gpu 0 uuid=00ff74a1-0000-1000-80f8-3d5f2c4e9a00 bdf=0000:19:00.0 name="Simulated MI300X" gfx=96 umc=40 vram_total_mib=196592 vram_used_mib=176932 hotspot=71 current_w=640
SCENARIO
export FAKE_AMDSMI_SCENARIO=$work/amd
"$bin" devices --gpu-backend amd --amd-smi-library target/debug/libfake_amdsmi.so
"$bin" serve --listen 127.0.0.1:0 --sample-interval 250ms --gpu-backend amd \
    --amd-smi-library target/debug/libfake_amdsmi.so 2> "$work/amd.log" &
amd_server=$!
engines+=("$amd_server")
for _ in $(seq 100); do
    amd_port=$(sed -n 's/.*serving externalscaler.ExternalScaler on 127.0.0.1:\([0-9]*\).*/\1/p' "$work/amd.log")
    [ -n "$amd_port" ] && break
    sleep 0.1
done
[ -n "${amd_port:-}" ] || { cat "$work/amd.log"; exit 1; }
amd_query() { "$bin" query --address "127.0.0.1:$amd_port" --metadata profile=vllm-inference --replicas 3; }
wait_for '^value  *96\.00 ' amd_query
amd_query
echo "   -> the same profile on gfx_activity: 96% against 80, so ceil(3 x 96 / 80) = 4 replicas (metricType: Value). NVIDIA-only"
echo "      metrics (sm_activity, NVLink) are n/a on AMD, with the reason, never 0."

echo; echo "== SIGTERM: graceful shutdown"
kill -TERM "$server"; wait "$server" && echo "server exited 0"
echo; echo "== server log"; cat "$work/serve.log"
