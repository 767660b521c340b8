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
