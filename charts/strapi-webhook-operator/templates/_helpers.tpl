{{/* Chart name, overridable. */}}
{{- define "swo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Prefix of every object name: the release name, plus the chart name when the release name does not
already contain it. Truncated so that "-controller-metrics" still fits in 63 characters.
*/}}
{{- define "swo.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 44 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 44 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 44 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "swo.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "swo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: strapi-webhook-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Selector labels of one component; call with (dict "ctx" $ "component" "controller"). They never
change between chart versions, because a Deployment's selector is immutable.
*/}}
{{- define "swo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "swo.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component's objects; same argument as swo.selectorLabels. */}}
{{- define "swo.componentLabels" -}}
{{ include "swo.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The ServiceAccount name of one component; same argument as swo.selectorLabels. */}}
{{- define "swo.serviceAccountName" -}}
{{- $values := index .ctx.Values .component -}}
{{- default (printf "%s-%s" (include "swo.fullname" .ctx) .component) $values.serviceAccount.name -}}
{{- end -}}

{{/* The image reference; a digest pins it tighter than a tag. */}}
{{- define "swo.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The receiver Service's in-cluster name. */}}
{{- define "swo.receiverService" -}}
{{- printf "%s-receiver" (include "swo.fullname" .) -}}
{{- end -}}

{{/* The URL Strapi is told to call: the receiver Service's ingest port unless overridden. */}}
{{- define "swo.receiverUrl" -}}
{{- default (printf "http://%s.%s.svc:%v" (include "swo.receiverService" .) .Release.Namespace .Values.receiver.service.ingestPort) .Values.controller.receiverUrl -}}
{{- end -}}

{{/* The Secret holding the admin API token (key `token`). */}}
{{- define "swo.adminTokenSecret" -}}
{{- default (printf "%s-admin-token" (include "swo.fullname" .)) .Values.adminToken.existingSecret -}}
{{- end -}}
