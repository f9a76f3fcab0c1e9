"""The operator under a burst: N VideoJobs created at once against a real API server, with the operator
(``vividflow operator``, its own process) turning each into a Job. Beside it, the ceiling: the same N
Jobs created directly by one client with the same concurrency.

    python bench/operator_scale.py [--count 1000] [--clients 8] [--workers 8]

Latency is CR-to-Job: from just before the VideoJob's POST to the moment a watch on Jobs sees the Job
(creationTimestamp has 1 s resolution, so arrival times are taken from the watch). Throughput is N over
the time from the first POST to the last Job seen. Runs etcd + kube-apiserver (tests/kube/controlplane.py,
binaries from hack/kubebin/build.sh) without a controller manager: no Pods, only the CR -> Job path.
Prints the figures and one JSON line. Target: throughput at least half the ceiling, p99 under 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.kube import install_videojob_crd  # noqa: E402
from tests.kube.controlplane import ControlPlane  # noqa: E402
from vividflow.jobspec import (  # noqa: E402
    GROUP,
    LABEL_VIDEOJOB,
    PLURAL,
    VERSION,
    JobParameters,
    JobSpec,
    ModelName,
    videojob_manifest,
    videojob_name,
)
from vividflow.operator.jobs import job_manifest  # noqa: E402
from vividflow.settings import Settings  # noqa: E402

PYTHON = sys.executable


def videojob_bodies(namespace: str, count: int) -> dict[str, dict[str, Any]]:
    bodies = {}
    for _ in range(count):
        spec = make_spec()
        bodies[videojob_name(spec.job_id)] = videojob_manifest(spec, namespace)
    return bodies


def make_spec() -> JobSpec:
    job_id = str(uuid.uuid4())
    return JobSpec(
        job_id=job_id,
        owner="bench",
        model=ModelName.VEO31,
        prompt="a lighthouse in a storm",
        input_uri="gs://bench/in.png",
        parameters=JobParameters.for_model(ModelName.VEO31, {}),
        output_uri=f"gs://bench/{job_id}.mp4",
        created_at=datetime.now(UTC),
    )


def http_client(plane: ControlPlane, connections: int) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(plane.ca_path))
    context.load_cert_chain(str(plane.admin_cert_path), str(plane.admin_key_path))
    return httpx.Client(
        base_url=plane.server_url,
        verify=context,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=60.0,
    )


class JobWatch:
    """Records when each Job of a namespace is first seen on a watch (time.monotonic())."""

    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        self.seen: dict[str, float] = {}
        self._plane = plane
        self._namespace = namespace
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stop = threading.Event()

    def start(self) -> JobWatch:
        _, listing = self._plane.request("GET", f"/apis/batch/v1/namespaces/{self._namespace}/jobs")
        self._version = listing["metadata"]["resourceVersion"]
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._watch()
        except httpx.HTTPError:
            if not self._stop.is_set():
                raise

    def _watch(self) -> None:
        path = f"/apis/batch/v1/namespaces/{self._namespace}/jobs"
        params = {"watch": "1", "resourceVersion": self._version, "timeoutSeconds": "600"}
        with http_client(self._plane, 1) as client, client.stream("GET", path, params=params) as response:
            for line in response.iter_lines():
                if self._stop.is_set():
                    return
                if not line:
                    continue
                event = json.loads(line)
                if event["type"] == "ADDED":
                    with self._done:
                        self.seen.setdefault(event["object"]["metadata"]["name"], time.monotonic())
                        self._done.notify_all()

    def wait_for(self, names: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._done:
            while not names <= self.seen.keys():
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = len(names - self.seen.keys())
                    raise TimeoutError(f"{missing} of {len(names)} Jobs not seen after {timeout} s")
                self._done.wait(min(left, 1.0))

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Burst:
    name: str
    sent: dict[str, float]
    seen: dict[str, float]
    answered: dict[str, float]
    """When each POST was answered."""

    @property
    def post_rate(self) -> float:
        """How fast the burst itself was accepted by the API server (objects/s)."""
        return len(self.sent) / (max(self.answered.values()) - min(self.sent.values()))

    @property
    def latencies(self) -> list[float]:
        return sorted(self.seen[name] - sent for name, sent in self.sent.items())

    @property
    def throughput(self) -> float:
        first = min(self.sent.values())
        last = max(self.seen[name] for name in self.sent)
        return len(self.sent) / (last - first)

    def percentile(self, fraction: float) -> float:
        values = self.latencies
        return values[min(len(values) - 1, round(fraction * (len(values) - 1)))]

    def line(self) -> str:
        return (
            f"{self.name:<40} {self.throughput:8.1f} Jobs/s   latency p50 {self.percentile(0.5):6.2f} s"
            f"   p99 {self.percentile(0.99):6.2f} s   max {max(self.latencies):6.2f} s"
        )


def post_all(
    plane: ControlPlane, bodies: dict[str, dict[str, Any]], path: str, clients: int
) -> tuple[dict[str, float], dict[str, float]]:
    """POST ``bodies`` (by name) to ``path`` from ``clients`` threads sharing one HTTP client; when
    each request was sent and when it was answered."""
    sent: dict[str, float] = {}
    answered: dict[str, float] = {}
    lock = threading.Lock()
    with http_client(plane, clients) as client:

        def post(item: tuple[str, dict[str, Any]]) -> None:
            key, body = item
            started = time.monotonic()
            response = client.post(path, json=body)
            response.raise_for_status()
            with lock:
                sent[key] = started
                answered[key] = time.monotonic()

        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(post, bodies.items()))
    return sent, answered


def burst(
    plane: ControlPlane, namespace: str, bodies: dict[str, dict[str, Any]], path: str, clients: int, name: str
) -> Burst:
    """POST ``bodies`` (see :func:`post_all`), then wait until a watch has seen a Job of each name."""
    watch = JobWatch(plane, namespace).start()
    sent, answered = post_all(plane, bodies, path, clients)
    try:
        watch.wait_for(set(bodies), timeout=300)
    finally:
        watch.stop()
    return Burst(name, sent, {key: watch.seen[key] for key in bodies}, answered)


@contextmanager
def operator_process(
    plane: ControlPlane, namespace: str, workers: int, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "KUBECONFIG": str(plane.kubeconfig_path),
        "VIVID_KUBE_NAMESPACE": namespace,
        "VIVID_OPERATOR_RESYNC_SECONDS": "30",
    }
    command = [PYTHON, "-m", "vividflow.cli", "operator", "--namespace", namespace, "--workers", str(workers)]
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_statuses(plane: ControlPlane, namespace: str, names: set[str], timeout: float) -> float:
    """Seconds until every VideoJob in ``names`` has a status naming its Job."""
    began = time.monotonic()
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    while True:
        _, listing = plane.request("GET", path, timeout=60)
        done = {i["metadata"]["name"] for i in listing["items"] if (i.get("status") or {}).get("jobName")}
        if names <= done:
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{len(names - done)} VideoJobs without status after {timeout} s")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8, help="concurrent POSTs of the burst")
    parser.add_argument("--workers", type=int, default=16, help="the operator's reconcile workers")
    args = parser.parse_args()

    settings = Settings()
    videojobs_path = f"/apis/{GROUP}/{VERSION}/namespaces/{{}}/{PLURAL}"
    with ControlPlane(controllers=()) as plane:
        install_videojob_crd(plane)
        print(f"control plane up in {plane.startup_seconds:.1f} s: etcd + kube-apiserver, no controllers")

        # The ceiling: the Jobs themselves, straight from one client.
        plane.ensure_namespace("ceiling")
        jobs: dict[str, dict[str, Any]] = {}
        for _ in range(args.count):
            spec = make_spec()
            manifest = job_manifest(videojob_manifest(spec, "ceiling"), spec, settings)
            jobs[manifest["metadata"]["name"]] = manifest
        path = "/apis/batch/v1/namespaces/ceiling/jobs"
        ceiling = burst(plane, "ceiling", jobs, path, args.clients, "direct Job creation (ceiling)")
        print(ceiling.line())

        # For reference: the VideoJobs alone, no operator (what the API server takes to store them).
        plane.ensure_namespace("crs")
        sent, answered = post_all(
            plane, videojob_bodies("crs", args.count), videojobs_path.format("crs"), args.clients
        )
        cr_rate = args.count / (max(answered.values()) - min(sent.values()))
        print(f"{'direct VideoJob creation (no operator)':<40} {cr_rate:8.1f} VideoJobs/s")

        # The operator: VideoJobs in, Jobs out.
        plane.ensure_namespace("operator")
        log = Path(os.environ.get("VIVID_BENCH_OPERATOR_LOG", plane.dir / "logs" / "operator.log"))
        with operator_process(plane, "operator", args.workers, log):
            path = videojobs_path.format("operator")
            warm = burst(plane, "operator", videojob_bodies("operator", 1), path, 1, "warm-up")
            print(
                f"operator ready: first Job {warm.latencies[0]:.1f} s after its VideoJob (startup included)"
            )
            videojobs = videojob_bodies("operator", args.count)
            result = burst(plane, "operator", videojobs, path, args.clients, "VideoJob -> operator -> Job")
            print(result.line())
            status_after = wait_statuses(plane, "operator", set(videojobs), timeout=300)
            selector = f"labelSelector={LABEL_VIDEOJOB}"
            _, listing = plane.request(
                "GET", f"/apis/batch/v1/namespaces/operator/jobs?{selector}", timeout=60
            )
            job_count = len(listing["items"])

    ratio = result.throughput / ceiling.throughput
    p99 = result.percentile(0.99)
    bound = 1 / (1 / cr_rate + 1 / ceiling.throughput) / ceiling.throughput
    print(f"all {args.count} statuses written {status_after:.1f} s after the last Job; Jobs: {job_count}")
    print(f"ratio operator / ceiling: {ratio:.2f} (target >= 0.5); p99 {p99:.2f} s (target < 5 s)")
    print(
        f"the VideoJob POSTs alone run at {cr_rate / ceiling.throughput:.2f} of the ceiling: an operator that"
        f" cost nothing would reach at most {bound:.2f} (1 / (1/VideoJob rate + 1/Job rate) / Job rate)"
    )
    summary = {
        "bench": "operator_scale",
        "count": args.count,
        "clients": args.clients,
        "workers": args.workers,
        "ceiling_jobs_per_s": round(ceiling.throughput, 1),
        "operator_jobs_per_s": round(result.throughput, 1),
        "ratio": round(ratio, 3),
        "latency_p50_s": round(result.percentile(0.5), 3),
        "latency_p99_s": round(p99, 3),
        "ceiling_latency_p50_s": round(ceiling.percentile(0.5), 3),
        "ceiling_latency_p99_s": round(ceiling.percentile(0.99), 3),
        "videojob_post_per_s": round(cr_rate, 1),
        "ratio_bound_for_a_free_operator": round(bound, 3),
        "statuses_after_s": round(status_after, 1),
        "jobs_created": job_count,
        "target_met": ratio >= 0.5 and p99 < 5.0 and job_count == args.count + 1,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
