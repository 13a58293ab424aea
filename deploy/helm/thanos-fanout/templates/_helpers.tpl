{{/* Name of the chart, for labels. */}}
{{- define "thanos-fanout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of the objects: the release name, followed by the chart name unless
the release name already contains it. 54 characters at most, so that
"-headless" still fits in 63.
*/}}
{{- define "thanos-fanout.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "thanos-fanout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "thanos-fanout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "thanos-fanout.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "thanos-fanout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "thanos-fanout.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Where the Secrets named by remotes[].tlsSecrets are mounted, one directory each. */}}
{{- define "thanos-fanout.secretsDir" -}}
/var/run/secrets/thanos-fanout
{{- end }}

{{/* The Secrets named by remotes[].tlsSecrets, each once, sorted, as a JSON list. */}}
{{- define "thanos-fanout.tlsSecretNames" -}}
{{- $names := dict }}
{{- range $port, $tls := .Values.listenerTls | default dict }}
{{- with $tls.secret }}{{ $_ := set $names . true }}{{ end }}
{{- with $tls.clientCASecret }}{{ $_ := set $names . true }}{{ end }}
{{- end }}
{{- range .Values.remotes }}
{{- with .tlsSecrets }}
{{- with .ca }}{{ $_ := set $names . true }}{{ end }}
{{- with .client }}{{ $_ := set $names . true }}{{ end }}
{{- end }}
{{- end }}
{{- keys $names | sortAlpha | toJson }}
{{- end }}

{{/*
config.yaml: .Values.config plus .Values.remotes, with each remote's
tlsSecrets turned into tls.ca_file, tls.cert_file and tls.key_file under
the Secrets' mount directories.
*/}}
{{- define "thanos-fanout.config" -}}
{{- $config := deepCopy (.Values.config | default dict) }}
{{- if hasKey $config "remotes" }}
{{- fail "config.remotes: set the remotes in the top-level value `remotes`, not under `config`" }}
{{- end }}
{{- range $section := list "grpc" "http" }}
{{- if hasKey (get $config $section | default dict) "listen" }}
{{- fail (printf "config.%s.listen: the chart sets the listen addresses from `listenHost` and `ports`" $section) }}
{{- end }}
{{- end }}
{{- $dir := include "thanos-fanout.secretsDir" . }}
{{- range $port, $tls := .Values.listenerTls | default dict }}
{{- if $tls.secret }}
{{- $section := get $config $port | default dict }}
{{- if hasKey $section "tls" }}
{{- fail (printf "config.%s.tls: set listenerTls.%s instead" $port $port) }}
{{- end }}
{{- $files := dict "cert_file" (printf "%s/%s/tls.crt" $dir $tls.secret) "key_file" (printf "%s/%s/tls.key" $dir $tls.secret) }}
{{- with $tls.clientCASecret }}
{{- $_ := set $files "client_ca_file" (printf "%s/%s/%s" $dir . ($tls.clientCAKey | default "ca.crt")) }}
{{- end }}
{{- with $tls.maxHandshakes }}
{{- $_ := set $files "max_handshakes" . }}
{{- end }}
{{- $_ := set $section "tls" $files }}
{{- $_ := set $config $port $section }}
{{- end }}
{{- end }}
{{- $remotes := list }}
{{- range $i, $r := .Values.remotes }}
{{- $remote := omit (deepCopy $r) "tlsSecrets" }}
{{- with $r.tlsSecrets }}
{{- $tls := $remote.tls | default dict }}
{{- if .ca }}
{{- if $tls.ca_file }}
{{- fail (printf "remotes[%d] (%s): set tls.ca_file or tlsSecrets.ca, not both" $i $r.name) }}
{{- end }}
{{- $_ := set $tls "ca_file" (printf "%s/%s/%s" $dir .ca (.caKey | default "ca.crt")) }}
{{- end }}
{{- if .client }}
{{- if or $tls.cert_file $tls.key_file }}
{{- fail (printf "remotes[%d] (%s): set tls.cert_file and tls.key_file or tlsSecrets.client, not both" $i $r.name) }}
{{- end }}
{{- $_ := set $tls "cert_file" (printf "%s/%s/tls.crt" $dir .client) }}
{{- $_ := set $tls "key_file" (printf "%s/%s/tls.key" $dir .client) }}
{{- end }}
{{- $_ := set $remote "tls" $tls }}
{{- end }}
{{- $remotes = append $remotes $remote }}
{{- end }}
{{- $_ := set $config "remotes" $remotes }}
{{- toYaml $config }}
{{- end }}
