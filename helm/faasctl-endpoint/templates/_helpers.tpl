{{/* vim: set filetype=mustache: */}}

{{/*
Chart name, truncated to 63 characters (the DNS-1123 label limit).
*/}}
{{- define "faasctl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full resource name: <release>-<chart name>, or the release alone if it already contains the
chart name; truncated to 63 characters.
*/}}
{{- define "faasctl.fullname" -}}
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
Chart label value: name-version.
*/}}
{{- define "faasctl.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels that identify this release's resources (stable across upgrades); selectors add
app.kubernetes.io/component.
*/}}
{{- define "faasctl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "faasctl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Labels of every resource.
*/}}
{{- define "faasctl.labels" -}}
helm.sh/chart: {{ include "faasctl.chart" . }}
{{ include "faasctl.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
faasctl.io/endpoint: {{ .Values.endpoint.name | quote }}
{{- end -}}

{{/*
The service account the endpoint pod runs as.
*/}}
{{- define "faasctl.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "faasctl.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The endpoint image reference; the tag defaults to the CPU worker image of the chart's
appVersion (<appVersion>-cpu, as `faasctl image build` tags it).
*/}}
{{- define "faasctl.image" -}}
{{- printf "%s:%s" .Values.endpoint.image.repository (default (printf "%s-cpu" .Chart.AppVersion) .Values.endpoint.image.tag) -}}
{{- end -}}

{{/*
Where the endpoint keeps its folders (GLOBUS_COMPUTE_USER_DIR), and its own folder.
*/}}
{{- define "faasctl.userDir" -}}
/var/lib/globus_compute
{{- end -}}
{{- define "faasctl.endpointDir" -}}
{{- printf "%s/%s" (include "faasctl.userDir" .) .Values.endpoint.name -}}
{{- end -}}

{{/*
The credentials Secret's name; rendering fails without one, since credentials never come from values.
*/}}
{{- define "faasctl.credentialsSecret" -}}
{{- required "endpoint.credentials.secretName is required: the name of an existing Secret with GLOBUS_COMPUTE_CLIENT_ID and GLOBUS_COMPUTE_CLIENT_SECRET (faasctl deploy sets it)" .Values.endpoint.credentials.secretName -}}
{{- end -}}

{{/*
Image pull secrets, given as names or as {name: ...}.
*/}}
{{- define "faasctl.imagePullSecrets" -}}
{{- with .Values.endpoint.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
{{- if kindIs "string" . }}
  - name: {{ . }}
{{- else }}
  - name: {{ .name }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Environment shared by the endpoint container and the test pod.
*/}}
{{- define "faasctl.endpointEnv" -}}
- name: GLOBUS_COMPUTE_USER_DIR
  value: {{ include "faasctl.userDir" . | quote }}
- name: HOME
  value: {{ include "faasctl.userDir" . | quote }}
{{- end -}}
