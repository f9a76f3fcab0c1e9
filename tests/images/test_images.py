"""The built images, run as containers the way the chart runs them (``tests/images/podman.py``): the
``api`` image migrates PostgreSQL as its migration Job would and serves its probes; the ``runner-veo``
image completes a veo3.1 job against the fake Vertex AI server and the GCS emulator."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlalchemy import create_engine, inspect

from tests.fixtures.fake_vertex import FakeVertex
from tests.fixtures.gcs_emulator import GcsEmulator
from tests.fixtures.kube import wait_for
from tests.images import podman
from tests.ports import free_port
from vividflow.jobspec import JobParameters, JobSpec, ModelName, RunResult, VeoParams
from vividflow.runner.video import probe_mp4

pytestmark = pytest.mark.timeout(600)
UID = "10001"


@pytest.fixture(scope="module")
def images() -> podman.Images:
    return podman.built_images()


def test_both_images_run_as_uid_10001_on_a_read_only_root(images: podman.Images) -> None:
    for image in (images.api, images.runner_veo):
        assert podman.image_user(image) == f"{UID}:{UID}"
        done = podman.run(
            image, "-c", "id -u; touch /tmp/ok && echo tmp-writable; touch /x", entrypoint="/bin/sh"
        )
        lines = done.stdout.split()
        assert lines[:2] == [UID, "tmp-writable"], done.stderr
        assert "Read-only file system" in done.stderr  # the root itself cannot be written


def test_the_api_image_migrates_postgresql_and_serves_its_probes(
    images: podman.Images, fresh_postgres_url: str
) -> None:
    env = {"VIVID_DATABASE_URL": fresh_postgres_url}
    migrated = podman.run(images.api, "db", "upgrade", env=env)  # as the chart's migration Job runs it
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    engine = create_engine(fresh_postgres_url)
    try:
        assert {"users", "api_keys", "jobs", "alembic_version"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()

    port = free_port()
    served_env = {
        **env,
        "VIVID_MIGRATE_ON_START": "false",  # the migration Job did it
        "VIVID_WORKERS": "0",
        "VIVID_DATA_DIR": "/tmp/vividflow",
    }
    with podman.detached(
        images.api, "serve", "--host", "127.0.0.1", "--port", str(port), env=served_env
    ) as name:
        base = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            assert podman.running(name), podman.logs(name)
            try:
                return httpx.get(f"{base}/healthz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("the API container", answers, timeout=120)
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": True, "rate_limit_storage": True, "backend": True}


def test_the_runner_veo_image_completes_a_veo_job(
    images: podman.Images, fake_vertex: FakeVertex, gcs_emulator: GcsEmulator, tmp_path: Path
) -> None:
    fake_vertex.set_scenario(polls=2)
    bucket = gcs_emulator.make_bucket("vividflow-images-test")
    source = tmp_path / "input.png"
    Image.new("RGB", (64, 48), (30, 90, 160)).save(source)
    gcs_emulator.client().bucket(bucket).blob("inputs/job.png").upload_from_filename(source)
    spec = JobSpec(
        job_id="0b6a0b8e-4b1e-4c43-9a55-6c1d2f3e4a5b",
        owner="user-1",
        model=ModelName.VEO31,
        prompt="a paper boat on a pond",
        input_uri=f"gs://{bucket}/inputs/job.png",
        parameters=JobParameters(veo=VeoParams()),
        output_uri=f"gs://{bucket}/videos/job.mp4",
        created_at=datetime.now(UTC),
    )
    shared = tmp_path / "termination"
    shared.mkdir()
    shared.chmod(0o777)  # the container's uid 10001 writes its termination message here
    env = {
        "STORAGE_EMULATOR_HOST": gcs_emulator.endpoint,
        "VIVID_TERMINATION_LOG": "/termination/log",
        **fake_vertex.settings_env(poll_initial=0.05, poll_max=0.05),
    }
    done = podman.run(
        images.runner_veo,
        "python",
        "-m",
        "vividflow.runner",
        "--spec-json",
        spec.model_dump_json(by_alias=True),
        env=env,
        volumes=[(shared, "/termination")],
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = RunResult.model_validate(json.loads((shared / "log").read_text()))
    assert result.ok and result.output_uri == spec.output_uri
    assert len(fake_vertex.submits) == 1
    video = tmp_path / "video.mp4"
    gcs_emulator.client().bucket(bucket).blob("videos/job.mp4").download_to_filename(video)
    assert probe_mp4(video).frames > 0
