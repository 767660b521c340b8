{{/* Labels shared by every object; the selector uses the same two. */}}
{{- define "keda-gpu-scaler.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The extra label of the AMD DaemonSet's pods (its selector's own). */}}
{{- define "keda-gpu-scaler.amdLabel" -}}
keda-gpu-scaler.io/gpu-vendor: amd
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
