{{/*
Names, labels and checks shared by the trellis chart's templates.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "trellis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: fullnameOverride, or <release>-<chart> unless the release name already holds the chart name. */}}
{{- define "trellis.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "trellis.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the hosts' pods (never change them on an installed release). */}}
{{- define "trellis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trellis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: host
{{- end -}}

{{- define "trellis.labels" -}}
helm.sh/chart: {{ include "trellis.chart" . }}
{{ include "trellis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trellis
{{- end -}}

{{- define "trellis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "trellis.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Pod annotations: Prometheus scraping of the metrics port, then podAnnotations. */}}
{{- define "trellis.podAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.ports.metrics | quote }}
prometheus.io/path: /metrics
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "trellis.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* host.labels as TRELLIS_LABELS wants them: k=v,k2=v2 (keys sorted). */}}
{{- define "trellis.labelList" -}}
{{- $pairs := list -}}
{{- range $key, $value := .Values.host.labels -}}
{{- $pairs = append $pairs (printf "%s=%v" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/* OTEL_RESOURCE_ATTRIBUTES: the pod's identity (from variables defined before it in env) plus otel.resourceAttributes. */}}
{{- define "trellis.otelResourceAttributes" -}}
{{- $attrs := list (printf "k8s.namespace.name=%s" .Release.Namespace) "k8s.pod.name=$(TRELLIS_HOST_NAME)" "k8s.node.name=$(TRELLIS_LABEL_NODE)" -}}
{{- with .Values.otel.resourceAttributes -}}
{{- $attrs = append $attrs . -}}
{{- end -}}
{{- join "," $attrs -}}
{{- end -}}

{{/* terminationGracePeriodSeconds, refused unless it leaves room for the drain. */}}
{{- define "trellis.terminationGracePeriod" -}}
{{- $grace := int .Values.terminationGracePeriodSeconds -}}
{{- $needed := add (int .Values.host.drainTimeout) 7 -}}
{{- if le $grace (int $needed) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be larger than host.drainTimeout + 7 (%d): the host needs the drain timeout, up to 5 s to stop its providers and up to 2 s to leave" $grace (int $needed)) -}}
{{- end -}}
{{- $grace -}}
{{- end -}}

{{/* Refuses values the templates cannot honour. Renders nothing. */}}
{{- define "trellis.validate" -}}
{{- if not (has .Values.mode (list "daemonset" "deployment")) -}}
{{- fail (printf "mode must be daemonset or deployment, not %q" .Values.mode) -}}
{{- end -}}
{{- if and .Values.nats.tls.mutual (not .Values.nats.tls.secret) -}}
{{- fail "nats.tls.mutual needs nats.tls.secret (a Secret with ca.crt, tls.crt and tls.key)" -}}
{{- end -}}
{{- end -}}
