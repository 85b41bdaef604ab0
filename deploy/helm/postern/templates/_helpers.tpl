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

{{/* The values a working install needs: every missing one is named at once,
     and `helm install` fails before anything is created. */}}
{{- define "postern.validate" -}}
{{- $missing := list -}}
{{- if not .Values.image.repository -}}
{{- $missing = append $missing "image.repository (build the image from the repository's Dockerfile and push it to your registry)" -}}
{{- end -}}
{{- if not .Values.config.state -}}
{{- $missing = append $missing "config.state (a PostgreSQL URL all replicas share, e.g. postgres://postern:${env:POSTERN_DATABASE_PASSWORD}@db:5432/postern?sslmode=require)" -}}
{{- else if not (hasPrefix "postgres" .Values.config.state) -}}
{{- $missing = append $missing "config.state must be a postgres:// URL: replicas share their state (SQLite is for one process)" -}}
{{- end -}}
{{- if and (contains "POSTERN_DATABASE_PASSWORD" (toString .Values.config.state)) (not .Values.database.existingSecret) -}}
{{- $missing = append $missing "database.existingSecret (the Secret holding the PostgreSQL password that config.state references)" -}}
{{- end -}}
{{- if not .Values.config.storage -}}
{{- $missing = append $missing "config.storage (an s3:// bucket all replicas share, e.g. s3://postern-recordings/sessions?region=eu-west-1)" -}}
{{- else if not (hasPrefix "s3://" .Values.config.storage) -}}
{{- $missing = append $missing "config.storage must be an s3:// URL: replicas share their recordings" -}}
{{- end -}}
{{- if and .Values.service.ssh.proxyProtocol.enabled (not .Values.service.ssh.proxyProtocol.trustedProxies) -}}
{{- $missing = append $missing "service.ssh.proxyProtocol.trustedProxies (the addresses the load balancer connects from) when proxyProtocol is enabled" -}}
{{- end -}}
{{- if $missing -}}
{{- fail (printf "\n\npostern needs these values:\n  - %s\n(see the top of values.yaml)" (join "\n  - " $missing)) -}}
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
{{- if .Values.service.ssh.proxyProtocol.enabled -}}
{{- $ssh := deepCopy (default dict (index $cfg "ssh")) -}}
{{- $_ := set $ssh "trusted_proxies" .Values.service.ssh.proxyProtocol.trustedProxies -}}
{{- $_ := set $cfg "ssh" $ssh -}}
{{- end -}}
{{- with .Values.ingress.trustedProxies -}}
{{- $http := deepCopy (default dict (index $cfg "http")) -}}
{{- $_ := set $http "trusted_proxies" . -}}
{{- $_ := set $cfg "http" $http -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* The container environment (postern and its check-config init container). */}}
{{- define "postern.env" -}}
# The replica's own address: it names the replica in the sessions index
# (http://<pod IP>:8080, stable for the pod's lifetime, like its emptyDir
# spool), so that another replica can forward a live follow to the
# session's owner, and knows whose recordings to complete if it dies.
- name: POSTERN_ADVERTISE_HOST
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- if .Values.database.existingSecret }}
- name: POSTERN_DATABASE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.passwordKey }}
{{- end }}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The container volume mounts. */}}
{{- define "postern.volumeMounts" -}}
- name: config
  mountPath: /etc/postern/config.yaml
  subPath: config.yaml
  readOnly: true
- name: ca
  mountPath: /etc/postern/ca
  readOnly: true
- name: data
  mountPath: /var/lib/postern
- name: tmp
  mountPath: /tmp
{{- end -}}
