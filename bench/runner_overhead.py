"""What the runner costs around the model: runner end to end against the Wan pipeline call alone.

    python bench/runner_overhead.py [--cold-runs 3] [--warm-runs 7] [--threads 1]

It builds the tiny random-weight Wan 2.1 I2V pipeline of the tests (tests/fixtures/tiny_wan.py) in a
temporary directory and runs one small job (32x32, 9 frames, 2 steps) in two ways:

- cold: a fresh ``python -m vividflow.runner --spec-file`` process, timed end to end from outside
  (interpreter start, imports, model load, input read, generation, MP4 encode, probe, write, result),
  against the pipeline's own call inside that process. The child runs the runner module exactly as
  ``-m`` does (``runpy``) with one addition: ``WanModel._denoise``, the method that calls the
  pipeline, is timed. The runner's ``generation_time`` (pipeline plus MP4 encode) is shown too.
- warm: jobs on one :class:`Runner` in this process after a first, discarded one (median of N)
  against the median of calling the same loaded pipeline object directly with the same arguments
  (no progress callback); the two alternate so that drift on a shared machine hits both alike.

The ratio is runner total / pipeline alone. Prints a few lines, then one JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from vividflow.jobspec import JobParameters, JobSpec, ModelName, WanParams  # noqa: E402

PARAMS = {"width": 32, "height": 32, "length": 9, "steps": 2, "seed": 42}
PROMPT = "a lighthouse in a storm, waves crashing"

_CHILD = """
import atexit, json, os, runpy, time
from vividflow.runner.models import wan

calls = []
original = wan.WanModel._denoise

def timed(self, *args, **kwargs):
    started = time.perf_counter()
    try:
        return original(self, *args, **kwargs)
    finally:
        calls.append(time.perf_counter() - started)

