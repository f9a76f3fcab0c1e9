{{/* Names ----------------------------------------------------------------------------------------- */}}

{{- define "vividflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart>, or <release> when it already contains the chart name; at most 52 characters
so that "-operator" and friends still fit in 63. */}}
{{- define "vividflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "vividflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels ---------------------------------------------------------------------------------------- */}}

{{/* Selector labels of one component: include "vividflow.selectorLabels" (list . "api") */}}
{{- define "vividflow.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "vividflow.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* All labels of one component's objects: include "vividflow.labels" (list . "api") */}}
{{- define "vividflow.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "vividflow.chart" $root }}
{{ include "vividflow.selectorLabels" . }}
app.kubernetes.io/part-of: vividflow
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* ServiceAccounts ------------------------------------------------------------------------------- */}}

{{- define "vividflow.apiServiceAccountName" -}}
{{- default (printf "%s-api" (include "vividflow.fullname" .)) .Values.api.serviceAccount.name -}}
{{- end -}}

{{- define "vividflow.operatorServiceAccountName" -}}
{{- default (printf "%s-operator" (include "vividflow.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{- define "vividflow.runnerServiceAccountName" -}}
{{- default (printf "%s-runner" (include "vividflow.fullname" .)) .Values.runner.serviceAccount.name -}}
{{- end -}}

{{/* Images ---------------------------------------------------------------------------------------- */}}

{{/* repository:tag, or repository@digest: include "vividflow.image" (list . .Values.images.api) */}}
{{- define "vividflow.image" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Evaluation services ----------------------------------------------------------------------------- */}}

{{- define "vividflow.postgresqlName" -}}
{{- printf "%s-postgresql" (include "vividflow.fullname" .) -}}
{{- end -}}

{{- define "vividflow.redisName" -}}
{{- printf "%s-redis" (include "vividflow.fullname" .) -}}
{{- end -}}

{{- define "vividflow.gcsEmulatorName" -}}
{{- printf "%s-gcs" (include "vividflow.fullname" .) -}}
{{- end -}}

{{- define "vividflow.gcsEmulatorURL" -}}
{{- printf "http://%s.%s.svc:4443" (include "vividflow.gcsEmulatorName" .) .Release.Namespace -}}
{{- end -}}

{{- define "vividflow.operatorMetricsName" -}}
{{- printf "%s-operator-metrics" (include "vividflow.fullname" .) -}}
{{- end -}}

{{- define "vividflow.peeringName" -}}
{{- default (include "vividflow.fullname" .) .Values.operator.peering.name -}}
{{- end -}}

{{/* Settings -------------------------------------------------------------------------------------- */}}

{{/* Where the Google service-account key is mounted: the same path the operator uses in runner Pods. */}}
{{- define "vividflow.googleCredentialsDir" -}}/var/run/secrets/vividflow/gcs{{- end -}}

{{/* The VIVID_* settings of runner Pods, as the JSON object of VIVID_RUNNER_ENV. The operator passes
runner Pods only this (and runner.envSecret), so every setting the runner reads is named here. */}}
{{- define "vividflow.runnerEnvJSON" -}}
{{- $v := .Values -}}
{{- $env := dict
  "VIVID_WAN_MODEL" $v.models.wan.model
  "VIVID_WAN_CPU_OFFLOAD" (toString $v.models.wan.cpuOffload)
  "VIVID_WAN_VAE_TILING" (toString $v.models.wan.vaeTiling)
  "VIVID_WAN_OFFLOAD" $v.models.wan.offload
  "VIVID_WAN_ATTENTION" $v.models.wan.attention
  "VIVID_WAN_CACHE" $v.models.wan.cache
  "VIVID_WAN_COMPILE" (toString $v.models.wan.compile)
  "VIVID_VEO_MODEL" $v.models.veo.model
  "VIVID_VERTEX_LOCATION" $v.vertex.location
  "VIVID_GCS_SIGNED_URLS" (toString $v.gcs.signedURLs)
  "VIVID_GCS_SIGNED_URL_EXPIRY_SECONDS" (toString (int $v.gcs.signedURLExpirySeconds))
  "VIVID_LOG_FORMAT" $v.logFormat
-}}
{{- with $v.models.wan.device }}{{ $_ := set $env "VIVID_WAN_DEVICE" . }}{{ end -}}
{{- with $v.models.wan.model480p }}{{ $_ := set $env "VIVID_WAN_MODEL_480P" . }}{{ end -}}
{{- with $v.models.wan.model720p }}{{ $_ := set $env "VIVID_WAN_MODEL_720P" . }}{{ end -}}
{{- if not (kindIs "invalid" $v.models.wan.cacheThreshold) }}{{ $_ := set $env "VIVID_WAN_CACHE_THRESHOLD" (toString $v.models.wan.cacheThreshold) }}{{ end -}}
{{- with $v.models.wan.magcacheRatios }}{{ $_ := set $env "VIVID_WAN_MAGCACHE_RATIOS" (join "," .) }}{{ end -}}
{{- with $v.models.wan.lora }}{{ $_ := set $env "VIVID_WAN_LORA" . }}{{ end -}}
{{- with $v.models.wan.loraWeightName }}{{ $_ := set $env "VIVID_WAN_LORA_WEIGHT_NAME" . }}{{ end -}}
{{- with $v.vertex.project }}{{ $_ := set $env "VIVID_VERTEX_PROJECT" . }}{{ end -}}
{{- with $v.vertex.baseURL }}{{ $_ := set $env "VIVID_VERTEX_BASE_URL" . }}{{ end -}}
{{- with $v.gcs.bucket }}{{ $_ := set $env "VIVID_GCS_BUCKET" . }}{{ end -}}
{{- if $v.gcsEmulator.enabled }}{{ $_ := set $env "STORAGE_EMULATOR_HOST" (include "vividflow.gcsEmulatorURL" .) }}{{ end -}}
{{- range $name, $value := $v.runner.env }}{{ $_ := set $env $name (toString $value) }}{{ end -}}
{{- toJson $env -}}
{{- end -}}

{{/* Environment entries of the database and Redis URLs (API server and migration Job). */}}
{{- define "vividflow.databaseEnv" -}}
- name: VIVID_DATABASE_URL
  valueFrom:
    secretKeyRef:
      {{- if .Values.database.bundled.enabled }}
      name: {{ include "vividflow.postgresqlName" . }}
      key: url
      {{- else }}
      name: {{ required "database.existingSecret is required (or set database.bundled.enabled=true)" .Values.database.existingSecret }}
      key: {{ .Values.database.secretKey }}
      {{- end }}
{{- end -}}

{{- define "vividflow.redisEnv" -}}
{{- if .Values.redis.bundled.enabled }}
- name: VIVID_REDIS_URL
  value: {{ printf "redis://%s:6379/0" (include "vividflow.redisName" .) | quote }}
{{- else if .Values.redis.existingSecret }}
- name: VIVID_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.secretKey }}
{{- else if .Values.redis.url }}
- name: VIVID_REDIS_URL
  value: {{ .Values.redis.url | quote }}
{{- end }}
{{- end -}}

{{/* Checks that span several values (the schema checks each value on its own). */}}
{{- define "vividflow.validate" -}}
{{- if and .Values.runner.kueue.queueName (gt (int .Values.runner.concurrency.maxRunningGpuJobs) 0) -}}
{{- fail "set either runner.kueue.queueName or runner.concurrency.maxRunningGpuJobs, not both: Kueue admits the GPU Jobs" -}}
{{- end -}}
{{- if and .Values.runner.kueue.localQueue.create (not .Values.runner.kueue.queueName) -}}
{{- fail "runner.kueue.localQueue.create needs runner.kueue.queueName (the LocalQueue's name)" -}}
{{- end -}}
{{- if and .Values.runner.kueue.localQueue.create (not .Values.runner.kueue.localQueue.clusterQueue) -}}
{{- fail "runner.kueue.localQueue.create needs runner.kueue.localQueue.clusterQueue" -}}
{{- end -}}
{{- if and .Values.gcsEmulator.enabled (not .Values.gcs.bucket) -}}
{{- fail "gcsEmulator.enabled needs gcs.bucket (the bucket created in the emulator)" -}}
{{- end -}}
{{- if and .Values.gcs.signedURLs (not .Values.google.credentialsSecret) -}}
{{- fail "gcs.signedURLs needs google.credentialsSecret: V4 signed URLs are signed with a service-account key" -}}
{{- end -}}
{{- $hpa := .Values.api.autoscaling -}}
{{- if and $hpa.enabled (not (or $hpa.targetCPUUtilizationPercentage $hpa.targetMemoryUtilizationPercentage)) -}}
{{- fail "api.autoscaling needs a metric: targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" -}}
{{- end -}}
{{- if and $hpa.enabled (gt (int $hpa.minReplicas) (int $hpa.maxReplicas)) -}}
{{- fail "api.autoscaling.minReplicas must not exceed api.autoscaling.maxReplicas" -}}
{{- end -}}
{{- if and (not .Values.operator.peering.enabled) (gt (int .Values.operator.replicas) 1) -}}
{{- fail "operator.replicas > 1 needs operator.peering.enabled: without peering every replica would act on every VideoJob" -}}
{{- end -}}
{{- if eq (int .Values.operator.metricsPort) (int .Values.operator.livenessPort) -}}
{{- fail "operator.metricsPort and operator.livenessPort must differ" -}}
{{- end -}}
{{- $m := .Values.metrics -}}
{{- range $name := list "serviceMonitor" "prometheusRule" "dashboard" -}}
{{- if and (index $m $name).enabled (not $m.enabled) -}}
{{- fail (printf "metrics.%s.enabled needs metrics.enabled: with metrics off there is nothing to scrape, alert on or chart" $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
