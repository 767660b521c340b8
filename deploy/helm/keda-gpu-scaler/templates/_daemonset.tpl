{{/* The scaler DaemonSet for one GPU vendor: called with a dict of the
root's Values, Release, Chart and Template, plus "vendor" ("nvidia" or
"amd"). Both flavours carry the same app labels, so one Service and one
peers Service reach every scaler pod: a mixed cluster is one cluster. */}}
{{- define "keda-gpu-scaler.daemonset" -}}
{{- $placement := include "keda-gpu-scaler.placement" . | fromYaml }}
{{- $devices := ternary $placement.devices list (eq .vendor "nvidia") }}
{{- $deviceKey := "devices.gke.io/container.keda-gpu-scaler" }}
{{- $injectDevices := and $devices (not (hasKey .Values.podAnnotations $deviceKey)) }}
{{- $driverMount := and (eq .vendor "nvidia") $placement.driverHostPath }}
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ .Release.Name }}{{ if eq .vendor "amd" }}-amd{{ end }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "keda-gpu-scaler.labels" . | nindent 4 }}
spec:
  selector:
    matchLabels:
      {{- include "keda-gpu-scaler.labels" . | nindent 6 }}
      {{- if eq .vendor "amd" }}
      {{- include "keda-gpu-scaler.amdLabel" . | nindent 6 }}
      {{- end }}
  # Replace pods one node at a time; the others keep answering KEDA.
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 1
  template:
    metadata:
      labels:
        {{- include "keda-gpu-scaler.labels" . | nindent 8 }}
        {{- if eq .vendor "amd" }}
        {{- include "keda-gpu-scaler.amdLabel" . | nindent 8 }}
        {{- end }}
        {{- with .Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- if or .Values.podAnnotations (and .Values.metrics.enabled .Values.metrics.annotations) $injectDevices }}
      annotations:
        {{- with .Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- if $injectDevices }}
        # GKE has no NVIDIA runtime to give a pod that requests no GPU its
        # device nodes: Google's NRI device injector adds these (the ones the
        # NVIDIA runtime gives NVIDIA_VISIBLE_DEVICES=all elsewhere).
        {{ $deviceKey }}: |
          {{- range $devices }}
          - path: {{ . }}
          {{- end }}
        {{- end }}
        {{- if and .Values.metrics.enabled .Values.metrics.annotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ .Values.metrics.port | quote }}
        prometheus.io/path: /metrics
        {{- end }}
      {{- end }}
    spec:
      serviceAccountName: {{ .Release.Name }}
      automountServiceAccountToken: false
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- $scheduling := ternary .Values.amd $placement (eq .vendor "amd") }}
      {{- with (ternary .Values.amd.nodeSelector .Values.nodeSelector (eq .vendor "amd")) }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $scheduling.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $scheduling.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if eq .vendor "nvidia" }}
      {{- with $placement.runtimeClassName }}
      runtimeClassName: {{ . }}
      {{- end }}
      {{- end }}
      {{- with .Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- if .Values.podResources.enabled }}
        # The kubelet's pod-resources socket is root's, mode 0755: connecting
        # needs UID 0. Every capability is dropped below, so root here cannot
        # override file permissions or do anything privileged.
        runAsNonRoot: false
        runAsUser: 0
        runAsGroup: 0
        {{- else }}
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        {{- end }}
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: keda-gpu-scaler
          image: {{ include "keda-gpu-scaler.image" . }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          args:
            - serve
            {{- range .Values.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          env:
            {{- if eq .vendor "nvidia" }}
            # The NVIDIA runtime injects libnvidia-ml.so.1 for these; no GPU
            # resource is requested, so no GPU is taken from workloads.
            - name: NVIDIA_VISIBLE_DEVICES
              value: all
            - name: NVIDIA_DRIVER_CAPABILITIES
              value: utility
            - name: KEDA_GPU_SCALER_GPU_BACKEND
              value: nvidia
            # The chart's platform, for the hint when NVML is not found.
            - name: KEDA_GPU_SCALER_PLATFORM
              value: {{ $placement.platform }}
            {{- else }}
            # AMD SMI from the host's ROCm (mounted below), its dependencies
            # found beside it; GPUs are read through sysfs, so no device
            # node and no GPU resource is needed.
            - name: KEDA_GPU_SCALER_GPU_BACKEND
              value: amd
            - name: LD_LIBRARY_PATH
              value: {{ include "keda-gpu-scaler.amdLibraryPath" . | quote }}
            {{- with .Values.amd.libraryPath }}
            - name: AMD_SMI_LIBRARY_PATH
              value: {{ . | quote }}
            {{- end }}
            {{- end }}
            - name: KEDA_GPU_SCALER_LISTEN
              value: "0.0.0.0:6000"
            - name: KEDA_GPU_SCALER_SAMPLE_INTERVAL
              value: {{ .Values.sampleInterval }}
            {{- if .Values.metrics.enabled }}
            - name: KEDA_GPU_SCALER_METRICS_LISTEN
              value: "0.0.0.0:{{ .Values.metrics.port }}"
            {{- end }}
            - name: RUST_LOG
              value: {{ .Values.logLevel }}
            # Which node this is, for the cluster view.
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
            {{- if .Values.peers.enabled }}
            - name: KEDA_GPU_SCALER_PEERS
              value: {{ .Release.Name }}-peers.{{ .Release.Namespace }}.svc.cluster.local:{{ .Values.service.port }}
            {{- with .Values.peers.timeout }}
            - name: KEDA_GPU_SCALER_PEER_TIMEOUT
              value: {{ . | quote }}
            {{- end }}
            {{- with .Values.peers.serverName }}
            - name: KEDA_GPU_SCALER_PEER_SERVER_NAME
              value: {{ . | quote }}
            {{- end }}
            {{- end }}
            {{- if .Values.podResources.enabled }}
            - name: KEDA_GPU_SCALER_POD_RESOURCES_SOCKET
              value: /var/lib/kubelet/pod-resources/kubelet.sock
            {{- with .Values.podResources.extraResourceNames }}
            - name: KEDA_GPU_SCALER_GPU_RESOURCE_NAMES
              value: {{ join "," . | quote }}
            {{- end }}
            {{- end }}
            {{- with .Values.engineEndpoints.allowCidrs }}
            - name: KEDA_GPU_SCALER_ENGINE_ALLOW_CIDRS
              value: {{ join "," . | quote }}
            {{- end }}
            {{- if .Values.engineEndpoints.anyNamespace }}
            - name: KEDA_GPU_SCALER_ENGINE_ANY_NAMESPACE
              value: "true"
            {{- end }}
            {{- if ne .Values.engineEndpoints.clusterDomain "cluster.local" }}
            - name: KEDA_GPU_SCALER_CLUSTER_DOMAIN
              value: {{ .Values.engineEndpoints.clusterDomain | quote }}
            {{- end }}
            {{- if .Values.tls.secretName }}
            - name: KEDA_GPU_SCALER_TLS_CERT
              value: /etc/keda-gpu-scaler/tls/tls.crt
            - name: KEDA_GPU_SCALER_TLS_KEY
              value: /etc/keda-gpu-scaler/tls/tls.key
            {{- if .Values.tls.requireClientCert }}
            - name: KEDA_GPU_SCALER_TLS_CLIENT_CA
              value: /etc/keda-gpu-scaler/tls/ca.crt
            {{- end }}
            - name: KEDA_GPU_SCALER_PROBE_LISTEN
              value: "0.0.0.0:{{ .Values.tls.probePort }}"
            {{- end }}
            {{- with .Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: grpc
              containerPort: 6000
              protocol: TCP
            {{- if .Values.metrics.enabled }}
            - name: metrics
              containerPort: {{ .Values.metrics.port }}
              protocol: TCP
            {{- end }}
            {{- if .Values.tls.secretName }}
            - name: probes
              containerPort: {{ .Values.tls.probePort }}
              protocol: TCP
            {{- end }}
          # Ready while the GPU library answers and readings are fresh (service "").
          readinessProbe:
            grpc:
              port: {{ include "keda-gpu-scaler.probePort" . }}
            periodSeconds: 5
            failureThreshold: 2
          # Alive while the process answers; a stuck GPU library only makes it unready.
          livenessProbe:
            grpc:
              port: {{ include "keda-gpu-scaler.probePort" . }}
              service: liveness
            periodSeconds: 10
            failureThreshold: 3
          resources:
            {{- toYaml .Values.resources | nindent 12 }}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            privileged: false
            capabilities:
              drop: ["ALL"]
          {{- if or .Values.tls.secretName .Values.podResources.enabled (eq .vendor "amd") $driverMount }}
          volumeMounts:
            {{- if $driverMount }}
            - name: nvidia-driver
              mountPath: {{ $placement.driverMountPath }}
              readOnly: true
            {{- end }}
            {{- if eq .vendor "amd" }}
            - name: rocm
              mountPath: {{ .Values.amd.rocmPath }}
              readOnly: true
            {{- range $i, $dir := .Values.amd.libraryDirs }}
            # Host {{ $dir }}, beside (never over) the image's own libraries.
            - name: amd-lib-{{ $i }}
              mountPath: /host-lib/{{ $i }}
              readOnly: true
            {{- end }}
            {{- end }}
            {{- if .Values.podResources.enabled }}
            - name: pod-resources
              mountPath: /var/lib/kubelet/pod-resources
              readOnly: true
            {{- end }}
            {{- if .Values.tls.secretName }}
            - name: tls
              mountPath: /etc/keda-gpu-scaler/tls
              readOnly: true
            {{- end }}
          {{- end }}
      {{- if or .Values.tls.secretName .Values.podResources.enabled (eq .vendor "amd") $driverMount }}
      volumes:
        {{- if $driverMount }}
        # The host's NVIDIA driver (libnvidia-ml.so.1 in its lib64/), which
        # no NVIDIA runtime injects on this platform; read-only.
        - name: nvidia-driver
          hostPath:
            path: {{ $placement.driverHostPath }}
            type: Directory
        {{- end }}
        {{- if eq .vendor "amd" }}
        # The host's ROCm install, read-only: libamd_smi.so and its libraries.
        - name: rocm
          hostPath:
            path: {{ .Values.amd.rocmPath }}
            type: Directory
        {{- range $i, $dir := .Values.amd.libraryDirs }}
        - name: amd-lib-{{ $i }}
          hostPath:
            path: {{ $dir }}
            type: Directory
        {{- end }}
        {{- end }}
        {{- if .Values.podResources.enabled }}
        # The directory, not the socket file: the kubelet recreates the
        # socket when it restarts, and a file mount would keep the old one.
        - name: pod-resources
          hostPath:
            path: {{ $placement.podResourcesHostPath }}
            type: Directory
        {{- end }}
        {{- if .Values.tls.secretName }}
        # Mounted as a directory (no subPath), so cert-manager rotations
        # reach the pod and the scaler reloads them.
        - name: tls
          secret:
            secretName: {{ .Values.tls.secretName }}
        {{- end }}
      {{- end }}
{{- end }}
