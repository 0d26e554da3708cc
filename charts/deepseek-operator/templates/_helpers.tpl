{{/* Names and labels shared by every template. */}}

{{- define "deepseek-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or the release name alone when it already contains the chart name. */}}
{{- define "deepseek-operator.fullname" -}}
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

{{- define "deepseek-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "deepseek-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "deepseek-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "deepseek-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: deepseek-training-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "deepseek-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "deepseek-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Leader election is on with more than one replica (two leaders would race) or when asked. */}}
{{- define "deepseek-operator.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicas) 1) }}true{{ else }}false{{ end }}
{{- end }}

{{- define "deepseek-operator.leaseName" -}}
{{- default (include "deepseek-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "deepseek-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
What the operator does to the jobs it manages and their children (operator/dstj_operator/cluster.py,
reconcile.py, handlers.py), and no more. No wildcards. tests/unit/test_chart.py derives the needs
from the child builders and fails when a rule is missing here.
*/}}
{{- define "deepseek-operator.rules" -}}
# Watch jobs (kopf) and read each one fresh before a reconcile pass.
- apiGroups: [training.deepseek.dev]
  resources: [deepseektrainingjobs]
  verbs: [get, list, watch, delete]  # delete: ttlSecondsAfterFinished
- apiGroups: [training.deepseek.dev]
  resources: [deepseektrainingjobs/status]
  verbs: [patch]
# Children carry blockOwnerDeletion; clusters with OwnerReferencesPermissionEnforcement demand this.
- apiGroups: [training.deepseek.dev]
  resources: [deepseektrainingjobs/finalizers]
  verbs: [update]
# Worker and rendezvous pods: watched, created, replaced.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, create, delete]
# Trainer config and progress ConfigMaps: the config is applied (patch); the per-job worker Role grants
# update/patch on the progress ConfigMap, and RBAC lets nobody grant more than it holds.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update, patch]
# Children: applied (server-side apply creates, updates, takes back hand edits; what apply cannot undo is
# replaced with update) and watched by label, so one edited or deleted by hand heals in the next pass.
# PVCs are only created (immutable once bound).
- apiGroups: [""]
  resources: [services, serviceaccounts]
  verbs: [get, list, watch, create, patch, update]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, list, watch, create]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create, patch, update]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, update]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, update]
# Events on jobs (the operator's and kopf's); listed to find TriggeredScaleUp events of unschedulable workers
# (spec.autoscaling keeps the pods a cluster autoscaler is adding a node for).
- apiGroups: [""]
  resources: [events]
  verbs: [create, list]
# spec.autoscaling: an HPA on a job whose operator chooses the size itself is refused with a condition.
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list]
{{- end }}
