"""The operator's pure parts, no cluster: the Job manifest, the status decision, admission order, the
work queue and the cache."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from vividflow.cli import app
from vividflow.jobspec import (
    ANNOTATION_OUTCOME,
    LABEL_JOB_ID,
    LABEL_MODEL,
    LABEL_VIDEOJOB,
    FailureReason,
    JobParameters,
    JobSpec,
    ModelName,
    RunnerExit,
    RunResult,
    VideoJobStatus,
    videojob_manifest,
)
from vividflow.operator.admission import jobs_to_release
from vividflow.operator.cache import Cache
from vividflow.operator.config import default_priority
from vividflow.operator.jobs import (
    KUEUE_QUEUE_LABEL,
    ORDER_ANNOTATION,
    job_manifest,
)
from vividflow.operator.status import current_status, decide, format_duration
from vividflow.operator.transitions import status_patch, transition_events
from vividflow.operator.workqueue import WorkQueue
from vividflow.runner import cli as runner_cli
from vividflow.settings import Settings

Json = dict[str, Any]
NOW = datetime(2026, 11, 3, 12, 0, 0, tzinfo=UTC)
VJ_UID = "uid-videojob"
JOB_UID = "uid-job"


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_spec(model: ModelName = ModelName.WAN21, **update: Any) -> JobSpec:
    job_id = str(uuid.uuid4())
    params = {"width": 32, "height": 32, "length": 5, "steps": 1} if model is ModelName.WAN21 else {}
    spec = JobSpec(
        job_id=job_id,
        owner="user-1",
        model=model,
        prompt="a cat",
        input_uri="gs://in/cat.png",
        parameters=JobParameters.for_model(model, params),
        output_uri=f"gs://out/{job_id}.mp4",
        deadline_seconds=600,
        created_at=NOW - timedelta(minutes=1),
    )
    return spec.model_copy(update=update)


def videojob(
    spec: JobSpec | None = None, status: Json | None = None, generation: int = 1, outcome: str | None = None
) -> Json:
    """A VideoJob; ``outcome``: the terminal phase the operator recorded in its annotation."""
    body = videojob_manifest(spec or make_spec(), "ns")
    body["metadata"].update({"uid": VJ_UID, "generation": generation, "resourceVersion": "7"})
    if outcome is not None:
        body["metadata"]["annotations"] = {ANNOTATION_OUTCOME: outcome}
    if status is not None:
        body["status"] = status
    return body


def job(*conditions: tuple[str, str], suspend: bool = False, **status: Any) -> Json:
    body: Json = {
        "metadata": {
            "name": "vj-x",
            "namespace": "ns",
            "uid": JOB_UID,
            "labels": {},
            "ownerReferences": [{"uid": VJ_UID, "controller": True, "kind": "VideoJob", "name": "vj-x"}],
        },
        "spec": {"suspend": suspend, "activeDeadlineSeconds": 600},
        "status": dict(status),
    }
    body["status"]["conditions"] = [
        {"type": type_, "status": "True", "reason": reason, "lastTransitionTime": stamp(NOW)}
        for type_, reason in conditions
    ]
    return body


def pod(
    phase: str = "Pending", *, state: Json | None = None, created: datetime = NOW, owner: str = JOB_UID
) -> Json:
    statuses = [{"name": "runner", "image": "runner:1", "state": state}] if state else []
    return {
        "metadata": {
            "name": f"p-{uuid.uuid4().hex[:6]}",
            "namespace": "ns",
            "creationTimestamp": stamp(created),
            "ownerReferences": [{"uid": owner, "controller": True, "kind": "Job"}],
        },
        "status": {"phase": phase, "containerStatuses": statuses},
    }


def terminated(code: int, message: str = "", reason: str = "Error", started: datetime = NOW) -> Json:
    finished = started + timedelta(seconds=65)
    return {
        "terminated": {
            "exitCode": code,
            "reason": reason,
            "message": message,
            "startedAt": stamp(started),
            "finishedAt": stamp(finished),
        }
    }


def result_json(**fields: Any) -> str:
    return RunResult.model_validate(fields).model_dump_json(exclude_none=True)


# ---------------------------------------------------------------------------------------------------
# The Job manifest
# ---------------------------------------------------------------------------------------------------


def test_wan_job_manifest_has_gpu_placement_cache_and_failure_policy() -> None:
    spec = make_spec(ModelName.WAN21)
    settings = Settings(
        runner_image="img:1",
        runner_command=["python", "-m", "vividflow.runner"],
        runner_env={"B": "2", "A": "1"},
        gpu_resource="nvidia.com/gpu",
        gpu_count=2,
        gpu_node_selector={"pool": "gpu"},
        gpu_tolerations=[{"key": "gpu", "operator": "Exists"}],
        gpu_priority_class="high",
        model_cache_pvc="cache",
        model_cache_path="/cache",
        job_backoff_limit=4,
        job_ttl_seconds=60,
    )
    manifest = job_manifest(videojob(spec), spec, settings)
    assert manifest["metadata"]["name"] == f"vj-{spec.job_id}"
    labels = {LABEL_VIDEOJOB: f"vj-{spec.job_id}", LABEL_JOB_ID: spec.job_id, LABEL_MODEL: "wan2.1"}
    assert manifest["metadata"]["labels"] == labels == manifest["spec"]["template"]["metadata"]["labels"]
    assert manifest["metadata"]["annotations"][ORDER_ANNOTATION] == spec.created_at.isoformat()
    job_spec = manifest["spec"]
    assert (job_spec["suspend"], job_spec["backoffLimit"], job_spec["ttlSecondsAfterFinished"]) == (
        False,
        4,
        60,
    )
    assert job_spec["activeDeadlineSeconds"] == 600
    pod_spec = job_spec["template"]["spec"]
    assert pod_spec["nodeSelector"] == {"pool": "gpu"} and pod_spec["priorityClassName"] == "high"
    assert pod_spec["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert pod_spec["volumes"] == [{"name": "model-cache", "persistentVolumeClaim": {"claimName": "cache"}}]
    (container,) = pod_spec["containers"]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "2"}}
    assert container["volumeMounts"] == [{"name": "model-cache", "mountPath": "/cache"}]
    assert container["command"][:4] == ["python", "-m", "vividflow.runner", "--spec-json"]
    assert JobSpec.model_validate_json(container["command"][4]) == spec
    env = [(e["name"], e["value"]) for e in container["env"]]
    assert env == [
        ("VIVID_VIDEOJOB_NAME", f"vj-{spec.job_id}"),
        ("VIVID_VIDEOJOB_NAMESPACE", "ns"),
        ("A", "1"),
        ("B", "2"),
        ("HF_HOME", "/cache"),
    ]
    fail_job = job_spec["podFailurePolicy"]["rules"][1]
    assert fail_job["onExitCodes"] == {"containerName": "runner", "operator": "In", "values": [2, 3, 4, 137]}
    # The runner exits with those codes for the failures another try cannot fix.
    for reason in (FailureReason.INVALID_INPUT, FailureReason.MODEL_LOAD_FAILED, FailureReason.OUT_OF_MEMORY):
        assert runner_cli.exit_code(RunResult.failure(reason, "x")) in fail_job["onExitCodes"]["values"]
    for reason in (FailureReason.UPSTREAM_ERROR, FailureReason.INTERNAL, FailureReason.TIMEOUT):
        assert runner_cli.exit_code(RunResult.failure(reason, "x")) == RunnerExit.FAILED


def test_veo_job_manifest_has_no_gpu_but_credentials() -> None:
    spec = make_spec(ModelName.VEO31)
    settings = Settings(
        gpu_node_selector={"pool": "gpu"},
        model_cache_pvc="cache",
        gcs_credentials_secret="gcs-key",
        runner_env_secret="runner-env",
        runner_service_account=None,
        max_running_gpu_jobs=1,
        kueue_queue="q",
    )
    manifest = job_manifest(videojob(spec), spec, settings)
    assert manifest["spec"]["suspend"] is False  # limits and Kueue hold GPU Jobs only
    assert KUEUE_QUEUE_LABEL not in manifest["metadata"]["labels"]
    pod_spec = manifest["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod_spec and "serviceAccountName" not in pod_spec
    (container,) = pod_spec["containers"]
    assert "resources" not in container
    assert pod_spec["volumes"] == [{"name": "gcs-credentials", "secret": {"secretName": "gcs-key"}}]
    assert container["volumeMounts"][0]["mountPath"] == "/var/run/secrets/vividflow/gcs"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/run/secrets/vividflow/gcs/key.json"
    assert "HF_HOME" not in env
    assert container["envFrom"] == [{"secretRef": {"name": "runner-env"}}]


@pytest.mark.parametrize(
    ("limit", "queue", "suspended", "labelled"),
    [(0, None, False, False), (2, None, True, False), (0, "q", True, True)],
)
def test_gpu_jobs_are_held_under_a_limit_or_kueue(
    limit: int, queue: str | None, suspended: bool, labelled: bool
) -> None:
    spec = make_spec(ModelName.WAN21)
    manifest = job_manifest(videojob(spec), spec, Settings(max_running_gpu_jobs=limit, kueue_queue=queue))
    assert manifest["spec"]["suspend"] is suspended
    assert (manifest["metadata"]["labels"].get(KUEUE_QUEUE_LABEL) == "q") is labelled


# ---------------------------------------------------------------------------------------------------
# The status decision
# ---------------------------------------------------------------------------------------------------


def test_new_videojob_asks_for_its_job() -> None:
    decision = decide(videojob(), None, [], NOW)
    assert decision.create_job and not decision.delete_job and decision.spec is not None


def test_queued_while_the_pod_waits_and_while_suspended() -> None:
    vj = videojob()
    pending = decide(vj, job(), [pod("Pending")], NOW).status
    assert (pending.phase, pending.job_name, pending.observed_generation) == (
        "Queued",
        "vj-" + vj["spec"]["jobID"],
        1,
    )
    started = next(c for c in pending.conditions if c.type == "Started")
    assert (started.status, started.reason) == ("False", "PodPending")
    held = decide(vj, job(suspend=True), [], NOW).status
    assert next(c for c in held.conditions if c.type == "Started").reason == "WaitingForCapacity"
    kueue = job(suspend=True)
    kueue["metadata"]["labels"][KUEUE_QUEUE_LABEL] = "q"
    assert (
        "Kueue"
        in next(c for c in decide(vj, kueue, [], NOW).status.conditions if c.type == "Started").message
    )


def test_processing_keeps_the_runners_progress_and_a_coarse_duration() -> None:
    vj = videojob(status={"phase": "Queued", "progress": 35, "jobName": "vj-x"})
    running = pod("Running", state={"running": {"startedAt": stamp(NOW - timedelta(seconds=95))}})
    status = decide(vj, job(), [running], NOW, duration_step=30).status
    assert (status.phase, status.progress, status.duration) == ("Processing", 35, "1m30s")
    assert status.start_time == NOW - timedelta(seconds=95)
    # A retry's new Pod is pending: still Processing, never back to Queued.
    again = videojob(status=status.model_dump(mode="json", by_alias=True, exclude_none=True))
    assert decide(again, job(), [pod("Pending")], NOW).status.phase == "Processing"


def test_completed_from_the_termination_message() -> None:
    spec = make_spec()
    message = result_json(
        ok=True,
        resultURL="https://r/x.mp4",
        outputURI=spec.output_uri,
        metrics={"spinUpTime": 1, "generationTime": 2, "totalTime": 4},
    )
    done = pod("Succeeded", state=terminated(0, message, "Completed", started=NOW - timedelta(seconds=65)))
    status = decide(videojob(spec), job(("Complete", "")), [done], NOW).status
    assert (status.phase, status.progress, status.result_url) == ("Completed", 100, "https://r/x.mp4")
    assert status.metrics is not None and status.metrics.total_time == 4
    assert status.duration == "1m5s" and status.completion_time == NOW
    finished = next(c for c in status.conditions if c.type == "Finished")
    assert (finished.status, finished.reason) == ("True", "Completed")


def test_success_without_a_result_is_an_internal_failure() -> None:
    done = pod("Succeeded", state=terminated(0, "not json", "Completed"))
    status = decide(videojob(), job(("SuccessCriteriaMet", "")), [done], NOW).status
    assert (status.phase, status.reason) == ("Failed", FailureReason.INTERNAL)


@pytest.mark.parametrize(
    ("condition", "state", "reason", "message", "detail"),
    [
        ("DeadlineExceeded", terminated(137), FailureReason.TIMEOUT, "deadline of 600 seconds", None),
        (
            "BackoffLimitExceeded",
            terminated(1, result_json(ok=False, reason="upstream_error", errorMessage="Veo said no")),
            FailureReason.UPSTREAM_ERROR,
            "Veo said no",
            None,
        ),
        (
            "PodFailurePolicy",
            terminated(2, "bad spec line"),
            FailureReason.INVALID_INPUT,
            "could not use the job's input",
            "bad spec line",
        ),
        (
            "BackoffLimitExceeded",
            terminated(137, "", "OOMKilled"),
            FailureReason.OUT_OF_MEMORY,
            "OOMKilled",
            None,
        ),
        (
            "BackoffLimitExceeded",
            terminated(5, "Traceback\nboom at https://10.0.0.1:443/apis/x"),
            FailureReason.WORKER_CRASHED,
            "stopped unexpectedly (exit code 5)",
            "Traceback boom at https://10.0.0.1:443/apis/x",
        ),
        (
            "BackoffLimitExceeded",
            None,
            FailureReason.WORKER_CRASHED,
            "The runner failed",
            "The runner Job failed (BackoffLimitExceeded).",
        ),
    ],
)
def test_failure_reasons(
    condition: str, state: Json | None, reason: FailureReason, message: str, detail: str | None
) -> None:
    """The user gets a sentence; what the runner left behind (a log tail with internal addresses) goes
    to the Finished condition and the Failed event, for operators."""
    pods = [pod("Failed", state=state)] if state else []
    for kind in ("Failed", "FailureTarget"):
        decision = decide(videojob(), job((kind, condition)), pods, NOW)
        status = decision.status
        assert (status.phase, status.reason) == ("Failed", reason)
        assert status.error_message is not None and message in status.error_message
        assert decision.detail == detail
        if detail is not None:
            assert detail not in status.error_message and "Traceback" not in status.error_message
            finished = next(c for c in status.conditions if c.type == "Finished")
            assert detail in finished.message
            (event,) = transition_events(VideoJobStatus(phase="Processing"), status, decision.detail)
            assert detail in event.message


def test_only_pods_of_the_current_job_count() -> None:
    stale = pod(
        "Failed",
        state=terminated(1, result_json(ok=False, reason="internal", errorMessage="old")),
        owner="other",
    )
    status = decide(videojob(), job(), [stale], NOW).status
    assert status.phase == "Queued"


def test_image_pull_errors_wait_out_the_grace_then_fail_and_delete() -> None:
    waiting = {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "runner:1"'}}
    young = pod("Pending", state=waiting, created=NOW - timedelta(seconds=10))
    decision = decide(videojob(), job(), [young], NOW, image_pull_grace=60)
    assert decision.status.phase == "Queued" and decision.requeue_after == 50 and not decision.delete_job
    # While it lasts, the Started condition says why the job waits, and one Warning event tells it.
    started = next(c for c in decision.status.conditions if c.type == "Started")
    assert (started.status, started.reason) == ("False", "ImagePullBackOff")
    assert "runner:1" in started.message
    (event,) = transition_events(VideoJobStatus(phase="Queued"), decision.status)
    assert (event.type, event.reason) == ("Warning", "ImagePullBackOff")
    assert transition_events(decision.status, decision.status) == []

    old = pod("Pending", state=waiting, created=NOW - timedelta(seconds=61))
    decision = decide(videojob(), job(), [old], NOW, image_pull_grace=60)
    assert decision.status.phase == "Failed" and decision.delete_job
    assert decision.status.reason == FailureReason.IMAGE_PULL_FAILED
    assert decision.status.error_message == "The job could not start: the runner image could not be pulled."
    assert decision.detail is not None and "runner:1" in decision.detail


def test_a_missing_secret_fails_as_internal_after_the_grace() -> None:
    waiting = {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "s" not found'}}
    old = pod("Pending", state=waiting, created=NOW - timedelta(seconds=61))
    decision = decide(videojob(), job(), [old], NOW, image_pull_grace=60)
    assert (decision.status.phase, decision.status.reason) == ("Failed", FailureReason.INTERNAL)
    assert decision.detail is not None and 'secret "s" not found' in decision.detail


def test_cancel_deletes_the_job_and_is_sticky() -> None:
    spec = make_spec(cancel_requested=True)
    decision = decide(
        videojob(spec), job(), [pod("Running", state={"running": {"startedAt": stamp(NOW)}})], NOW
    )
    assert decision.status.phase == "Cancelled" and decision.delete_job
    assert decision.status.reason == FailureReason.CANCELLED
    assert decision.record_outcome
    cancelled = videojob(
        spec,
        status=decision.status.model_dump(mode="json", by_alias=True, exclude_none=True),
        outcome="Cancelled",
    )
    # Later, the Job's deletion still pending: delete again; Job gone: nothing to do.
    assert decide(cancelled, job(), [], NOW).delete_job
    assert decide(cancelled, None, [], NOW) == decide(cancelled, None, [], NOW + timedelta(hours=1))
    assert not decide(cancelled, None, [], NOW).create_job


def test_terminal_phases_the_operator_recorded_are_sticky() -> None:
    status = {"phase": "Completed", "progress": 100, "resultURL": "https://r/x.mp4"}
    done = videojob(status=status, outcome="Completed")
    failing_job = job(("Failed", "BackoffLimitExceeded"))
    decision = decide(done, failing_job, [], NOW)
    assert decision.status.phase == "Completed" and not decision.delete_job and not decision.create_job
    # A status changed behind the operator's back goes back to the recorded phase.
    tampered = videojob(status={**status, "phase": "Failed"}, outcome="Completed")
    assert decide(tampered, None, [], NOW).status.phase == "Completed"


def test_a_terminal_status_the_operator_did_not_record_is_decided_again() -> None:
    """What a runner wrote into another job's status (phase, result URL) is not believed."""
    forged = {"phase": "Completed", "progress": 100, "resultURL": "https://evil.example/phish.mp4"}
    spec = make_spec()
    queued = videojob(spec, status=forged)
    decision = decide(queued, None, [], NOW)  # no Job yet: create it, as for any new VideoJob
    assert decision.create_job
    running = pod("Running", state={"running": {"startedAt": stamp(NOW)}})
    decision = decide(queued, job(), [running], NOW)
    assert decision.status.phase == "Processing" and decision.status.result_url is None
    assert not decision.record_outcome
    # When the Job really ends, the result is the runner's own report from its termination message.
    real_url = f"https://storage.googleapis.com/out/{spec.job_id}.mp4"
    report = result_json(
        ok=True,
        resultURL=real_url,
        outputURI=spec.output_uri,
        metrics={"spinUpTime": 1, "generationTime": 2, "totalTime": 3},
    )
    done = pod("Succeeded", state=terminated(0, report, "Completed"))
    decision = decide(queued, job(("Complete", "")), [done], NOW)
    assert decision.status.phase == "Completed" and decision.status.result_url == real_url
    assert decision.record_outcome


