{{/* Names create-remote-secret looks for: they are fixed, not derived from the release. */}}
{{- define "reader.serviceAccountName" -}}horizon-reader-service-account{{- end -}}
{{- define "reader.roleName" -}}horizon-reader{{- end -}}

{{- define "reader.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}
