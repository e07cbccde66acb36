{{/*
Names. fullname is "<release>-<chart>", or "<release>" when the release name
already holds the chart name (`helm install fleetbench ...` gives "fleetbench").
*/}}
{{- define "fleetbench.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fleetbench.fullname" -}}
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

{{- define "fleetbench.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fleetbench.coordinator.fullname" -}}
{{- printf "%s-coordinator" (include "fleetbench.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fleetbench.agent.fullname" -}}
{{- printf "%s-agent" (include "fleetbench.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; pass (dict "ctx" $ "component" "coordinator"). */}}
{{- define "fleetbench.labels" -}}
helm.sh/chart: {{ include "fleetbench.chart" .ctx }}
{{ include "fleetbench.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: fleetbench
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels; pass (dict "ctx" $ "component" "coordinator"). */}}
{{- define "fleetbench.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fleetbench.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "fleetbench.coordinator.serviceAccountName" -}}
{{- if .Values.coordinator.serviceAccount.create }}
{{- default (include "fleetbench.coordinator.fullname" .) .Values.coordinator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.coordinator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "fleetbench.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (include "fleetbench.agent.fullname" .) .Values.agent.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Images: repository:tag, tag defaulting to the chart's appVersion. */}}
{{- define "fleetbench.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* Tokens: the Secret's name, and whether the chart creates it. */}}
{{- define "fleetbench.tokens.secretName" -}}
{{- default (printf "%s-tokens" (include "fleetbench.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{- define "fleetbench.tokens.create" -}}
{{- if and .Values.auth.enabled (not .Values.auth.existingSecret) .Values.auth.agentToken .Values.auth.operatorToken }}true{{ end }}
{{- end }}

{{/* TLS Secrets: names, and whether the chart creates them. */}}
{{- define "fleetbench.tls.coordinatorSecretName" -}}
{{- default (printf "%s-coordinator-tls" (include "fleetbench.fullname" .)) .Values.tls.coordinator.existingSecret }}
{{- end }}

{{- define "fleetbench.tls.agentSecretName" -}}
{{- default (printf "%s-agent-tls" (include "fleetbench.fullname" .)) .Values.tls.agent.existingSecret }}
{{- end }}

{{/* --insecure: the value when set, else true exactly when TLS is off. */}}
{{- define "fleetbench.coordinator.insecure" -}}
{{- if kindIs "invalid" .Values.coordinator.insecure }}
{{- if not .Values.tls.enabled }}true{{ end }}
{{- else if .Values.coordinator.insecure }}true
{{- end }}
{{- end }}

{{/* The URL agents dial. */}}
{{- define "fleetbench.agent.coordinatorUrl" -}}
{{- if .Values.agent.coordinatorUrl }}
{{- .Values.agent.coordinatorUrl }}
{{- else }}
{{- printf "%s://%s.%s.svc:%v" (ternary "https" "http" .Values.tls.enabled) (include "fleetbench.coordinator.fullname" .) .Release.Namespace .Values.coordinator.ports.grpc }}
{{- end }}
{{- end }}

{{/*
Consistency checks that the schema cannot express; called from every
template's top so that a bad combination fails the render with a reason.
*/}}
{{- define "fleetbench.validate" -}}
{{- if and .Values.tls.mutual (not .Values.tls.enabled) }}
{{- fail "tls.mutual needs tls.enabled: mutual TLS is TLS with client certificates" }}
{{- end }}
{{- if and .Values.coordinator.enabled (not .Values.tls.enabled) (not (include "fleetbench.coordinator.insecure" .)) }}
{{- fail "coordinator.insecure=false needs tls.enabled=true: without TLS the coordinator refuses to listen beyond loopback" }}
{{- end }}
{{- if and .Values.auth.enabled (not .Values.auth.existingSecret) (or .Values.auth.agentToken .Values.auth.operatorToken) (not (and .Values.auth.agentToken .Values.auth.operatorToken)) }}
{{- fail "give both auth.agentToken and auth.operatorToken (or neither, and create the Secret yourself)" }}
{{- end }}
{{- if and .Values.auth.agentToken (eq .Values.auth.agentToken .Values.auth.operatorToken) }}
{{- fail "auth.agentToken and auth.operatorToken must differ" }}
{{- end }}
{{- if and .Values.tls.enabled .Values.coordinator.enabled (not .Values.tls.coordinator.existingSecret) }}
{{- if not (and .Values.tls.coordinator.cert .Values.tls.coordinator.key .Values.tls.coordinator.ca) }}
{{- fail "tls.enabled: set tls.coordinator.existingSecret, or tls.coordinator.cert, .key and .ca (--set-file)" }}
{{- end }}
{{- end }}
{{- if and .Values.tls.enabled .Values.agent.enabled (not .Values.tls.agent.existingSecret) }}
{{- if not .Values.tls.agent.ca }}
{{- fail "tls.enabled: set tls.agent.existingSecret, or tls.agent.ca (--set-file; plus .cert and .key for mutual TLS)" }}
{{- end }}
{{- if and .Values.tls.mutual (not (and .Values.tls.agent.cert .Values.tls.agent.key)) }}
{{- fail "tls.mutual: set tls.agent.cert and tls.agent.key (--set-file), or tls.agent.existingSecret" }}
{{- end }}
{{- end }}
{{- if and .Values.tls.mutual .Values.coordinator.enabled (not .Values.agent.enabled) (not .Values.tls.agent.existingSecret) (not (and .Values.tls.agent.cert .Values.tls.agent.key)) }}
{{- fail "tls.mutual: the coordinator's probes present the agent client certificate: set tls.agent.existingSecret or tls.agent.cert and .key" }}
{{- end }}
{{- if and .Values.agent.hosts .Values.auth.enabled (not .Values.auth.existingSecret) (not .Values.auth.agentTokens) }}
{{- fail "agent.hosts: set auth.agentTokens (--set-file auth.agentTokens=certs/agent-tokens) so the coordinator binds each host's name to its token" }}
{{- end }}
{{- if and (not .Values.coordinator.enabled) .Values.agent.enabled (not .Values.agent.coordinatorUrl) }}
{{- fail "coordinator.enabled=false: set agent.coordinatorUrl to the coordinator the agents dial" }}
{{- end }}
{{- end }}

{{/* Whether some pod mounts the agent TLS Secret: the agents under TLS, the
coordinator's probes under mutual TLS. */}}
{{- define "fleetbench.tls.agentSecretUsed" -}}
{{- if and .Values.tls.enabled (or .Values.agent.enabled (and .Values.tls.mutual .Values.coordinator.enabled)) }}true{{ end }}
{{- end }}
