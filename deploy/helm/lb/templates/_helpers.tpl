{{- define "lb.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lb.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{- define "lb.controllerUrl" -}}
http://{{ include "lb.fullname" . }}-controller:{{ .Values.controller.port }}
{{- end -}}
