{{/* Chart name, truncated for label values. */}}
{{- define "postern.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full resource name prefix: release-chart unless the release already contains the chart name. */}}
{{- define "postern.fullname" -}}
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

{{/* Labels on every object. */}}
{{- define "postern.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "postern.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels that select the pods. */}}
{{- define "postern.selectorLabels" -}}
app.kubernetes.io/name: {{ include "postern.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* ServiceAccount name. */}}
{{- define "postern.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "postern.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Secret holding the CA keys. */}}
{{- define "postern.caSecretName" -}}
{{- if .Values.ca.create -}}
{{- printf "%s-ca" (include "postern.fullname" .) -}}
{{- else -}}
{{- required "ca.existingSecret is required when ca.create is false" .Values.ca.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* The configuration file: the user's config plus what the chart owns. */}}
{{- define "postern.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $_ := set $cfg "listen" (dict "ssh" ":2222" "http" ":8080") -}}
{{- $_ := set $cfg "data_dir" "/var/lib/postern" -}}
{{- $ca := dict -}}
{{- range $name := list "user" "host" "target" -}}
{{- $one := dict "key" (printf "${file:/etc/postern/ca/%s_ca}" $name) -}}
{{- with (index $.Values.ca.trusted $name) -}}
{{- $_ := set $one "trusted" . -}}
{{- end -}}
{{- $_ := set $ca $name $one -}}
{{- end -}}
{{- $_ := set $cfg "ca" $ca -}}
{{- toYaml $cfg -}}
{{- end -}}
