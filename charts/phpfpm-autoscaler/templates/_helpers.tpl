{{/* Names and labels. */}}
{{- define "phpfpm-autoscaler.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "phpfpm-autoscaler.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "phpfpm-autoscaler.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "phpfpm-autoscaler.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "phpfpm-autoscaler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "phpfpm-autoscaler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels that select the application's pods: the example's, or the existing workload's. */}}
{{- define "phpfpm-autoscaler.podSelector" -}}
{{- if eq .Values.workload.mode "existing" -}}
{{- if not .Values.workload.selectorLabels -}}
{{- fail "workload.selectorLabels is required in existing mode: set the labels of the workload's pods, for the Service selector" -}}
{{- end -}}
{{- toYaml .Values.workload.selectorLabels -}}
{{- else -}}
{{- include "phpfpm-autoscaler.selectorLabels" . -}}
{{- end -}}
{{- end -}}

{{/* The scaled workload: kind and name. */}}
{{- define "phpfpm-autoscaler.targetName" -}}
{{- if eq .Values.workload.mode "existing" -}}
{{- required "workload.name is required in existing mode: the Deployment or StatefulSet to scale" .Values.workload.name -}}
{{- else -}}
{{- include "phpfpm-autoscaler.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "phpfpm-autoscaler.targetKind" -}}
{{- if eq .Values.workload.mode "existing" -}}
{{- .Values.workload.kind -}}
{{- else -}}
Deployment
{{- end -}}
{{- end -}}

{{- define "phpfpm-autoscaler.fpmConfigMapName" -}}
{{- printf "%s-fpm" (include "phpfpm-autoscaler.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "phpfpm-autoscaler.overrideFile" -}}
{{- printf "%s/%s" (.Values.fpm.overrideDirectory | trimSuffix "/") .Values.fpm.overrideFileName -}}
{{- end -}}

{{- define "phpfpm-autoscaler.statusUrls" -}}
{{- if .Values.agent.statusUrls -}}
{{- .Values.agent.statusUrls -}}
{{- else -}}
{{- printf "tcp://%s%s" .Values.fpm.statusListen .Values.fpm.statusPath -}}
{{- end -}}
{{- end -}}

{{/*
First-class agent values and the variables they set. A null value sets
nothing, so the agent's own default applies.
*/}}
{{- define "phpfpm-autoscaler.firstClassEnv" -}}
PHPFPM_AUTOSCALER_MODE: mode
PHPFPM_AUTOSCALER_MIN_CHILDREN: minChildren
PHPFPM_AUTOSCALER_MAX_CHILDREN: maxChildren
PHPFPM_AUTOSCALER_TARGET_UTILIZATION: targetUtilization
PHPFPM_AUTOSCALER_POLL_INTERVAL_SECONDS: pollIntervalSeconds
PHPFPM_AUTOSCALER_POLL_TIMEOUT_SECONDS: pollTimeoutSeconds
PHPFPM_AUTOSCALER_SCALE_DOWN_STABILIZATION_SECONDS: scaleDownStabilizationSeconds
PHPFPM_AUTOSCALER_MIN_RELOAD_INTERVAL_SECONDS: minReloadIntervalSeconds
PHPFPM_AUTOSCALER_RELOAD_METHOD: reloadMethod
PHPFPM_AUTOSCALER_LOG_FORMAT: logFormat
PHPFPM_AUTOSCALER_LOG_LEVEL: logLevel
{{- end -}}

{{/* Variables the chart wires itself; agent.env must not repeat them. */}}
{{- define "phpfpm-autoscaler.wiredEnvNames" -}}
- PHPFPM_AUTOSCALER_STATUS_URLS
- PHPFPM_AUTOSCALER_OVERRIDE_FILE
- PHPFPM_AUTOSCALER_MEMORY_LIMIT_BYTES
- PHPFPM_AUTOSCALER_METRICS_ADDRESS
{{- end -}}

{{- define "phpfpm-autoscaler.agentEnv" -}}
- name: PHPFPM_AUTOSCALER_STATUS_URLS
  value: {{ include "phpfpm-autoscaler.statusUrls" . | quote }}
- name: PHPFPM_AUTOSCALER_OVERRIDE_FILE
  value: {{ include "phpfpm-autoscaler.overrideFile" . | quote }}
- name: PHPFPM_AUTOSCALER_METRICS_ADDRESS
  value: {{ printf "0.0.0.0:%v" .Values.agent.metricsPort | quote }}
{{- if kindIs "invalid" .Values.agent.memoryLimitBytes }}
- name: PHPFPM_AUTOSCALER_MEMORY_LIMIT_BYTES
  valueFrom:
    resourceFieldRef:
      containerName: {{ .Values.workload.phpContainerName }}
      resource: limits.memory
      divisor: "1"
{{- else }}
- name: PHPFPM_AUTOSCALER_MEMORY_LIMIT_BYTES
  value: {{ .Values.agent.memoryLimitBytes | int64 | toString | quote }}
{{- end }}
{{- $agent := .Values.agent }}
{{- $firstClass := include "phpfpm-autoscaler.firstClassEnv" . | fromYaml }}
{{- range $envName, $key := $firstClass }}
{{- $value := index $agent $key }}
{{- if not (kindIs "invalid" $value) }}
- name: {{ $envName }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- $taken := concat (keys $firstClass) (include "phpfpm-autoscaler.wiredEnvNames" . | fromYamlArray) }}
{{- range $envName, $value := .Values.agent.env }}
{{- if has $envName $taken }}
{{- fail (printf "agent.env.%s is set by the chart from a first-class value or its own wiring; remove it from agent.env and set the matching agent.* or fpm.* value" $envName) }}
{{- end }}
- name: {{ $envName }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with .Values.agent.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The agent's container, shared by the example Deployment and the patch. */}}
{{- define "phpfpm-autoscaler.agentContainer" -}}
- name: autoscaler
  image: "{{ .Values.agent.image.repository }}:{{ .Values.agent.image.tag | default .Chart.AppVersion }}"
  imagePullPolicy: {{ .Values.agent.image.pullPolicy }}
  args: ["run"]
  env:
    {{- include "phpfpm-autoscaler.agentEnv" . | nindent 4 }}
  ports:
    - name: autoscaler
      containerPort: {{ .Values.agent.metricsPort }}
      protocol: TCP
  # No readiness probe: an unhealthy agent must not take the pod out of its
  # Service, because php-fpm keeps serving with its last settings.
  livenessProbe:
    {{- toYaml .Values.agent.livenessProbe | nindent 4 }}
  resources:
    {{- toYaml .Values.agent.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.agent.securityContext | nindent 4 }}
  volumeMounts:
    - name: autoscaler-override
      mountPath: {{ .Values.fpm.overrideDirectory }}
    - name: autoscaler-tmp
      mountPath: /tmp
{{- end -}}

{{/* Mounts added to the php-fpm container. */}}
{{- define "phpfpm-autoscaler.phpMounts" -}}
- name: autoscaler-fpm-include
  mountPath: {{ printf "%s/zzz-autoscaler-include.conf" (.Values.workload.fpmPoolDirectory | trimSuffix "/") }}
  subPath: zzz-autoscaler-include.conf
  readOnly: true
- name: autoscaler-override
  mountPath: {{ .Values.fpm.overrideDirectory }}
  readOnly: true
{{- end -}}

{{- define "phpfpm-autoscaler.volumes" -}}
- name: autoscaler-fpm-include
  configMap:
    name: {{ include "phpfpm-autoscaler.fpmConfigMapName" . }}
- name: autoscaler-override
  emptyDir:
    sizeLimit: 1Mi
- name: autoscaler-tmp
  emptyDir:
    sizeLimit: 16Mi
{{- end -}}
