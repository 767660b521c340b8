{{/* Labels shared by every object; the selector uses the same two. */}}
{{- define "keda-gpu-scaler.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The extra label of the AMD DaemonSet's pods (its selector's own). */}}
{{- define "keda-gpu-scaler.amdLabel" -}}
keda-gpu-scaler.io/gpu-vendor: amd
{{- end }}

{{/* LD_LIBRARY_PATH of the AMD pods: ROCm's lib, then each extra host
directory where it is mounted (/host-lib/<i>). */}}
{{- define "keda-gpu-scaler.amdLibraryPath" -}}
{{- $rocm := trimSuffix "/" .Values.amd.rocmPath }}
{{- if or (eq $rocm "") (hasPrefix "/usr" $rocm) (hasPrefix "/lib" $rocm) (hasPrefix "/bin" $rocm) (hasPrefix "/etc" $rocm) }}
{{- fail (printf "amd.rocmPath=%q would be mounted over the image's own system directories; give ROCm's own directory (e.g. /opt/rocm), and put other host library directories in amd.libraryDirs" .Values.amd.rocmPath) }}
{{- end }}
{{- $dirs := list (printf "%s/lib" $rocm) }}
{{- range $i, $dir := .Values.amd.libraryDirs }}
{{- $dirs = append $dirs (printf "/host-lib/%d" $i) }}
{{- end }}
{{- join ":" $dirs }}
{{- end }}

{{- define "keda-gpu-scaler.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* The port the kubelet probes: the gRPC port, or the plaintext probe port under TLS. */}}
{{- define "keda-gpu-scaler.probePort" -}}
{{- if .Values.tls.secretName -}}
{{ .Values.tls.probePort }}
{{- else -}}
6000
{{- end -}}
{{- end }}

{{/* What each `platform` sets for the NVIDIA pods. README "Install on GKE"
(and EKS, AKS, OKE, "with the GPU Operator") gives each line's source.
- gpuNodeLabels: node labels that only NVIDIA GPU nodes carry; the pods'
  node affinity is their OR (one nodeSelectorTerm each).
- tolerations: the GPU-node taints the platform documents.
- runtimeClassName: "" where the NVIDIA runtime is the nodes' default, or
  where there is none (GKE).
- driverHostPath/driverMountPath: the host's driver directory, mounted
  read-only where the scaler searches for libnvidia-ml.so.1; "" where the
  NVIDIA runtime injects the library instead.
- podResourcesHostPath: <kubelet root>/pod-resources.
- deviceInjector: the GPU device nodes come from Google's NRI device
  injector (pod annotation devices.gke.io/container.<name>), because GKE has
  no NVIDIA runtime to inject them for a pod that requests no GPU. */}}
{{- define "keda-gpu-scaler.platforms" -}}
generic:
  gpuNodeLabels:
    - {key: nvidia.com/gpu.present, operator: In, values: ["true"]}
    - {key: feature.node.kubernetes.io/pci-10de.present, operator: In, values: ["true"]}
    - {key: cloud.google.com/gke-accelerator, operator: Exists}
    - {key: karpenter.k8s.aws/instance-gpu-manufacturer, operator: In, values: [nvidia]}
    - {key: eks.amazonaws.com/instance-gpu-manufacturer, operator: In, values: [nvidia]}
    - {key: kubernetes.azure.com/accelerator, operator: In, values: [nvidia]}
  tolerations:
    - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
    - {key: sku, operator: Equal, value: gpu, effect: NoSchedule}
  runtimeClassName: ""
  driverHostPath: ""
  driverMountPath: ""
  podResourcesHostPath: /var/lib/kubelet/pod-resources
  deviceInjector: false
gpu-operator:
  gpuNodeLabels:
    - {key: nvidia.com/gpu.present, operator: In, values: ["true"]}
  tolerations:
    - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
  runtimeClassName: nvidia
  driverHostPath: ""
  driverMountPath: ""
  podResourcesHostPath: /var/lib/kubelet/pod-resources
  deviceInjector: false
gke:
  gpuNodeLabels:
    - {key: cloud.google.com/gke-accelerator, operator: Exists}
  tolerations:
    - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
  runtimeClassName: ""
  driverHostPath: /home/kubernetes/bin/nvidia
  driverMountPath: /usr/local/nvidia
  podResourcesHostPath: /var/lib/kubelet/pod-resources
  deviceInjector: true
eks:
  gpuNodeLabels:
    - {key: nvidia.com/gpu.present, operator: In, values: ["true"]}
    - {key: karpenter.k8s.aws/instance-gpu-manufacturer, operator: In, values: [nvidia]}
    - {key: eks.amazonaws.com/instance-gpu-manufacturer, operator: In, values: [nvidia]}
  tolerations:
    - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
  runtimeClassName: ""
  driverHostPath: ""
  driverMountPath: ""
  podResourcesHostPath: /var/lib/kubelet/pod-resources
  deviceInjector: false
aks:
  gpuNodeLabels:
    - {key: kubernetes.azure.com/accelerator, operator: In, values: [nvidia]}
  tolerations:
    - {key: sku, operator: Equal, value: gpu, effect: NoSchedule}
    - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
  runtimeClassName: ""
  driverHostPath: ""
  driverMountPath: ""
  podResourcesHostPath: /var/lib/kubelet/pod-resources
  deviceInjector: false
oke:
  gpuNodeLabels:
    - {key: nvidia.com/gpu.present, operator: In, values: ["true"]}
    - {key: feature.node.kubernetes.io/pci-10de.present, operator: In, values: ["true"]}
    - key: node.kubernetes.io/instance-type
      operator: In
      values:
        - VM.GPU.A10.1
        - VM.GPU.A10.2
        - BM.GPU.A10.4
        - BM.GPU.L40S.4
        - BM.GPU4.8
        - BM.GPU.A100-v2.8
        - BM.GPU.H100.8
        - BM.GPU.H200.8
        - BM.GPU.B4.8
        - BM.GPU.B200.8
        - BM.GPU.B300.8
        - BM.GPU.GB200.4
        - BM.GPU.GB200-v2.4
        - BM.GPU.GB200-v3.4
        - BM.GPU.GB300.4
        - BM.GPU.RTXPRO.8
  tolerations:
    - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
  runtimeClassName: ""
  driverHostPath: ""
  driverMountPath: ""
  podResourcesHostPath: /var/lib/kubelet/pod-resources
  deviceInjector: false
{{- end }}

{{/* Where the driver directory may be mounted in the container: each holds
(or is) a directory the scaler searches for libnvidia-ml.so.1
(src/nvml/library.rs DRIVER_DIRS), and none is one of the image's own
system directories. */}}
{{- define "keda-gpu-scaler.driverMountPaths" -}}
/usr/local/nvidia /usr/local/nvidia/lib64 /usr/local/nvidia/lib /run/nvidia/driver
{{- end }}

{{/* The NVIDIA pods' settings: the platform's, each replaced by its value
when set (null: the platform's). Returned as YAML, for fromYaml. */}}
{{- define "keda-gpu-scaler.placement" -}}
{{- $platforms := include "keda-gpu-scaler.platforms" . | fromYaml }}
{{- $name := .Values.platform | default "generic" | toString }}
{{- if not (hasKey $platforms $name) }}
{{- fail (printf "platform=%q is not a platform this chart knows; use one of: %s (see the README's \"Install on …\" sections)" $name (keys $platforms | sortAlpha | join ", ")) }}
{{- end }}
{{- $p := index $platforms $name }}
{{- $affinity := .Values.affinity }}
{{- if kindIs "invalid" $affinity }}
{{- $terms := list }}
{{- range $p.gpuNodeLabels }}
{{- $terms = append $terms (dict "matchExpressions" (list .)) }}
{{- end }}
{{- $affinity = dict "nodeAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (dict "nodeSelectorTerms" $terms)) }}
{{- end }}
{{- $tolerations := .Values.tolerations }}
{{- if kindIs "invalid" $tolerations }}
{{- $tolerations = $p.tolerations }}
{{- end }}
{{- $runtimeClass := .Values.runtimeClassName }}
{{- if kindIs "invalid" $runtimeClass }}
{{- $runtimeClass = $p.runtimeClassName }}
{{- end }}
{{- $driver := .Values.driverMount | default dict }}
{{- $hostPath := $driver.hostPath }}
{{- if kindIs "invalid" $hostPath }}
{{- $hostPath = $p.driverHostPath }}
{{- end }}
{{- $mountPath := $driver.mountPath }}
{{- if kindIs "invalid" $mountPath }}
{{- $mountPath = $p.driverMountPath }}
{{- end }}
{{- if ne (empty $hostPath) (empty $mountPath) }}
{{- fail (printf "driverMount needs both hostPath and mountPath, or neither (platform=%s gives hostPath=%q, mountPath=%q)" $name $hostPath $mountPath) }}
{{- end }}
{{- $allowed := splitList " " (include "keda-gpu-scaler.driverMountPaths" .) }}
{{- if and $mountPath (not (has (trimSuffix "/" $mountPath) $allowed)) }}
{{- fail (printf "driverMount.mountPath=%q is not where the scaler looks for libnvidia-ml.so.1; use one of: %s" $mountPath (join ", " $allowed)) }}
{{- end }}
{{- $podResources := .Values.podResources.hostPath | default $p.podResourcesHostPath }}
{{- $injector := .Values.gke.deviceInjector }}
{{- if kindIs "invalid" $injector }}
{{- $injector = $p.deviceInjector }}
{{- end }}
{{- $devices := list }}
{{- if $injector }}
{{- $gpus := int .Values.gke.gpusPerNode }}
{{- if lt $gpus 1 }}
{{- fail (printf "platform=%s gives the scaler its GPU device nodes through Google's NRI device injector, which needs gke.gpusPerNode: the GPUs on each node (every /dev/nvidiaN listed must exist, or the pod is not created). One release per GPU count, or gke.deviceInjector=false if the device nodes reach the pod another way; see the README's \"Install on GKE\"" $name) }}
{{- end }}
{{- $devices = append $devices "/dev/nvidiactl" }}
{{- range $i := until $gpus }}
{{- $devices = append $devices (printf "/dev/nvidia%d" $i) }}
{{- end }}
{{- end }}
platform: {{ $name }}
affinity: {{ toJson $affinity }}
tolerations: {{ toJson $tolerations }}
runtimeClassName: {{ $runtimeClass | toString | quote }}
driverHostPath: {{ $hostPath | toString | quote }}
driverMountPath: {{ trimSuffix "/" ($mountPath | toString) | quote }}
podResourcesHostPath: {{ $podResources | quote }}
devices: {{ toJson $devices }}
{{- end }}
