# keda-gpu-scaler image: one binary on distroless, running as nonroot.
#
# The binary links libstdc++ and libgcc statically (see build.rs); at run time
# it needs glibc only, which distroless/cc has. gRPC's C core is built against
# Debian 12's glibc 2.36, so the builder and the base are both bookworm.
#
# NVML is not in the image: the NVIDIA container runtime injects
# libnvidia-ml.so.1 when the pod sets NVIDIA_VISIBLE_DEVICES=all and
# NVIDIA_DRIVER_CAPABILITIES=utility (see deploy/manifests.yaml).

FROM rust:1.95.0-bookworm AS builder
# cmake builds gRPC's C core and BoringSSL.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake=3.25.* \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin keda-gpu-scaler \
    && install -D -m 0755 target/release/keda-gpu-scaler /out/keda-gpu-scaler

# Refresh the digest with: crane digest gcr.io/distroless/cc-debian12:nonroot
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=builder /out/keda-gpu-scaler /usr/local/bin/keda-gpu-scaler
USER 65532:65532
EXPOSE 6000
# `serve` is the default command; flags can also come from KEDA_GPU_SCALER_* variables.
ENTRYPOINT ["/usr/local/bin/keda-gpu-scaler"]
