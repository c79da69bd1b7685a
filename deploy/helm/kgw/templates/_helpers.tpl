{{/*
Shared helpers of the kgw chart. Resource names are the legacy Gloo Edge ones
(gloo, gateway, discovery, access-log, gateway-proxy, nats), so one release per
namespace; cluster-scoped names carry the namespace.
*/}}

{{- define "kgw.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kgw.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "kgw.labels" -}}
helm.sh/chart: {{ include "kgw.chart" . }}
app.kubernetes.io/name: {{ include "kgw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kgw
{{- end -}}

{{/*
Selector labels of one component.
Usage: include "kgw.selectorLabels" (dict "root" $ "component" "gloo")
*/}}
{{- define "kgw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kgw.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
All labels of one component's objects: the common ones, its selector labels and
the legacy `gloo: <component>` label.
Usage: include "kgw.componentLabels" (dict "root" $ "component" "gloo")
*/}}
{{- define "kgw.componentLabels" -}}
{{ include "kgw.labels" .root }}
app.kubernetes.io/component: {{ .component }}
gloo: {{ .component }}
{{- end -}}

{{/*
Image reference of a component; an empty tag means the chart's appVersion.
Usage: include "kgw.image" (dict "root" $ "image" .Values.gloo.image)
*/}}
{{- define "kgw.image" -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .root.Chart.AppVersion | toString) -}}
{{- end -}}

{{/* Address suffix of the release namespace's Services. */}}
{{- define "kgw.svcSuffix" -}}
{{- printf "%s.svc.%s" .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{/* The access-log replicas' gRPC addresses, comma-separated, one per StatefulSet
pod (access-log-<i>.access-log-headless.<namespace>.svc.<domain>:<port>): Envoy
sends every entry to each. */}}
{{- define "kgw.accessLogAddrs" -}}
{{- $addrs := list -}}
{{- range $i := until (int .Values.accessLog.replicas) -}}
{{- $addrs = append $addrs (printf "access-log-%d.access-log-headless.%s:%v" $i (include "kgw.svcSuffix" $) $.Values.accessLog.alsPort) -}}
{{- end -}}
{{- join "," $addrs -}}
{{- end -}}

{{/* The NATS URL every process connects to. */}}
{{- define "kgw.natsUrl" -}}
{{- if .Values.nats.url -}}
{{- .Values.nats.url -}}
{{- else -}}
{{- printf "nats://nats.%s:%v" (include "kgw.svcSuffix" .) .Values.nats.clientPort -}}
{{- end -}}
{{- end -}}

{{/* Host name of the gloo Service (Envoy's ADS server). */}}
{{- define "kgw.glooHost" -}}
{{- printf "gloo.%s" (include "kgw.svcSuffix" .) -}}
{{- end -}}

{{/* The gateway-proxy's role: <namespace>~<gateway name>. */}}
{{- define "kgw.proxyRole" -}}
{{- printf "%s~%s" (.Values.gatewayProxy.gatewayNamespace | default .Release.Namespace) .Values.gatewayProxy.gatewayName -}}
{{- end -}}

{{/* Cluster-scoped object name: kgw-<component>-<namespace>. */}}
{{- define "kgw.clusterName" -}}
{{- printf "kgw-%s-%s" .component .root.Release.Namespace | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Arguments shared by our processes (gateway, gloo, discovery, access-log).
Usage: include "kgw.commonArgs" $
*/}}
{{- define "kgw.commonArgs" -}}
- --nats-url={{ include "kgw.natsUrl" . }}
{{- end -}}

{{/*
The config source, for the processes that read resources (gateway, discovery; gloo for
the TLS Secrets of HTTPS listeners).
Usage: include "kgw.sourceArgs" $
*/}}
{{- define "kgw.sourceArgs" -}}
- --source={{ .Values.source }}
{{- with .Values.watchNamespaces }}
- --namespaces={{ join "," . }}
{{- end }}
{{- with .Values.labelSelector }}
- --label-selector={{ . }}
{{- end }}
{{- end -}}

{{/*
Pods behind Service `gloo`: the gloo pods (xDS and the other controller ports)
and the gateway pods (the webhook on 443). One Service spans both by this
label; each Service port targets a port name that only one of them declares,
so the endpoints of each port are the right pods.
*/}}
{{- define "kgw.glooServiceLabel" -}}
kgw.dev/service-gloo: "true"
{{- end -}}

{{/* Name of the Secret holding the webhook's serving certificate. */}}
{{- define "kgw.webhookSecret" -}}
{{- .Values.webhook.existingSecret | default "gateway-validation-certs" -}}
{{- end -}}

{{/* A PodDisruptionBudget for one component's pods.
Usage: include "kgw.pdb" (dict "root" $ "component" "gloo") */}}
{{- define "kgw.pdb" -}}
{{- if .root.Values.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "kgw.componentLabels" (dict "root" .root "component" .component) | nindent 4 }}
spec:
  maxUnavailable: {{ .root.Values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "kgw.selectorLabels" (dict "root" .root "component" .component) | nindent 6 }}
{{- end }}
{{- end -}}

{{/*
Environment shared by our processes (with mTLS the certificate folder
KGW_TLS_DIR, which each pod mounts with kgw.mtlsMount / kgw.mtlsVolume).
Usage: include "kgw.commonEnv" (dict "root" $ "values" .Values.gloo)
*/}}
{{- define "kgw.commonEnv" -}}
- name: KGW_NATS_URL
  value: {{ include "kgw.natsUrl" .root | quote }}
- name: KGW_SOURCE
  value: {{ .root.Values.source | quote }}
- name: RUST_LOG
  value: {{ .values.logLevel | quote }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- include "kgw.mtlsEnv" .root }}
{{- with .root.Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
HTTP probes on the monitoring port: /healthz (liveness), /readyz (readiness).
*/}}
{{- define "kgw.httpProbes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: http-monitoring
  initialDelaySeconds: 5
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: http-monitoring
  periodSeconds: 5
  failureThreshold: 3
{{- end -}}

{{/* Pod annotations for Prometheus scraping of the monitoring port. */}}
{{- define "kgw.scrapeAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ . | quote }}
prometheus.io/path: /metrics
{{- end -}}

{{/*
Pod-level settings shared by every pod: service account, pull secrets,
scheduling.
Usage: include "kgw.podCommon" (dict "root" $ "values" .Values.gloo "sa" "gloo")
*/}}
{{- define "kgw.podCommon" -}}
serviceAccountName: {{ .sa }}
{{- /* Only the pods that talk to the API server get a token. */}}
automountServiceAccountToken: {{ has .sa (list "gateway" "gloo" "discovery") }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Secret holding the NATS users' passwords (one key per user). */}}
{{- define "kgw.natsUsersSecret" -}}
{{- .Values.nats.auth.existingSecret | default "nats-users" -}}
{{- end -}}

{{/* Env of a process that connects to NATS as `user` (nothing without NATS auth). */}}
{{- define "kgw.natsAuthEnv" -}}
{{- if .root.Values.nats.auth.enabled }}
- name: KGW_NATS_USER
  value: {{ .user | quote }}
- name: KGW_NATS_PASSWORD_FILE
  value: /etc/kgw/nats/password
{{- end }}
{{- end -}}

{{/* Its password file's mount. */}}
{{- define "kgw.natsAuthMount" -}}
{{- if .Values.nats.auth.enabled }}
- name: nats-password
  mountPath: /etc/kgw/nats
  readOnly: true
{{- end }}
{{- end -}}

{{/* And the volume: the user's key of the passwords Secret. */}}
{{- define "kgw.natsAuthVolume" -}}
{{- if .root.Values.nats.auth.enabled }}
- name: nats-password
  secret:
    secretName: {{ include "kgw.natsUsersSecret" .root }}
    items:
      - key: {{ .user }}
        path: password
{{- end }}
{{- end -}}

{{/*
mTLS (values `mtls`). Where each identity's certificate lives: Secret
kgw-<who>-tls (tls.crt, tls.key, ca.crt), <who> one of gateway, controller,
discovery, access-log, gateway-proxy, admin, nats.
Usage: include "kgw.mtlsSecret" "controller"
*/}}
{{- define "kgw.mtlsSecret" -}}
{{- printf "kgw-%s-tls" . -}}
{{- end -}}

{{/* Where the certificates are mounted in every pod of ours and in Envoy's. */}}
{{- define "kgw.mtlsDir" -}}
/etc/kgw/tls
{{- end -}}

{{/* Where Envoy's SDS files (ConfigMap gateway-proxy-sds) are mounted: the
controller's default --proxy-sds-dir, which it names in the clusters it sends. */}}
{{- define "kgw.sdsDir" -}}
/etc/kgw/sds
{{- end -}}

{{/* The DNS names of Service `name` in the release namespace:
name, name.<ns>, name.<ns>.svc, name.<ns>.svc.<domain>.
Usage: include "kgw.serviceNames" (dict "root" $ "name" "gloo") | fromJsonArray */}}
{{- define "kgw.serviceNames" -}}
{{- $ns := .root.Release.Namespace -}}
{{- list .name (printf "%s.%s" .name $ns) (printf "%s.%s.svc" .name $ns) (printf "%s.%s" .name (include "kgw.svcSuffix" .root)) | toJson -}}
{{- end -}}

{{/*
Every identity that gets a certificate, as a JSON list of
{who, commonName, dnsNames}: the common names are those of
kgw_proto::identity (kgw-process:<name>, kgw-proxy:<ns>~<gateway>, kgw-admin);
our servers' certificates carry <process>.kgw.internal (what clients verify)
and their Services' names; nats-server's its Service names.
Usage: include "kgw.mtlsIdentities" $ | fromJsonArray
*/}}
{{- define "kgw.mtlsIdentities" -}}
{{- $suffix := include "kgw.svcSuffix" . -}}
{{- $ns := .Release.Namespace -}}
{{- $ids := list -}}
{{- $ids = append $ids (dict "who" "gateway" "commonName" "kgw-process:gateway" "dnsNames" (list "gateway.kgw.internal")) -}}
{{- $gloo := include "kgw.serviceNames" (dict "root" . "name" "gloo") | fromJsonArray -}}
{{- $ids = append $ids (dict "who" "controller" "commonName" "kgw-process:controller" "dnsNames" (prepend $gloo "controller.kgw.internal")) -}}
{{- $ids = append $ids (dict "who" "discovery" "commonName" "kgw-process:discovery" "dnsNames" (list "discovery.kgw.internal")) -}}
{{- $als := include "kgw.serviceNames" (dict "root" . "name" "access-log") | fromJsonArray -}}
{{- $als = concat $als (list (printf "*.access-log-headless.%s.svc" $ns) (printf "*.access-log-headless.%s" $suffix)) -}}
{{- $ids = append $ids (dict "who" "access-log" "commonName" "kgw-process:access-log" "dnsNames" (prepend $als "access-log.kgw.internal")) -}}
{{- $ids = append $ids (dict "who" "gateway-proxy" "commonName" (printf "kgw-proxy:%s" (include "kgw.proxyRole" .)) "dnsNames" (list)) -}}
{{- $ids = append $ids (dict "who" "admin" "commonName" "kgw-admin" "dnsNames" (list)) -}}
{{- if .Values.nats.enabled -}}
{{- $nats := include "kgw.serviceNames" (dict "root" . "name" "nats") | fromJsonArray -}}
{{- $nats = concat $nats (list (printf "*.nats.%s.svc" $ns) (printf "*.nats.%s" $suffix)) -}}
{{- $ids = append $ids (dict "who" "nats" "commonName" "nats.kgw.internal" "dnsNames" (prepend $nats "nats.kgw.internal")) -}}
{{- end -}}
{{- toJson $ids -}}
{{- end -}}

{{/* Env of our processes: KGW_TLS_DIR with mTLS, else KGW_INSECURE_NO_MTLS.
Usage: include "kgw.mtlsEnv" $ */}}
{{- define "kgw.mtlsEnv" -}}
{{- if .Values.mtls.enabled }}
- name: KGW_TLS_DIR
  value: {{ include "kgw.mtlsDir" . | quote }}
{{- else }}
- name: KGW_INSECURE_NO_MTLS
  value: "true"
{{- end }}
{{- end -}}

{{/* The certificate's mount (nothing without mTLS).
Usage: include "kgw.mtlsMount" $ */}}
{{- define "kgw.mtlsMount" -}}
{{- if .Values.mtls.enabled }}
- name: mtls
  mountPath: {{ include "kgw.mtlsDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* And its volume: the Secret of identity `who`.
Usage: include "kgw.mtlsVolume" (dict "root" $ "who" "controller") */}}
{{- define "kgw.mtlsVolume" -}}
{{- if .root.Values.mtls.enabled }}
- name: mtls
  secret:
    secretName: {{ include "kgw.mtlsSecret" .who }}
{{- end }}
{{- end -}}
