{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "zantara.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: RELEASE-zantara, or the release name when it already contains it. */}}
{{- define "zantara.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "zantara.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "zantara.selectorLabels" -}}
app.kubernetes.io/name: {{ include "zantara.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "zantara.labels" -}}
helm.sh/chart: {{ include "zantara.chart" . }}
{{ include "zantara.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: zantara
{{- end }}

{{/* Selector of the GPU engine pods (never the router, Job or CronJob pods). */}}
{{- define "zantara.engineSelectorLabels" -}}
{{ include "zantara.selectorLabels" . }}
app.kubernetes.io/component: engine
{{- end }}

{{/* Selector of the CPU router pods. */}}
{{- define "zantara.routerSelectorLabels" -}}
{{ include "zantara.selectorLabels" . }}
app.kubernetes.io/component: router
{{- end }}

{{/* The engine tier's Service name (the router's upstream). */}}
{{- define "zantara.engineName" -}}
{{- printf "%s-engine" (include "zantara.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The router tier's Service name. */}}
{{- define "zantara.routerName" -}}
{{- printf "%s-router" (include "zantara.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Service the backend chat and the retrain job call: the router when enabled, else the engine. */}}
{{- define "zantara.entryName" -}}
{{- if .Values.router.enabled }}{{ include "zantara.routerName" . }}{{ else }}{{ include "zantara.engineName" . }}{{ end }}
{{- end }}

{{/* Image of one Dockerfile target: `include "zantara.image" (list $ "gpu-serve")`. */}}
{{- define "zantara.image" -}}
{{- $root := index . 0 }}
{{- $tag := $root.Values.image.tag | default $root.Chart.AppVersion }}
{{- printf "%s:%s-%s" $root.Values.image.repository $tag (index . 1) }}
{{- end }}

{{/* The Secret holding tokens, API keys and the database URL. */}}
{{- define "zantara.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "zantara.fullname" .) }}
{{- end }}

{{/* The claim of the adapters volume. */}}
{{- define "zantara.adaptersClaim" -}}
{{- .Values.adapters.persistence.existingClaim | default (printf "%s-adapters" (include "zantara.fullname" .)) }}
{{- end }}

{{/* Refuse value combinations that deploy but cannot work (the schema says the same; this also
     covers `helm template --skip-schema-validation`). */}}
{{- define "zantara.validate" -}}
{{- if and (not .Values.secrets.existingSecret) (not .Values.secrets.databaseUrl) }}
{{- fail "set secrets.databaseUrl or secrets.existingSecret: every pod shares the rollout and ratings in one database" }}
{{- end }}
{{- if and (eq (index .Values.config "ZANTARA_ENVIRONMENT" | default "development") "production") (not .Values.openAccess) (not .Values.secrets.existingSecret) (not .Values.secrets.apiKeys) }}
{{- fail "production needs API keys on /v1: set secrets.apiKeys (the backend chat's keys), or openAccess: true to serve /v1 to anyone who can reach it" }}
{{- end }}
{{- if and .Values.router.enabled (not .Values.secrets.existingSecret) .Values.secrets.apiKeys (not (has .Values.secrets.upstreamApiKey .Values.secrets.apiKeys)) }}
{{- fail "router.enabled with secrets.apiKeys: secrets.upstreamApiKey must be one of them (the key the router sends to the engine pods)" }}
{{- end }}
{{- if eq .Values.adapters.persistence.accessMode "ReadWriteOnce" }}
{{- if ne .Values.engine.strategy.type "Recreate" }}
{{- fail "adapters.persistence.accessMode ReadWriteOnce needs engine.strategy.type Recreate: a surge pod on another node waits forever for the volume" }}
{{- end }}
{{- if gt (int .Values.engine.replicaCount) 1 }}
{{- fail "adapters.persistence.accessMode ReadWriteOnce allows one engine replica: use ReadWriteMany for more" }}
{{- end }}
{{- if .Values.retrain.enabled }}
{{- fail "adapters.persistence.accessMode ReadWriteOnce rules out the retrain CronJob: it writes the adapters volume from its own GPU node (use ReadWriteMany, or retrain.enabled false)" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod metadata annotations: the config checksum (a change rolls the pods), scraping. No hash of the
     secrets: anyone who may read pods could test guesses of them against it offline. After a change
     of a secret, `kubectl rollout restart` the deployments (NOTES.txt says so). */}}
{{- define "zantara.podAnnotations" -}}
checksum/config: {{ toJson .Values.config | sha256sum }}
{{- if .Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.containerPort | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* Environment shared by every zantara container: secrets and the ConfigMap's settings. */}}
{{- define "zantara.secretEnv" -}}
- name: ZANTARA_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "zantara.secretName" . }}
      key: database-url
- name: ZANTARA_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "zantara.secretName" . }}
      key: admin-token
- name: ZANTARA_USER_HASH_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "zantara.secretName" . }}
      key: user-hash-key
- name: ZANTARA_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "zantara.secretName" . }}
      key: api-keys
      {{- if .Values.openAccess }}
      optional: true
{{- end }}
{{- if .Values.openAccess }}
- name: ZANTARA_OPEN_ACCESS
  value: "true"
{{- end }}
{{- end }}

{{/* A tier's own settings (a map) as EnvVar entries, in key order. */}}
{{- define "zantara.envMap" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* The pod-level fields every zantara pod shares (none of them talks to the Kubernetes API). */}}
{{- define "zantara.podCommon" -}}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}
