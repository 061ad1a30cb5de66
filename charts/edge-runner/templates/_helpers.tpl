{{/* vim: set filetype=mustache: */}}
{{/*
Named templates of the edge-runner chart. Every name starts with
"edge-runner." so that a parent chart's helpers never clash with these.
Object names are truncated to 63 characters (DNS-1123 labels, Service names).
*/}}

{{/*
The chart name (app.kubernetes.io/name).
*/}}
{{- define "edge-runner.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The fully qualified app name, the prefix of every object name. If the release
name already contains the chart name it is used alone.
*/}}
{{- define "edge-runner.fullname" -}}
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

{{/*
Component names: the full name truncated so that the suffix always fits in 63.
*/}}
{{- define "edge-runner.runner.fullname" -}}
{{- printf "%s-runner" (include "edge-runner.fullname" . | trunc 56 | trimSuffix "-") -}}
{{- end -}}

{{- define "edge-runner.runner.adminServiceName" -}}
{{- printf "%s-runner-admin" (include "edge-runner.fullname" . | trunc 50 | trimSuffix "-") -}}
{{- end -}}

{{- define "edge-runner.operator.fullname" -}}
{{- printf "%s-operator" (include "edge-runner.fullname" . | trunc 54 | trimSuffix "-") -}}
{{- end -}}

{{- define "edge-runner.operator.metricsServiceName" -}}
{{- printf "%s-operator-metrics" (include "edge-runner.fullname" . | trunc 46 | trimSuffix "-") -}}
{{- end -}}

{{/*
Cluster-scoped objects carry the release namespace in their name, so two
releases of the same name in two namespaces never fight over one object.
*/}}
{{- define "edge-runner.operator.clusterRoleName" -}}
{{- printf "%s:%s" .Release.Namespace (include "edge-runner.operator.fullname" .) -}}
{{- end -}}

{{/*
chart label value: name-version.
*/}}
{{- define "edge-runner.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels on every object.
*/}}
{{- define "edge-runner.labels" -}}
helm.sh/chart: {{ include "edge-runner.chart" . }}
app.kubernetes.io/name: {{ include "edge-runner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: edge-runner
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Selector labels (immutable in a Deployment: never add to these).
*/}}
{{- define "edge-runner.runner.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edge-runner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: runner
{{- end -}}

{{- define "edge-runner.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edge-runner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "edge-runner.runner.labels" -}}
{{ include "edge-runner.labels" . }}
app.kubernetes.io/component: runner
{{- end -}}

{{- define "edge-runner.operator.labels" -}}
{{ include "edge-runner.labels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{/*
ServiceAccount names.
*/}}
{{- define "edge-runner.runner.serviceAccountName" -}}
{{- if .Values.runner.serviceAccount.create -}}
{{- default (include "edge-runner.runner.fullname" .) .Values.runner.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.runner.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "edge-runner.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "edge-runner.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Image reference: repository@digest, else repository:tag (tag defaults to the
chart's appVersion). Called with the component's image values and the root:
  include "edge-runner.image" (dict "image" .Values.runner.image "root" .)
*/}}
{{- define "edge-runner.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The namespaces the operator watches, as a JSON list (use with fromJsonArray):
operator.watchNamespaces, or the release namespace when that is empty.
*/}}
{{- define "edge-runner.operator.namespaces" -}}
{{- if .Values.operator.watchNamespaces -}}
{{- .Values.operator.watchNamespaces | uniq | toJson -}}
{{- else -}}
{{- list .Release.Namespace | toJson -}}
{{- end -}}
{{- end -}}

{{/*
The base URL clients reach the runners at, when the chart knows it: the first
exact host of the Ingress (https if it has TLS) or of the HTTPRoute; "" otherwise.
The operator gets it as EDGE_OPERATOR_PUBLIC_URL and shows each EdgeRoute's URL.
*/}}
{{- define "edge-runner.publicUrl" -}}
{{- $hosts := list -}}
{{- $scheme := "http" -}}
{{- if .Values.ingress.enabled -}}
{{- $hosts = .Values.ingress.hosts | default list -}}
{{- if .Values.ingress.tls }}{{ $scheme = "https" }}{{ end -}}
{{- else if .Values.httpRoute.enabled -}}
{{- $hosts = .Values.httpRoute.hostnames | default list -}}
{{- end -}}
{{- range $hosts -}}
{{- if and (not (hasPrefix "*" .)) (not $.publicUrlDone) -}}
{{- printf "%s://%s" $scheme . -}}
{{- $_ := set $ "publicUrlDone" true -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
An HTTP probe. Called with (dict "probe" <values> "path" "/healthz" "port" "admin").
*/}}
{{- define "edge-runner.httpProbe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
initialDelaySeconds: {{ .probe.initialDelaySeconds }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end -}}

{{/*
The private CA bundle of registryCA, for the operator and runner containers:
"edge-runner.registryCA.enabled" is "true" when registryCA names a ConfigMap or
a Secret (it fails on both); ".env", ".volumeMount" and ".volume" render the
list item each adds.
*/}}
{{- define "edge-runner.registryCA.dir" -}}/etc/edge-runner/registry-ca{{- end -}}

{{- define "edge-runner.registryCA.enabled" -}}
{{- $ca := .Values.registryCA -}}
{{- if and $ca.configMap $ca.secret -}}
{{- fail "registryCA: set configMap or secret, not both" -}}
{{- end -}}
{{- if or $ca.configMap $ca.secret }}true{{ end -}}
{{- end -}}

{{- define "edge-runner.registryCA.env" -}}
# Verify registries and url sources against the system CAs plus this bundle.
- name: SSL_CERT_FILE
  value: {{ printf "%s/ca.crt" (include "edge-runner.registryCA.dir" .) | quote }}
{{- end -}}

{{- define "edge-runner.registryCA.volumeMount" -}}
- name: registry-ca
  mountPath: {{ include "edge-runner.registryCA.dir" . }}
  readOnly: true
{{- end -}}

{{- define "edge-runner.registryCA.volume" -}}
{{- $ca := .Values.registryCA -}}
- name: registry-ca
  {{- if $ca.configMap }}
  configMap:
    name: {{ $ca.configMap }}
  {{- else }}
  secret:
    secretName: {{ $ca.secret }}
  {{- end }}
    items:
      - key: {{ $ca.key }}
        path: ca.crt
{{- end -}}