def test_a_result_for_another_output_is_refused() -> None:
    spec = make_spec()
    report = result_json(
        ok=True,
        resultURL="https://storage.googleapis.com/out/other.mp4",
        outputURI="gs://out/other.mp4",
        metrics={"spinUpTime": 1, "generationTime": 2, "totalTime": 3},
    )
    done = pod("Succeeded", state=terminated(0, report, "Completed"))
    decision = decide(videojob(spec), job(("Complete", "")), [done], NOW)
    assert (decision.status.phase, decision.status.reason) == ("Failed", FailureReason.INTERNAL)
    assert decision.status.result_url is None


def test_a_lost_job_fails_instead_of_running_twice() -> None:
    vj = videojob(status={"phase": "Processing", "progress": 10, "jobName": "vj-x"})
    decision = decide(vj, None, [], NOW)
    assert not decision.create_job
    assert (decision.status.phase, decision.status.reason) == ("Failed", FailureReason.INTERRUPTED)


def test_a_job_of_an_earlier_videojob_with_the_same_name_is_not_adopted() -> None:
    foreign = job()
    foreign["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    decision = decide(videojob(), foreign, [], NOW)
    assert not decision.create_job and decision.requeue_after is not None
    assert decision.status.phase == "Queued" and decision.status.job_name is None


def test_invalid_spec_fails_without_a_job() -> None:
    vj = videojob()
    vj["spec"]["parameters"] = {"veo": {}}  # the wrong model's section
    decision = decide(vj, None, [], NOW)
    assert (decision.status.phase, decision.status.reason) == ("Failed", FailureReason.INVALID_INPUT)
    assert not decision.create_job and decision.status.job_name is None


def test_status_patch_writes_only_changes_and_keeps_transition_times() -> None:
    spec = make_spec()
    vj = videojob(spec)
    first = decide(vj, job(), [], NOW).status
    patch = status_patch(vj, first)
    assert patch is not None and patch["status"]["phase"] == "Queued"
    written = videojob(spec, status={**patch["status"], "kopf": {"progress": {}}})
    assert status_patch(written, decide(written, job(), [], NOW + timedelta(minutes=5)).status) is None
    assert current_status(written) == first  # kopf's field is ignored, ours read back unchanged
    later = decide(written, job(), [pod("Running", state={"running": {"startedAt": stamp(NOW)}})], NOW)
    changes = status_patch(written, later.status)
    assert (
        changes is not None and changes["status"]["phase"] == "Processing" and "kopf" not in changes["status"]
    )
    started = next(c for c in later.status.conditions if c.type == "Started")
    finished = next(c for c in later.status.conditions if c.type == "Finished")
    assert (
        started.status == "True" and finished.last_transition_time == first.conditions[1].last_transition_time
    )


def test_status_patch_clears_fields_no_longer_set() -> None:
    vj = videojob(status={"phase": "Queued", "progress": 0, "errorMessage": "stale"})
    patch = status_patch(vj, VideoJobStatus(phase="Queued"))
    assert patch is not None and patch["status"]["errorMessage"] is None


def test_transition_events() -> None:
    queued, processing = VideoJobStatus(phase="Queued"), VideoJobStatus(phase="Processing", job_name="vj-1")
    assert transition_events(queued, queued) == []
    (started,) = transition_events(queued, processing)
    assert (started.type, started.reason) == ("Normal", "Started")
    failed = VideoJobStatus(
        phase="Failed", reason=FailureReason.TIMEOUT, error_message="too slow", job_name="vj-1"
    )
    (event,) = transition_events(processing, failed)
    assert (event.type, event.message) == ("Warning", "timeout: too slow")
    held = decide(videojob(), job(suspend=True), [], NOW).status
    (note,) = transition_events(VideoJobStatus(), held)
    assert (note.reason, note.message) == ("WaitingForCapacity", "The job is waiting for a free GPU slot.")
    assert transition_events(held, held) == []


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (45.9, "45s"), (65, "1m5s"), (7203, "2h0m3s")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# ---------------------------------------------------------------------------------------------------
# Admission, cache, work queue, settings
# ---------------------------------------------------------------------------------------------------


def gpu_job(name: str, accepted: str, *, suspend: bool, finished: bool = False, kueue: bool = False) -> Json:
    labels = {KUEUE_QUEUE_LABEL: "q"} if kueue else {}
    conditions = [{"type": "Complete", "status": "True"}] if finished else []
    return {
        "metadata": {"name": name, "annotations": {ORDER_ANNOTATION: accepted}, "labels": labels},
        "spec": {"suspend": suspend},
        "status": {"conditions": conditions},
    }


def test_admission_releases_the_oldest_within_the_limit() -> None:
    jobs = [
        gpu_job("c", "2026-11-03T12:00:03", suspend=True),
        gpu_job("a", "2026-11-03T12:00:01", suspend=False),
        gpu_job("b", "2026-11-03T12:00:02", suspend=True),
        gpu_job("d", "2026-11-03T12:00:00", suspend=True, kueue=True),
        gpu_job("e", "2026-11-03T11:00:00", suspend=False, finished=True),
    ]
    assert jobs_to_release(jobs, 1) == []
    assert jobs_to_release(jobs, 2) == ["b"]
    assert jobs_to_release(jobs, 5) == ["b", "c"]
    assert jobs_to_release(jobs, 0) == ["b", "c"]  # no limit any more: nothing stays held


def test_cache_keeps_the_newest_version_and_indexes_children_by_videojob() -> None:
    cache = Cache()
    vj = videojob()
    key = ("ns", vj["metadata"]["name"])
    newer = {**vj, "metadata": {**vj["metadata"], "resourceVersion": "9"}}
    assert cache.put_videojob(newer)
    assert not cache.put_videojob(vj)  # resourceVersion 7: older, ignored
    assert not cache.put_videojob(newer)  # the watch's echo of a write-through: nothing new
    assert (cache.videojob(key) or {})["metadata"]["resourceVersion"] == "9"
    child = {"metadata": {"name": "p1", "namespace": "ns", "uid": "u", "labels": {LABEL_VIDEOJOB: key[1]}}}
    cache.put_pod(child)
    cache.put_job(child)
    assert cache.pods(key) == [child] and cache.job(key) == child
    cache.forget_pod(child)
    cache.forget_job(child)
    assert cache.pods(key) == [] and cache.job(key) is None
    assert cache.sizes() == {"videojobs": 1, "jobs": 0, "pods": 0}


def test_work_queue_dedupes_and_never_runs_one_key_twice_at_once() -> None:
    running: set[str] = set()
    overlaps: list[str] = []
    calls: list[str] = []
    lock = threading.Lock()

    def handle(key: str, urgent: bool) -> None:
        with lock:
            if key in running:
                overlaps.append(key)
            running.add(key)
            calls.append(key)
        time.sleep(0.05)
        with lock:
            running.discard(key)

    queue: WorkQueue[str] = WorkQueue(handle, workers=4)
    queue.start()
    try:
        for _ in range(20):
            queue.add("a")
            queue.add("b")
            time.sleep(0.005)
        deadline = time.monotonic() + 5
        while not queue.idle() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not overlaps
        assert (
            2 <= calls.count("a") < 20 and 2 <= calls.count("b") < 20
        )  # coalesced, and re-run when re-added
        before = len(calls)
        queue.add("later", after=0.2)
        time.sleep(0.1)
        assert len(calls) == before
        time.sleep(0.3)
        assert calls[-1] == "later"
    finally:
        queue.stop()


def test_work_queue_retries_a_failing_key_with_backoff() -> None:
    attempts: list[float] = []

    def flaky(key: str, urgent: bool) -> None:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise RuntimeError("API hiccup")

    queue: WorkQueue[str] = WorkQueue(flaky, workers=1)
    queue.start()
    try:
        queue.add("k")
        deadline = time.monotonic() + 5
        while len(attempts) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(attempts) == 3 and queue.errors == 2
        assert attempts[1] - attempts[0] >= 0.45 and attempts[2] - attempts[1] >= 0.95
    finally:
        queue.stop()


def test_peering_priority_is_stable_per_replica() -> None:
    assert default_priority("operator-abc") == default_priority("operator-abc")
    assert default_priority("operator-abc") != default_priority("operator-abd")


def test_operator_command_refuses_standalone_with_peering() -> None:
    result = CliRunner().invoke(app, ["operator", "--standalone", "--peering", "vividflow"])
    assert result.exit_code != 0 and "exclude each other" in result.output


def test_work_queue_serves_urgent_keys_first_without_starving_the_rest() -> None:
    order: list[str] = []
    gate = threading.Event()

    def handle(key: str, urgent: bool) -> None:
        if key == "block":
            gate.wait(5)
            return
        order.append(f"{key}:{'urgent' if urgent else 'normal'}")

    queue: WorkQueue[str] = WorkQueue(handle, workers=1, fairness=3)
    queue.start()
    try:
        queue.add("block")
        time.sleep(0.1)  # the only worker is busy: everything below waits
        for index in range(3):
            queue.add(f"n{index}")
        for index in range(6):
            queue.add(f"u{index}", urgent=True)
        queue.add("n0", urgent=True)  # promoted, handled once
        gate.set()
        deadline = time.monotonic() + 5
        while not queue.idle() and time.monotonic() < deadline:
            time.sleep(0.01)
        # Three urgent keys, then the normal lane's turn (fairness 3), and so on; n0, promoted, runs once.
        assert order == [
            "u0:urgent",
            "u1:urgent",
            "u2:urgent",
            "n0:urgent",
            "n1:normal",
            "u3:urgent",
            "u4:urgent",
            "u5:urgent",
            "n2:normal",
        ]
    finally:
        queue.stop()
