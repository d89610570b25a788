{{/* Names, labels and the pieces every workload shares. */}}

{{- define "tributary.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tributary.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* <fullname>-<service> with underscores made DNS-safe; call with (list $ "snapshot") */}}
{{- define "tributary.serviceName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "tributary.fullname" $root) (replace "_" "-" (index . 1)) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tributary.labels" -}}
app.kubernetes.io/name: {{ include "tributary.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "tributary.extraLabels" . }}
{{- end -}}

{{/* the labels that are not selector labels */}}
{{- define "tributary.extraLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tributary
{{- end -}}

{{/* selector labels of one service; call with (list $ "snapshot") */}}
{{- define "tributary.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "tributary.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ replace "_" "-" (index . 1) }}
{{- end -}}

{{- define "tributary.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tributary.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tributary.secretName" -}}
{{- default (printf "%s-secrets" (include "tributary.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* image of one service; call with (list $ "snapshot" $svc) */}}
{{- define "tributary.image" -}}
{{- $root := index . 0 -}}
{{- $svc := index . 2 -}}
{{- $tag := $svc.image.tag | default $root.Values.global.image.tag | default $root.Chart.AppVersion -}}
{{- if $root.Values.global.image.registry -}}
{{- printf "%s/%s:%s" $root.Values.global.image.registry $svc.image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" $svc.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* the container environment of one service; call with (list $ "snapshot" $svc) */}}
{{- define "tributary.env" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $svc := index . 2 -}}
{{- $secret := include "tributary.secretName" $root -}}
- name: HTTP_PORT
  value: {{ $svc.service.port | quote }}
- name: HTTP_HOST
  value: {{ $root.Values.api.host | quote }}
- name: HTTP_DOCS
  value: {{ $root.Values.api.docs | quote }}
{{- if $root.Values.api.metricsPort }}
- name: METRICS_PORT
  value: {{ $root.Values.api.metricsPort | quote }}
{{- end }}
- name: API_TOKENS
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: API_TOKENS, optional: true}
{{- with $root.Values.api.oidc }}
{{- if .issuer }}
- name: OIDC_ISSUER
  value: {{ .issuer | quote }}
- name: OIDC_AUDIENCE
  value: {{ .audience | quote }}
{{- if .jwksUrl }}
- name: OIDC_JWKS_URL
  value: {{ .jwksUrl | quote }}
{{- end }}
{{- end }}
{{- end }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: REDIS_URL, optional: true}
{{- with $root.Values.redis }}
{{- if eq .mode "sentinel" }}
- name: REDIS_SENTINELS
  value: {{ join "," .sentinels | quote }}
- name: REDIS_SENTINEL_MASTER
  value: {{ .sentinelMaster | quote }}
- name: REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: REDIS_SENTINEL_PASSWORD, optional: true}
{{- end }}
{{- end }}
{{- /* each service's own Redis ACL user (docs/security.md), when the Secret has one */}}
- name: REDIS_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ printf "%s_REDIS_USERNAME" (upper $name) }}, optional: true}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ printf "%s_REDIS_PASSWORD" (upper $name) }}, optional: true}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ ternary "TRAFFIC_SYNC_DATABASE_URL" "DATABASE_URL" (eq $name "traffic_sync") }}, optional: true}
{{- range $var := $svc.secretEnv }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $var }}, optional: true}
{{- end }}
{{- if $root.Values.otel.enabled }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $root.Values.otel.endpoint | quote }}
{{- end }}
{{- with $root.Values.egress }}
- name: EGRESS_ALLOW_NETWORKS
  value: {{ join "," (.allowNetworks | default list) | quote }}
- name: EGRESS_ALLOW_HOSTS
  value: {{ join "," (.allowHosts | default list) | quote }}
{{- with .maxResponseBytes }}
- name: EGRESS_MAX_RESPONSE_BYTES
  value: {{ . | int64 | toString | quote }}
{{- end }}
{{- end }}
{{- range $key, $value := $root.Values.global.env }}
{{- if not (hasKey $svc.env $key) }}
- name: {{ $key }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- range $key, $value := $svc.env }}
- name: {{ $key }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with $svc.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}


{{/* The (stream, consumer group) pairs each service consumes, as YAML: service -> streams
(the group is the service's name). Checked against the services' runners by
tests/deploy/test_helm.py; traffic_sync and aggregation consume no stream. */}}
{{- define "tributary.consumedStreams" -}}
snapshot: [outline.collect]
gmail_fetch: [gmail.jobs]
alert: [device.readings, traffic.flushed, usage.aggregated, usage.anomalies, usage.forecasts]
{{- end -}}

{{/* does a KEDA ScaledObject scale this service? call with $svc */}}
{{- define "tributary.kedaEnabled" -}}
{{- if and .enabled (dig "keda" "enabled" false .) }}true{{ end -}}
{{- end -}}
