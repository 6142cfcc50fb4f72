{{/* The release's full name: the release name, with the chart name appended unless it
is already in it; at most 63 characters. */}}
{{- define "horizon.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels selecting the release's pods. */}}
{{- define "horizon.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "horizon.labels" -}}
{{ include "horizon.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "horizon.serviceAccountName" -}}
{{- if .Values.serviceAccount.name -}}
{{- .Values.serviceAccount.name -}}
{{- else if .Values.serviceAccount.create -}}
{{- include "horizon.fullname" . -}}
{{- else -}}
{{- fail "serviceAccount.name: required when serviceAccount.create is false (the existing service account Horizon runs as)" -}}
{{- end -}}
{{- end -}}

{{- define "horizon.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* "true" when xDS is served with TLS; fails on TLS values that do not go together. */}}
{{- define "horizon.xdsTLS" -}}
{{- $t := .Values.xds.tls -}}
{{- if and $t.existingSecret (or $t.cert $t.key $t.clientCA) -}}
{{- fail "xds.tls: set either existingSecret or cert and key (and clientCA), not both" -}}
{{- end -}}
{{- if and $t.cert (not $t.key) -}}
{{- fail "xds.tls.key: required with xds.tls.cert" -}}
{{- end -}}
{{- if and $t.key (not $t.cert) -}}
{{- fail "xds.tls.cert: required with xds.tls.key" -}}
{{- end -}}
{{- if and $t.clientCA (not $t.cert) -}}
{{- fail "xds.tls.clientCA: requires xds.tls.cert and xds.tls.key" -}}
{{- end -}}
{{- if and $t.cert $t.verifyClients (not $t.clientCA) -}}
{{- fail "xds.tls.clientCA: required with xds.tls.cert while xds.tls.verifyClients is true (or set verifyClients to false)" -}}
{{- end -}}
{{- if or $t.existingSecret $t.cert -}}true{{- end -}}
{{- end -}}

{{- define "horizon.xdsTLSSecret" -}}
{{- .Values.xds.tls.existingSecret | default (printf "%s-xds-tls" (include "horizon.fullname" .)) -}}
{{- end -}}
