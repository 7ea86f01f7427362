{{/* Names are truncated to 63 characters: they become DNS labels and label values. */}}
{{- define "modelpilot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelpilot.fullname" -}}
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

{{- define "modelpilot.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "modelpilot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelpilot
{{- end -}}

{{- define "modelpilot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelpilot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "modelpilot.monitorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "modelpilot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: monitor
{{- end -}}

{{- define "modelpilot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modelpilot.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository[:tag][@digest]; the digest pins the image when given. */}}
{{- define "modelpilot.imageRef" -}}
{{- $img := index . 0 -}}
{{- $chart := index . 1 -}}
{{- $ref := printf "%s:%s" $img.repository (default $chart.AppVersion $img.tag) -}}
{{- if $img.digest -}}{{- $ref = printf "%s@%s" $img.repository $img.digest -}}{{- end -}}
{{- $ref -}}
{{- end -}}

{{- define "modelpilot.image" -}}
{{- include "modelpilot.imageRef" (list .Values.image .Chart) -}}
{{- end -}}

{{- define "modelpilot.monitorImage" -}}
{{- $m := .Values.monitor.image -}}
{{- if $m.repository -}}
{{- include "modelpilot.imageRef" (list $m .Chart) -}}
{{- else -}}
{{- include "modelpilot.image" . -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the operator watches, as a JSON list ([] = all namespaces). */}}
{{- define "modelpilot.watchNamespaces" -}}
{{- if not (has .Values.rbac.scope (list "cluster" "namespace")) -}}
{{- fail (printf "rbac.scope must be cluster or namespace, not %q" .Values.rbac.scope) -}}
{{- end -}}
{{- if .Values.watchNamespaces -}}
{{- .Values.watchNamespaces | uniq | toJson -}}
{{- else if eq .Values.rbac.scope "namespace" -}}
{{- list .Release.Namespace | toJson -}}
{{- else -}}
[]
{{- end -}}
{{- end -}}

{{/* "true" when the replicas peer (several replicas, or forced); "" for a standalone operator. */}}
{{- define "modelpilot.peering" -}}
{{- if or .Values.peering.enabled (gt (int .Values.replicaCount) 1) -}}true{{- end -}}
{{- end -}}

{{/* The ClusterRole that lets namespace monitors review tokens ("modelpilot-monitor-tokenreview" for
the release "modelpilot", as modelpilot.controller.rbac names it). */}}
{{- define "modelpilot.tokenReviewRole" -}}
{{- printf "%s-monitor-tokenreview" (include "modelpilot.fullname" .) -}}
{{- end -}}
