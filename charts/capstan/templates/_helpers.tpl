{{/* Names and labels. */}}
{{- define "capstan.name" -}}{{ .Release.Name }}-capstan{{- end -}}

{{- define "capstan.labels" -}}
app.kubernetes.io/part-of: capstan
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "capstan.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag }}{{- end -}}

{{/* etcd client URLs: the bundled members', else the external ones. */}}
{{- define "capstan.etcdEndpoints" -}}
{{- if .Values.etcd.bundled.enabled -}}
{{- $n := int .Values.etcd.bundled.replicas -}}
{{- $name := include "capstan.name" . -}}
{{- $urls := list -}}
{{- range $i := until $n -}}
{{- $urls = append $urls (printf "https://%s-etcd-%d.%s-etcd:2379" $name $i $name) -}}
{{- end -}}
{{- join "," $urls -}}
{{- else -}}
{{- join "," .Values.etcd.endpoints -}}
{{- end -}}
{{- end -}}

{{/* The environment every component shares: etcd and mutual TLS from /pki. */}}
{{- define "capstan.env" -}}
- name: CAPSTAN_ETCD_ENDPOINTS
  value: {{ include "capstan.etcdEndpoints" . | quote }}
- name: CAPSTAN_ETCD_CA
  value: /pki/ca.pem
- name: CAPSTAN_ETCD_CERT
  value: /pki/tls.pem
- name: CAPSTAN_ETCD_KEY
  value: /pki/tls.key
- name: CAPSTAN_TLS_CA
  value: /pki/ca.pem
- name: CAPSTAN_TLS_CERT
  value: /pki/tls.pem
- name: CAPSTAN_TLS_KEY
  value: /pki/tls.key
- name: CAPSTAN_ADMIN_ADDR
  value: "0.0.0.0:{{ .Values.adminPort }}"
- name: CAPSTAN_ELECTION_TTL
  value: {{ .Values.electionTtl | quote }}
- name: CAPSTAN_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end -}}

{{/* etcd auth: the component's own etcd user (capstan etcd setup-auth), called with (list $root "api"). */}}
{{- define "capstan.etcdUser" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- if $root.Values.etcdAuth.enabled }}
- name: CAPSTAN_ETCD_USER
  value: capstan-{{ $name }}
- name: CAPSTAN_ETCD_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.etcdAuth.secret }}
      key: capstan-{{ $name }}.password
{{- end }}
{{- end -}}

{{/* Probes on the admin server. */}}
{{- define "capstan.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: admin}
  periodSeconds: 10
readinessProbe:
  httpGet: {path: /readyz, port: admin}
  periodSeconds: 5
{{- end -}}

{{/* Least privilege for every component but the agent. */}}
{{- define "capstan.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "capstan.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}
