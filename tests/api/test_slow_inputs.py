"""Image URLs that never answer do not starve the server: downloads wait on the event loop, not on the
threads that serve the database and the plain routes, and each user may have only a few at once."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.api.conftest import image_bytes
from tests.fixtures.https_server import HttpsServer
from tests.fixtures.kube import wait_for
from tests.serve import create_key, running_server, settings_env

USERS, PER_USER = 12, 4
"""48 downloads held at once: more than the 40 threads of the framework's pool for plain routes."""


def test_held_image_downloads_leave_the_server_responsive(
    tmp_path: Path, sqlite_template: Path, https_server: HttpsServer
) -> None:
    database = tmp_path / "vividflow.db"
    shutil.copy(sqlite_template, database)
    url = f"sqlite:///{database}"
    release = threading.Event()
    image_url = https_server.add("held.png", image_bytes(), "image/png", hold=release)
    env = {
        **settings_env(
            database_url=url,
            data_dir=tmp_path / "data",
            workers=0,
            migrate_on_start=False,
            max_url_fetches_per_user=PER_USER,
            fetch_timeout_seconds=300,
            rate_limits=["100000/hour"],
        ),
        **https_server.env(),
    }
    keys = [create_key(url, f"user{n}@example.com") for n in range(USERS)]
    bystander = create_key(url, "bystander@example.com")
    results = (tmp_path / "data" / "results").resolve()
    results.mkdir(parents=True)
    video = "0f7c1e2a-1111-4222-8333-444455556666.mp4"
    (results / video).write_bytes(b"\0" * 2048)

    with running_server(env, tmp_path) as server, ThreadPoolExecutor(USERS * PER_USER) as pool:

        def generate(key: str) -> int:
            response = httpx.post(
                f"{server.url}/api/v1/generate",
                headers={"X-API-Key": key},
                json={"prompt": "a cat", "model": "veo3.1", "image_url": image_url},
                timeout=300,
            )
            return response.status_code

        try:
            pending = [pool.submit(generate, key) for key in keys for _ in range(PER_USER)]
            wait_for(
                "every download to be held at the image server",
                lambda: https_server.waiting("held.png") == USERS * PER_USER,
                timeout=120,
            )
            # One more for a user at the limit is refused at once.
            over = httpx.post(
                f"{server.url}/api/v1/generate",
                headers={"X-API-Key": keys[0]},
                json={"prompt": "a cat", "model": "veo3.1", "image_url": image_url},
                timeout=30,
            )
            assert over.status_code == 429, over.text
            assert over.json()["error"] == "Too many image downloads" and over.json()["retry_after"] == 1

            # Everyone else is served while all of them wait.
            headers = {"X-API-Key": bystander}
            for path in ("/api/v1/usage", "/api/v1/keys", "/api/v1/history"):
                assert httpx.get(f"{server.url}{path}", headers=headers, timeout=10).status_code == 200
            assert httpx.get(f"{server.url}/files/results/{video}", timeout=10).content == b"\0" * 2048
            assert https_server.waiting("held.png") == USERS * PER_USER  # none was let go meanwhile
        finally:
            release.set()
        assert [future.result() for future in pending] == [202] * (USERS * PER_USER)
