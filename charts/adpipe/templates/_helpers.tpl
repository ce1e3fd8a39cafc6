{{/*
Shared names, labels and image references of the adpipe chart.
*/}}

{{/* The chart name, as the `app.kubernetes.io/name` label. */}}
{{- define "adpipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: the release name, plus the chart name unless the release
name already contains it. Truncated to 63 characters (the DNS label limit) minus room for
suffixes such as "-metrics".
*/}}
{{- define "adpipe.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* `helm.sh/chart` label value. */}}
{{- define "adpipe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object of the chart. */}}
{{- define "adpipe.labels" -}}
helm.sh/chart: {{ include "adpipe.chart" . }}
app.kubernetes.io/name: {{ include "adpipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: adpipe
{{- end }}

{{/*
Labels that select the operator pods. The component keeps them apart from the receivers and
deliverers the operator creates, which share `app.kubernetes.io/name` and may share the
instance name.
*/}}
{{- define "adpipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "adpipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels of the operator's objects: the common ones plus the component. */}}
{{- define "adpipe.operatorLabels" -}}
{{ include "adpipe.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "adpipe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "adpipe.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}: the digest wins, the tag defaults to the
chart's appVersion. Call with (dict "image" .Values.images.x "context" $).
*/}}
{{- define "adpipe.image" -}}
{{- $image := .image }}
{{- $repository := required "every image needs a repository" $image.repository }}
{{- if $image.digest }}
{{- printf "%s@%s" $repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .context.Chart.AppVersion $image.tag | toString) }}
{{- end }}
{{- end }}

{{/* Annotations of the operator's ServiceAccount: `serviceAccount.annotations` plus `aws.roleArn`. */}}
{{- define "adpipe.serviceAccountAnnotations" -}}
{{- $annotations := deepCopy (default dict .Values.serviceAccount.annotations) }}
{{- with .Values.aws.roleArn }}
{{- $_ := set $annotations "eks.amazonaws.com/role-arn" . }}
{{- end }}
{{- with $annotations }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/*
Annotations of every pipeline's ServiceAccount, as YAML: `workloads.serviceAccountAnnotations`
plus `workloads.roleArn`.
*/}}
{{- define "adpipe.workloadAnnotations" -}}
{{- $annotations := deepCopy (default dict .Values.workloads.serviceAccountAnnotations) }}
{{- with .Values.workloads.roleArn }}
{{- $_ := set $annotations "eks.amazonaws.com/role-arn" . }}
{{- end }}
{{- with $annotations }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of one alert: its severity plus `prometheusRule.additionalAlertLabels`.
Call with (dict "severity" "warning" "context" $).
*/}}
{{- define "adpipe.alertLabels" -}}
severity: {{ .severity }}
{{- with .context.Values.prometheusRule.additionalAlertLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}
