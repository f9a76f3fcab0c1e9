"""A real `vividflow serve` (embedded mode, JSON logs) taken through everything that handles a secret:
an API key from `vividflow keys create` (also sent in a query string and as a Bearer token), a web
registration and log-in with a password and a session cookie, webhook secrets shown and rotated (API
and web app), a real job on the tiny Wan pipeline whose signed webhook delivery reaches a receiver,
and a Veo job (fake Vertex AI, its API key in the server's settings) whose first poll fails, so that
its worker logs a warning about it. Then every line the server and its worker wrote is a JSON
object, the worker's warning carries the job's id, and no line holds any of those secrets."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import image_bytes
from tests.api.web_client import post_form, signed_up
from tests.fixtures.fake_vertex import FakeVertex
from tests.fixtures.webhook_receiver import webhook_receiver
from tests.serve import running_server, server_environment, settings_env

pytestmark = pytest.mark.slow

LOG_FIELDS = {"time", "level", "logger", "message", "component"}
_WEB_SECRET = re.compile(r'id="webhook-secret" value="(whsec_[^"]+)"')


def cli_key(env: dict[str, str], work_dir: Path, email: str) -> str:
    """A key made as an operator would: `vividflow keys create --user` (printed on the last line)."""
    done = subprocess.run(
        [sys.executable, "-m", "vividflow.cli", "keys", "create", "--user", email],
        env=server_environment(env, work_dir),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]
    assert key.startswith("vf_")
    return key


def wait_terminal(url: str, headers: dict[str, str], job_id: str, timeout: float = 240.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = httpx.get(f"{url}/api/v1/status/{job_id}", headers=headers, timeout=30).json()
        if body["status"] in {"completed", "failed", "cancelled"}:
            return body
        assert time.monotonic() < deadline, f"job {job_id} still {body} after {timeout} s"
        time.sleep(0.1)


def json_record(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        raise AssertionError(f"not a JSON log line: {line!r}") from None
    assert isinstance(record, dict) and record.keys() >= LOG_FIELDS, line
    return record


def wait_logged(server_log: Path, found: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not found(server_log.read_text(errors="replace")):
        assert time.monotonic() < deadline, f"no {what} in the log after {timeout} s"
        time.sleep(0.05)


def submit(url: str, headers: dict[str, str], **fields: str) -> str:
    response = httpx.post(
        f"{url}/api/v1/generate",
        headers=headers,
        data={"prompt": "waves at dusk", **fields},
        files={"image": ("in.png", image_bytes("PNG", (48, 32)), "image/png")},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def test_json_logs_of_a_whole_run_hold_no_secret(
    tiny_wan_model_dir: Path, fake_vertex: FakeVertex, tmp_path: Path
) -> None:
    password = f"quartz-meadow-{secrets.token_hex(8)}"
    fake_vertex.set_scenario(polls=1, poll_failures=1)
    with webhook_receiver(tmp_path) as receiver:
        env = {
            **settings_env(
                data_dir=tmp_path / "data",
                workers=1,
                wan_model=tiny_wan_model_dir,
                log_format="json",
                rate_limits=["100000/hour"],
            ),
            **receiver.env(),
            **fake_vertex.settings_env(),
            "OMP_NUM_THREADS": "1",
        }
        key = cli_key(env, tmp_path, "logan@example.com")
        headers = {"X-API-Key": key}
        used = {"API key": key, "password": password, "Vertex AI key": fake_vertex.api_key}

        with running_server(env, tmp_path) as server:
            url = server.url
            # The API: the webhook secret shown, rotated; the key in a query string and as a Bearer.
            first = httpx.get(f"{url}/api/v1/webhooks/secret", headers=headers).json()["secret"]
            rotated = httpx.post(f"{url}/api/v1/webhooks/secret/rotate", headers=headers).json()["secret"]
            used |= {"first webhook secret": first, "rotated webhook secret": rotated}
            receiver.trust(rotated)
            assert httpx.get(f"{url}/api/v1/usage?api_key={key}", headers=headers).status_code == 200
            assert httpx.get(f"{url}/healthz", headers={"Authorization": f"Bearer {key}"}).status_code == 200

            # The web app: register, log in, show and rotate the webhook secret.
            with httpx.Client(base_url=url, timeout=30) as browser:
                signed_up(browser, "wendy@example.com", password)
                used["session cookie"] = browser.cookies["vividflow_session"]
                for action in ("show", "rotate"):
                    page = post_form(browser, "/account", "/account/webhook-secret", {"action": action})
                    shown = _WEB_SECRET.search(page.text)
                    assert page.status_code == 200 and shown, page.text[:500]
                    used[f"web webhook secret ({action})"] = shown.group(1)

            # A Veo job whose worker logs a warning; a Wan job with a webhook, delivered signed.
            veo_job = submit(url, headers, model="veo3.1")
            assert wait_terminal(url, headers, veo_job)["status"] == "completed"
            wan = {"model": "wan2.1", "width": "32", "height": "32", "length": "9", "steps": "2"}
            job_id = submit(url, headers, **wan, webhook_url=receiver.url("logs"))
            body = wait_terminal(url, headers, job_id)
            assert body["status"] == "completed", body
            (delivery,) = receiver.wait_for(1, "logs", timeout=60)
            assert delivery.verified_by == {rotated} and delivery.payload()["status"] == "completed"
            used["webhook signature header"] = delivery.headers["webhook-signature"]
            used |= {f"webhook signature {n}": value for n, value in enumerate(delivery.signatures)}
            assert (
                httpx.get(f"{url}/api/v1/status/{job_id}?api_key={key}", headers=headers).status_code == 200
            )
            wait_logged(server.log_path, lambda text: f"/api/v1/status/{job_id}?api_key=" in text, "access")
        output = server.log()

    records = [json_record(line) for line in output.splitlines()]
    warnings = [record for record in records if record["message"].startswith("Polling Veo failed")]
    assert warnings, "the worker's warning is not in the log"
    assert (warnings[0]["component"], warnings[0]["job_id"], warnings[0]["level"]) == (
        "worker",
        veo_job,
        "WARNING",
    )
    access = [record for record in records if record["logger"] == "uvicorn.access"]
    assert {"client", "method", "path", "status"} <= access[0].keys()
    assert any(
        record["path"] == f"/api/v1/status/{job_id}?api_key=REDACTED" and record["status"] == 200
        for record in access
    ), [record["path"] for record in access]
    assert {record["component"] for record in records} >= {"api", "worker"}
    for name, secret in used.items():
        assert secret not in output, f"the {name} is in the server's log"