wan.WanModel._denoise = timed
atexit.register(lambda: open(os.environ["BENCH_PIPELINE_TIMES"], "w").write(json.dumps(calls)))
runpy.run_module("vividflow.runner", run_name="__main__", alter_sys=True)
"""


def input_png() -> bytes:
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((40, 30)).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def make_spec(job_id: str, input_path: Path, output_path: Path) -> JobSpec:
    return JobSpec(
        job_id=job_id,
        owner="bench",
        model=ModelName.WAN21,
        prompt=PROMPT,
        input_uri=str(input_path),
        parameters=JobParameters(wan=WanParams.model_validate(PARAMS)),
        output_uri=str(output_path),
        created_at=datetime.now(UTC),
    )


def cold_run(index: int, work: Path, model_dir: Path, input_path: Path, threads: int) -> dict[str, float]:
    """One fresh runner process; its wall time, the pipeline call inside it and its metrics."""
    job_id = f"cold-{index}"
    data_dir = work / "cold-data"
    spec_file = work / f"{job_id}.json"
    spec_file.write_text(
        make_spec(job_id, input_path, data_dir / "results" / f"{job_id}.mp4").model_dump_json()
    )
    times_file = work / f"{job_id}.pipeline.json"
    env = {key: value for key, value in os.environ.items() if not key.startswith("VIVID_")}
    env |= {
        "VIVID_WAN_MODEL": str(model_dir),
        "VIVID_DATA_DIR": str(data_dir),
        "VIVID_TERMINATION_LOG": str(work / f"{job_id}.termination-log"),
        "BENCH_PIPELINE_TIMES": str(times_file),
        "OMP_NUM_THREADS": str(threads),
    }
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, "--spec-file", str(spec_file)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"cold run {index} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    [pipeline] = json.loads(times_file.read_text())
    metrics = result["metrics"]
    return {
        "wall": wall,
        "pipeline": pipeline,
        "spin_up_time": metrics["spin_up_time"],
        "generation_time": metrics["generation_time"],
        "upload_time": metrics["upload_time"],
    }


def warm_runs(runs: int, work: Path, model_dir: Path, input_path: Path) -> dict[str, Any]:
    """Runner jobs and direct pipeline calls on one loaded pipeline, alternating; their times."""

    from vividflow.runner.core import ModelLoader, Runner
    from vividflow.runner.models.wan import WanModel, fit_image, pipeline_arguments
    from vividflow.settings import Settings
    from vividflow.storage.images import decode_image

    settings = Settings(wan_model=str(model_dir), data_dir=work / "warm-data")
    model = WanModel.load(settings)
    loaders: dict[ModelName, ModelLoader] = {ModelName.WAN21: lambda _: model}
    runner = Runner(settings, loaders)
    pipe = model._pipe  # the very pipeline object the runner calls
    image = fit_image(decode_image(input_path.read_bytes()), PARAMS["width"], PARAMS["height"])
    params = WanParams.model_validate(PARAMS)

    def run_job(job_id: str) -> tuple[float, dict[str, float]]:
        spec = make_spec(job_id, input_path, settings.results_dir / f"{job_id}.mp4")
        started = time.perf_counter()
        result = runner.run(spec)
        elapsed = time.perf_counter() - started
        if not result.ok or result.metrics is None:
            raise SystemExit(f"warm job {job_id} failed: {result.reason}: {result.error_message}")
        return elapsed, result.metrics.model_dump()

    def call_pipeline() -> float:
        started = time.perf_counter()
        pipe(**pipeline_arguments(PROMPT, params, image, model.device))
        return time.perf_counter() - started

    first_job, _ = run_job("warm-first")  # the process's first generation: lazy initialisation
    call_pipeline()
    runner_times: list[float] = []
    pipeline_times: list[float] = []
    metrics: list[dict[str, float]] = []
    for index in range(runs):
        elapsed, job_metrics = run_job(f"warm-{index}")
        runner_times.append(elapsed)
        metrics.append(job_metrics)
        pipeline_times.append(call_pipeline())
    return {
        "first_job": first_job,
        "runner": runner_times,
        "pipeline": pipeline_times,
        "spin_up_time": statistics.median(m["spin_up_time"] for m in metrics),
        "generation_time": statistics.median(m["generation_time"] for m in metrics),
        "upload_time": statistics.median(m["upload_time"] for m in metrics),
        "device": model.device,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cold-runs", type=int, default=3, help="fresh runner processes (median)")
    parser.add_argument("--warm-runs", type=int, default=7, help="warm jobs and pipeline calls (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (OMP_NUM_THREADS)")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from tests.fixtures.tiny_wan import build_tiny_wan_model

    torch.set_num_threads(args.threads)
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

    with tempfile.TemporaryDirectory(prefix="vividflow-bench-") as tmp:
        work = Path(tmp)
        model_dir = build_tiny_wan_model(work / "tiny-wan")
        input_path = work / "input.png"
        input_path.write_bytes(input_png())

        cold = [cold_run(i, work, model_dir, input_path, args.threads) for i in range(args.cold_runs)]
        warm = warm_runs(args.warm_runs, work, model_dir, input_path)

    def median(key: str) -> float:
        return statistics.median(run[key] for run in cold)

    cold_wall, cold_pipeline = median("wall"), median("pipeline")
    warm_runner, warm_pipeline = statistics.median(warm["runner"]), statistics.median(warm["pipeline"])
    cold_ratio, warm_ratio = cold_wall / cold_pipeline, warm_runner / warm_pipeline
    size = f"{PARAMS['width']}x{PARAMS['height']}, {PARAMS['length']} frames, {PARAMS['steps']} steps"
    print(f"tiny Wan 2.1 I2V ({size}) on {warm['device']}, {args.threads} torch thread(s)")
    print(
        f"cold  (median of {args.cold_runs} processes): runner end to end {cold_wall:7.3f} s"
        f"   pipeline call inside {cold_pipeline:7.3f} s   ratio {cold_ratio:6.1f}x"
    )
    print(
        f"      runner metrics: spin_up {median('spin_up_time'):.3f} s (model load, from Runner()),"
        f" generation {median('generation_time'):.3f} s (pipeline + MP4 encode),"
        f" upload {median('upload_time'):.3f} s (probe + write)"
    )
    outside = cold_wall - median("spin_up_time") - median("generation_time") - median("upload_time")
    print(f"      outside the metrics: {outside:.3f} s (interpreter start, imports before Runner(), exit)")
    print(
        f"warm  (median of {args.warm_runs} jobs):      runner.run       {warm_runner:7.3f} s"
        f"   pipeline call alone  {warm_pipeline:7.3f} s   ratio {warm_ratio:6.2f}x"
    )
    print(
        f"      runner metrics: spin_up {warm['spin_up_time']:.3f} s (input read),"
        f" generation {warm['generation_time']:.3f} s, upload {warm['upload_time']:.3f} s;"
        f" first job in the process {warm['first_job']:.3f} s"
    )
    summary = {
        "device": warm["device"],
        "threads": args.threads,
        "params": PARAMS,
        "cold": {
            "runs": args.cold_runs,
            "runner_total_s": round(cold_wall, 4),
            "pipeline_s": round(cold_pipeline, 4),
            "ratio": round(cold_ratio, 2),
            "spin_up_time_s": median("spin_up_time"),
            "generation_time_s": median("generation_time"),
            "upload_time_s": median("upload_time"),
            "outside_metrics_s": round(outside, 3),
        },
        "warm": {
            "runs": args.warm_runs,
            "runner_total_s": round(warm_runner, 4),
            "pipeline_s": round(warm_pipeline, 4),
            "ratio": round(warm_ratio, 3),
            "spin_up_time_s": warm["spin_up_time"],
            "generation_time_s": warm["generation_time"],
            "upload_time_s": warm["upload_time"],
        },
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
