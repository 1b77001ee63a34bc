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

{{/* The service image: repository:tag, tag defaulting to APPVERSION-TARGET. */}}
{{- define "zantara.image" -}}
{{- $tag := .Values.image.tag | default (printf "%s-%s" .Chart.AppVersion .Values.image.target) }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/* The migration Job's image: migrations.image, else the service image. */}}
{{- define "zantara.migrationImage" -}}
{{- $repository := .Values.migrations.image.repository | default .Values.image.repository }}
{{- $tag := .Values.migrations.image.tag | default .Values.image.tag | default (printf "%s-%s" .Chart.AppVersion .Values.image.target) }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}

{{/* The Secret holding tokens, API keys and the database URL. */}}
{{- define "zantara.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "zantara.fullname" .) }}
{{- end }}

{{/* "true" when the pods share an external database (a URL in values, or a Secret that has one). */}}
{{- define "zantara.externalDatabase" -}}
{{- if or .Values.secrets.existingSecret .Values.secrets.databaseUrl }}true{{ end }}
{{- end }}

{{/* "true" when migrations run as the hook Job (and so not at service start). */}}
{{- define "zantara.migrationJob" -}}
{{- if and .Values.migrations.enabled (eq (include "zantara.externalDatabase" .) "true") }}true{{ end }}
{{- end }}

{{/* The claim of the adapters volume, when it is a PVC. */}}
{{- define "zantara.adaptersClaim" -}}
{{- .Values.adapters.persistence.existingClaim | default (printf "%s-adapters" (include "zantara.fullname" .)) }}
{{- end }}

{{/* Secret-backed environment, shared by the service and the migration Job. */}}
{{- define "zantara.databaseEnv" -}}
- name: ZANTARA_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "zantara.secretName" . }}
      key: database-url
      optional: {{ ne (include "zantara.migrationJob" .) "true" }}
{{- end }}

{{/* Labels that select the service pods (and never the migration Job's pod). */}}
{{- define "zantara.serverSelectorLabels" -}}
{{ include "zantara.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}
