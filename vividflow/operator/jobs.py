"""The batch/v1 Job that runs one VideoJob: a pure manifest builder (no API calls)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vividflow.jobspec import (
    GROUP,
    LABEL_JOB_ID,
    LABEL_MODEL,
    LABEL_VIDEOJOB,
    NO_RETRY_EXIT_CODES,
    JobSpec,
    ModelName,
)
from vividflow.settings import Settings

CONTAINER_NAME = "runner"
OOM_KILLED_EXIT_CODE = 137
"""A container killed by SIGKILL: the kernel's OOM killer (evictions and preemptions carry the
DisruptionTarget condition and are ignored first); the same size would run out of memory again."""
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
ORDER_ANNOTATION = f"{GROUP}/created-at"
"""When the API accepted the job (``spec.createdAt``): suspended GPU Jobs start in this order."""
GCS_CREDENTIALS_DIR = "/var/run/secrets/vividflow/gcs"
GCS_CREDENTIALS_KEY = "key.json"


def job_labels(videojob_name: str, spec: JobSpec) -> dict[str, str]:
    """Labels linking a Job and its Pods back to their VideoJob."""
    return {LABEL_VIDEOJOB: videojob_name, LABEL_JOB_ID: spec.job_id, LABEL_MODEL: spec.model.value}


def holds_for_admission(spec: JobSpec, settings: Settings) -> bool:
    """Whether this job's Job is created suspended (a GPU job under a concurrency limit or Kueue)."""
    return spec.model.needs_gpu and (settings.max_running_gpu_jobs > 0 or bool(settings.kueue_queue))


def _env(videojob: Mapping[str, Any], spec: JobSpec, settings: Settings) -> list[dict[str, Any]]:
    metadata = videojob["metadata"]
    env: list[dict[str, Any]] = [
        {"name": "VIVID_VIDEOJOB_NAME", "value": metadata["name"]},
        {"name": "VIVID_VIDEOJOB_NAMESPACE", "value": metadata["namespace"]},
    ]
    env += [{"name": name, "value": value} for name, value in sorted(settings.runner_env.items())]
    if settings.gcs_credentials_secret:
        path = f"{GCS_CREDENTIALS_DIR}/{GCS_CREDENTIALS_KEY}"
        env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": path})
    if spec.model.needs_gpu and settings.model_cache_pvc:
        env.append({"name": "HF_HOME", "value": settings.model_cache_path})
    return env


def _volumes(spec: JobSpec, settings: Settings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(Pod volumes, container volumeMounts)."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if settings.gcs_credentials_secret:
        volumes.append({"name": "gcs-credentials", "secret": {"secretName": settings.gcs_credentials_secret}})
        mounts.append({"name": "gcs-credentials", "mountPath": GCS_CREDENTIALS_DIR, "readOnly": True})
    if spec.model.needs_gpu and settings.model_cache_pvc:
        volumes.append(
            {"name": "model-cache", "persistentVolumeClaim": {"claimName": settings.model_cache_pvc}}
        )
        mounts.append({"name": "model-cache", "mountPath": settings.model_cache_path})
    return volumes, mounts


def _container(
    videojob: Mapping[str, Any], spec: JobSpec, settings: Settings, mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": settings.runner_image,
        "command": [
            *settings.runner_command,
            "--spec-json",
            spec.model_dump_json(by_alias=True, exclude_none=True),
        ],
        "env": _env(videojob, spec, settings),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if settings.runner_env_secret:
        container["envFrom"] = [{"secretRef": {"name": settings.runner_env_secret}}]
    if mounts:
        container["volumeMounts"] = mounts
    resources = {kind: dict(values) for kind, values in settings.runner_resources.items()}
    if spec.model is ModelName.WAN21 and settings.gpu_count > 0:
        resources.setdefault("limits", {})[settings.gpu_resource] = str(settings.gpu_count)
    if resources:
        container["resources"] = resources
    return container


def _pod_spec(videojob: Mapping[str, Any], spec: JobSpec, settings: Settings) -> dict[str, Any]:
    volumes, mounts = _volumes(spec, settings)
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [_container(videojob, spec, settings, mounts)],
    }
    if settings.runner_service_account:
        pod["serviceAccountName"] = settings.runner_service_account
    if volumes:
        pod["volumes"] = volumes
    if spec.model.needs_gpu:
        if settings.gpu_node_selector:
            pod["nodeSelector"] = dict(settings.gpu_node_selector)
        if settings.gpu_tolerations:
            pod["tolerations"] = [dict(toleration) for toleration in settings.gpu_tolerations]
        if settings.gpu_priority_class:
            pod["priorityClassName"] = settings.gpu_priority_class
    return pod


POD_FAILURE_POLICY: dict[str, Any] = {
    "rules": [
        # A preempted or evicted Pod is no fault of the job: retry without spending backoffLimit.
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        # Invalid input, a model that does not load, out of memory: another try cannot help, and on
        # a GPU each try is expensive.
        {
            "action": "FailJob",
            "onExitCodes": {
                "containerName": CONTAINER_NAME,
                "operator": "In",
                "values": [*(int(code) for code in NO_RETRY_EXIT_CODES), OOM_KILLED_EXIT_CODE],
            },
        },
    ]
}


def job_manifest(videojob: Mapping[str, Any], spec: JobSpec, settings: Settings) -> dict[str, Any]:
    """The Job of ``videojob`` (whose validated spec is ``spec``), named like it, in its namespace.

    The owner reference is added by the caller (``kopf.adopt``)."""
    metadata = videojob["metadata"]
    labels = job_labels(metadata["name"], spec)
    job_metadata: dict[str, Any] = {
        "name": metadata["name"],
        "namespace": metadata["namespace"],
        "labels": dict(labels),
        "annotations": {ORDER_ANNOTATION: spec.created_at.isoformat()},
    }
    suspend = holds_for_admission(spec, settings)
    if suspend and settings.kueue_queue:
        job_metadata["labels"][KUEUE_QUEUE_LABEL] = settings.kueue_queue
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": job_metadata,
        "spec": {
            "suspend": suspend,
            "backoffLimit": settings.job_backoff_limit,
            "activeDeadlineSeconds": spec.deadline_seconds,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "podFailurePolicy": POD_FAILURE_POLICY,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": _pod_spec(videojob, spec, settings),
            },
        },
    }
