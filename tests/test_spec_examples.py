"""The API contract's own Python and curl examples, read from the spec and run unchanged but for
the URL, the key and the image path, against a real `vividflow serve` (veo3.1 on the fake Vertex)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import image_bytes
from tests.fixtures.fake_vertex import FakeVertex
from tests.ports import free_port

SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "vivid-flow-api.md"
SPEC_URL = "https://vivid.studioionique.com/api/v1"
SPEC_KEY = "your_api_key_here"


def spec_example(language: str) -> str:
    if not SPEC.is_file():
        pytest.skip(f"the API contract is not beside this checkout ({SPEC})")
    match = re.search(rf"```{language}\n(.*?)```", SPEC.read_text(), re.DOTALL)
    assert match, f"no {language} example in the spec"
    return match.group(1)


class Server:
    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key

    def adapt(self, example: str, image: Path) -> str:
        return (
            example.replace(SPEC_URL, f"{self.url}/api/v1")
            .replace(SPEC_KEY, self.key)
            .replace("/path/to/image.jpg", str(image))
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake_vertex: FakeVertex) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {
        **os.environ,
        "VIVID_DATA_DIR": str(data_dir),
        "VIVID_WORKERS": "1",
        "VIVID_PUBLIC_URL": f"http://127.0.0.1:{port}",
        **fake_vertex.settings_env(),
    }
    env.pop("VIVID_DATABASE_URL", None)
    created = subprocess.run(
        [sys.executable, "-m", "vividflow.cli", "keys", "create", "--user", "spec@example.com"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    process = subprocess.Popen(
        [sys.executable, "-m", "vividflow.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "vividflow serve did not start"
            time.sleep(0.2)
        yield Server(url, key)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_python_example(server: Server, fake_vertex: FakeVertex, tmp_path: Path) -> None:
    fake_vertex.set_scenario(polls=1)
    (tmp_path / "image.jpg").write_bytes(image_bytes("JPEG"))
    script = tmp_path / "example.py"
    script.write_text(server.adapt(spec_example("python"), tmp_path / "image.jpg"))
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Job submitted: " in result.stdout
    assert f"Video URL: {server.url}/files/results/" in result.stdout
    assert fake_vertex.submits[0].body["parameters"]["durationSeconds"] == 6


def test_curl_example(server: Server, fake_vertex: FakeVertex, tmp_path: Path) -> None:
    fake_vertex.set_scenario(polls=1)
    image = tmp_path / "image.jpg"
    image.write_bytes(image_bytes("JPEG"))
    script = tmp_path / "example.sh"
    script.write_text(server.adapt(spec_example("bash"), image))
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert '"status":"queued"' in result.stdout
    match = re.search(r"Video ready: (\S+)", result.stdout)
    assert match and match.group(1).startswith(f"{server.url}/files/results/"), result.stdout
    assert httpx.get(match.group(1)).headers["content-type"] == "video/mp4"
