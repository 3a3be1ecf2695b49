{{/* The release's base name, at most 63 characters. */}}
{{- define "chatroom.fullname" -}}
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

{{- define "chatroom.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object; pass (list $ "component"). */}}
{{- define "chatroom.labels" -}}
{{- $top := index . 0 -}}
helm.sh/chart: {{ printf "%s-%s" $top.Chart.Name $top.Chart.Version | quote }}
app.kubernetes.io/managed-by: {{ $top.Release.Service | quote }}
app.kubernetes.io/version: {{ $top.Chart.AppVersion | quote }}
{{ include "chatroom.selectorLabels" . }}
{{- end -}}

{{/* Labels a workload selects its pods by; pass (list $ "component"). */}}
{{- define "chatroom.selectorLabels" -}}
{{- $top := index . 0 -}}
app.kubernetes.io/name: {{ include "chatroom.name" $top | quote }}
app.kubernetes.io/instance: {{ $top.Release.Name | quote }}
app.kubernetes.io/component: {{ index . 1 | quote }}
{{- end -}}

{{/* The image of one binary; pass (list $ "msg-svc"). */}}
{{- define "chatroom.image" -}}
{{- $top := index . 0 -}}
{{- printf "%s/%s:%s" $top.Values.image.repository (index . 1) (default $top.Chart.AppVersion $top.Values.image.tag) -}}
{{- end -}}

{{- define "chatroom.zookeeper" -}}
{{- if .Values.zookeeper.enabled -}}
{{- printf "%s-zookeeper:2181" .Release.Name -}}
{{- else -}}
{{- required "zookeeper.connect (or zookeeper.enabled)" .Values.zookeeper.connect -}}
{{- end -}}
{{- end -}}

{{- define "chatroom.redis" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s-redis-master:6379" .Release.Name -}}
{{- else -}}
{{- required "redis.url (or redis.enabled)" .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{- define "chatroom.tokenSecretName" -}}
{{- if .Values.tokenSecret.existingSecret -}}
{{- .Values.tokenSecret.existingSecret -}}
{{- else -}}
{{- $_ := required "tokenSecret.value or tokenSecret.existingSecret" .Values.tokenSecret.value -}}
{{- printf "%s-token-secret" (include "chatroom.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "chatroom.adminTokenName" -}}
{{- if .Values.adminToken.existingSecret -}}
{{- .Values.adminToken.existingSecret -}}
{{- else -}}
{{- $_ := required "adminToken.value or adminToken.existingSecret" .Values.adminToken.value -}}
{{- printf "%s-admin-token" (include "chatroom.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Settings both services take. */}}
{{- define "chatroom.commonEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: CHATROOM_NODE_ID
  value: $(POD_NAME)
- name: CHATROOM_ZK
  value: {{ include "chatroom.zookeeper" . | quote }}
- name: CHATROOM_CLUSTER
  value: {{ .Values.clusterName | quote }}
- name: CHATROOM_ZK_SESSION_TIMEOUT_MS
  value: {{ .Values.zookeeper.sessionTimeoutMs | int | quote }}
- name: CHATROOM_LOG
  value: {{ .Values.log.level | quote }}
- name: CHATROOM_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
{{- if .Values.zookeeper.auth.existingSecret }}
- name: CHATROOM_ZK_AUTH_FILE
  value: /etc/chatroom/zk/{{ .Values.zookeeper.auth.key }}
{{- end }}
{{- end -}}

{{/* The node link's TLS settings of one role; pass (list $ "room-svc"). */}}
{{- define "chatroom.linkEnv" -}}
{{- $top := index . 0 -}}
{{- if $top.Values.links.plaintext -}}
- name: CHATROOM_LINK_PLAINTEXT
  value: "true"
{{- else -}}
- name: CHATROOM_LINK_CA
  value: /etc/chatroom/link/ca.crt
- name: CHATROOM_LINK_CERT
  value: /etc/chatroom/link/tls.crt
- name: CHATROOM_LINK_KEY
  value: /etc/chatroom/link/tls.key
{{- end -}}
{{- end -}}

{{/* The Secret with a role's link certificate; pass (list $ "room-svc"). */}}
{{- define "chatroom.linkSecret" -}}
{{- $top := index . 0 -}}
{{- if eq (index . 1) "room-svc" -}}
{{- required "links.roomSvcSecret (or links.plaintext)" $top.Values.links.roomSvcSecret -}}
{{- else -}}
{{- required "links.msgSvcSecret (or links.plaintext)" $top.Values.links.msgSvcSecret -}}
{{- end -}}
{{- end -}}
