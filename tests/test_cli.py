"""The `vividflow` console script: keys and database commands on a real database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, inspect


def vividflow(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VIVID_DATA_DIR": str(data_dir)}
    env.pop("VIVID_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "vividflow.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_keys_lifecycle(tmp_path: Path) -> None:
    created = vividflow(tmp_path, "keys", "create", "--user", "ann@example.com", "--name", "ci")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("vf_") and len(key) > 40

    listed = vividflow(tmp_path, "keys", "list")
    assert listed.returncode == 0
    line = listed.stdout.strip()
    assert "ann@example.com" in line and "active" in line and key[:10] in line and key not in line
    key_id = line.split()[0]

    assert vividflow(tmp_path, "keys", "revoke", key_id).returncode == 0
    assert "revoked" in vividflow(tmp_path, "keys", "list", "--user", "ann@example.com").stdout
    missing = vividflow(tmp_path, "keys", "revoke", "no-such-id")
    assert missing.returncode == 1 and "no API key with id no-such-id" in missing.stderr


def test_db_upgrade_creates_schema(tmp_path: Path) -> None:
    result = vividflow(tmp_path, "db", "upgrade")
    assert result.returncode == 0 and "up to date" in result.stdout
    tables = set(inspect(create_engine(f"sqlite:///{tmp_path / 'vividflow.db'}")).get_table_names())
    assert {"users", "api_keys", "jobs", "alembic_version"} <= tables
