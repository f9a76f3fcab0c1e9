"""Container mode of the fake kubelet: a Pod whose image is in local podman storage runs as a real
container (``FakeKubelet(..., container_runtime=PodmanRuntime())``); every other Pod stays a process.

:class:`PodmanRuntime` implements :class:`tests.kube.kubelet_runtime.ContainerRuntime`; the kubelet keeps the
rest (scheduling, env, waiting reasons, status reports, deadlines, deletion). For each container it
runs ``podman create`` and then ``podman start --attach`` (stdout and stderr go to the run's output
log, the attached podman process stands for the container), with:

- the Pod's ``command`` (as ``--entrypoint``) and ``args`` (after the image), ``$(VAR)``-expanded as
  Kubernetes does: no ``command`` keeps the image's ENTRYPOINT, neither keeps its CMD;
- its ``env`` and ``envFrom`` (over the image's own env, beneath them ``env`` of the runtime), plus
  ``HOSTNAME`` and ``KUBERNETES_SERVICE_HOST``/``PORT`` (the test API server, so in-cluster clients
  work); ``workingDir``; the hostname is the Pod's name;
- the Pod's projected ServiceAccount token at ``/var/run/secrets/kubernetes.io/serviceaccount/``
  (``token`` from the TokenRequest API bound to the Pod, so the API server sees its
  ``authentication.kubernetes.io/pod-name``; ``ca.crt``; ``namespace``), unless
  ``automountServiceAccountToken: false``;
- the termination-log file at ``terminationMessagePath`` (default ``/dev/termination-log``);
- ``emptyDir`` (a fresh world-writable directory), ``secret`` and ``configMap`` volumes (their keys or
  ``items`` as files, read-only) where ``volumeMounts`` put them (``subPath``, ``readOnly``);
- from the security contexts (the container's over the Pod's): ``runAsUser``/``runAsGroup``
  (``--user``), ``fsGroup`` and ``supplementalGroups`` (``--group-add``), ``runAsNonRoot`` (refused
  as the kubelet does when the user would be root or is not numeric), ``readOnlyRootFilesystem``
  (``--read-only`` with no tmpfs added: only volumes are writable), ``capabilities``,
  ``allowPrivilegeEscalation: false`` (``no-new-privileges``);
- the host's network (``--network host``): containers reach the suite's loopback services, and each
  Service of the Pod's namespace resolves to 127.0.0.1 (``--add-host`` for ``name``, ``name.ns``,
  ``name.ns.svc``, ``name.ns.svc.cluster.local``), which serves a Service whose port is its
  target port and whose Pod runs here;
- Debian's ``runc`` (crun refuses these hybrid cgroups) and explicit ``nofile``/``nproc`` rlimits (the
  default ones are refused).

Deletion and deadlines stop the container (``podman stop --time <grace>``; ``podman kill`` for no grace);
its exit code, and OOMKilled from podman's state, go into the Pod's status; then it is removed. A
container that cannot start (an executable not found, a bad mount) ends ``StartError`` with podman's
message. Not emulated: resources (no cgroup limits), probes, init containers, image pulls (an image that
is not in local storage runs as a process), other volume types (the container waits with
``CreateContainerConfigError``).
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.kube.kubelet_runtime import ContainerConfigError, ContainerExit, ContainerLaunch

__all__ = ["RUNTIME_ARGS", "SERVICE_ACCOUNT_DIR", "PodmanContainer", "PodmanRuntime", "podman_available"]

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"


def _limit(kind: int, most: int) -> str:
    """As much as this process may have of an rlimit, up to ``most`` (podman may not raise one)."""
    hard = resource.getrlimit(kind)[1]
    value = most if hard == resource.RLIM_INFINITY else min(hard, most)
    return f"{value}:{value}"


RUNTIME_ARGS: list[str] = [
    "--runtime",
    "/usr/sbin/runc",
    "--ulimit",
    f"nofile={_limit(resource.RLIMIT_NOFILE, 65536)}",
    "--ulimit",
    f"nproc={_limit(resource.RLIMIT_NPROC, 4096)}",
]
"""What ``podman run``/``create`` needs on these machines: Debian's runc and explicit rlimits."""


def podman_available(podman: str = "podman") -> bool:
    try:
        return subprocess.run([podman, "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass(frozen=True)
class _Image:
    id: str
    user: str
    digest: str


class PodmanContainer:
    """One created container and the ``podman start --attach`` process that follows it."""

    def __init__(self, podman: str, name: str, container_id: str, image_id: str) -> None:
        self._podman = podman
        self.name = name
        self.container_id = f"podman://{container_id}"
        self.image_id = image_id
        self.process: subprocess.Popen[bytes]

    def _podman_run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self._podman, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def state(self) -> dict[str, Any]:
        done = self._podman_run("container", "inspect", "--format", "{{json .State}}", self.name)
        if done.returncode != 0:
            return {}
        state: dict[str, Any] = json.loads(done.stdout)
        return state

    def stop(self, grace_seconds: float) -> None:
        if grace_seconds <= 0:
            self._podman_run("kill", "--signal", "KILL", self.name)
        else:
            seconds = max(1, math.ceil(grace_seconds))
            self._podman_run("stop", "--time", str(seconds), self.name, timeout=seconds + 60)

    def exit(self) -> ContainerExit:
        state = self.state()
        code = state.get("ExitCode")
        if code is None:  # gone: what the attached podman process said
            code = self.process.returncode or 0
        return ContainerExit(exit_code=int(code), oom_killed=bool(state.get("OOMKilled")))

    def remove(self) -> None:
        self._podman_run("rm", "--force", "--ignore", "--time", "0", self.name)


class PodmanRuntime:
    """Runs the containers whose image ``podman image exists`` finds (see the module's docstring).

    Args:
        env: environment beneath each container's own (over the image's), e.g. STORAGE_EMULATOR_HOST.
        podman: the podman binary.
        start_timeout: seconds a container may take from ``podman start`` to running.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        podman: str = "podman",
        start_timeout: float = 60.0,
    ) -> None:
        self.env: dict[str, str] = dict(env or {})
        self.podman = podman
        self.start_timeout = start_timeout
        self._images: dict[str, _Image] = {}
        self._lock = threading.Lock()
        self.started: list[str] = []
        """Names of the containers started, oldest first."""

    # -- ContainerRuntime -------------------------------------------------------------------------

    def handles(self, image: str) -> bool:
        return bool(image) and self._image(image) is not None

    def prepare(self, launch: ContainerLaunch) -> None:
        """Write the Pod's mounted volumes under its directory (their ``--volume`` arguments into
        ``launch.prepared``); check runAsNonRoot."""
        pod, container = launch.pod, launch.container
        namespace = pod["metadata"]["namespace"]
        volumes = {volume["name"]: volume for volume in pod["spec"].get("volumes") or []}
        mounts: list[str] = []
        made: dict[str, Path] = {}
        for mount in container.get("volumeMounts") or []:
            name = mount["name"]
            volume = volumes.get(name)
            if volume is None:
                raise ContainerConfigError(f'volume "{name}" of a volumeMount is not a volume of the Pod')
            if name not in made:
                made[name] = self._volume(launch, namespace, volume)
            read_only = bool(mount.get("readOnly")) or "secret" in volume or "configMap" in volume
            host = made[name] / mount["subPath"] if mount.get("subPath") else made[name]
            mounts += ["--volume", f"{host}:{mount['mountPath']}:{'ro' if read_only else 'rw'}"]
        mount_paths = {mount["mountPath"].rstrip("/") for mount in container.get("volumeMounts") or []}
        if launch.service_account_dir is not None and SERVICE_ACCOUNT_DIR not in mount_paths:
            mounts += ["--volume", f"{launch.service_account_dir}:{SERVICE_ACCOUNT_DIR}:ro"]
        self._check_user(launch)
        launch.prepared = mounts

    def start(self, launch: ContainerLaunch) -> PodmanContainer:
        image = self._image(launch.container["image"])
        if image is None:
            raise FileNotFoundError(f"image {launch.container['image']} is no longer in local storage")
        name = f"vivid-kubelet-{launch.pod['metadata']['uid']}"
        self._podman("rm", "--force", "--ignore", "--time", "0", name)  # a leftover of an earlier start
        launch.termination_log_path.touch()
        launch.termination_log_path.chmod(0o666)  # written by the container's user
        arguments = self._create_arguments(launch, name, image)
        created = self._podman("create", *arguments)
        if created.returncode != 0:
            raise OSError(f"podman create: {created.stderr.strip()[-1500:]}")
        started = PodmanContainer(self.podman, name, created.stdout.strip(), image.digest)
        with self._lock:
            self.started.append(name)
        with launch.log_path.open("wb") as output:
            started.process = subprocess.Popen(
                [self.podman, "start", "--attach", name],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            status = started.state().get("Status", "")
            if status not in ("", "created", "initialized", "configured"):
                return started  # running, or already exited after running
            if started.process.poll() is not None:
                error = _podman_error(launch.log_path)
                started.remove()
                raise OSError(error or f"podman start exited {started.process.returncode}")
            if time.monotonic() > deadline:
                started.remove()
                raise OSError(f"the container did not start within {self.start_timeout} s")
            time.sleep(0.05)

    # -- helpers ---------------------------------------------------------------------------------

    def _podman(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.podman, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def _image(self, image: str) -> _Image | None:
        with self._lock:
            known = self._images.get(image)
        if known is not None:
            return known
        done = self._podman("image", "inspect", image, timeout=30)
        if done.returncode != 0:
            return None
        (details,) = json.loads(done.stdout)
        digests = details.get("RepoDigests") or []
        found = _Image(
            id=details["Id"],
            user=(details.get("Config") or {}).get("User") or "",
            digest=digests[0] if digests else f"sha256:{details['Id']}",
        )
        with self._lock:
            self._images[image] = found
        return found

    def _volume(self, launch: ContainerLaunch, namespace: str, volume: Mapping[str, Any]) -> Path:
        name = volume["name"]
        host: Path = launch.pod_dir / "volumes" / name
        host.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in volume:
            host.chmod(0o777)  # as the kubelet makes it
            return host
        for kind, resource_name, key in (
            ("secret", "secrets", "secretName"),
            ("configMap", "configmaps", "name"),
        ):
            if kind not in volume:
                continue
            source = volume[kind]
            data = launch.object_data(resource_name, namespace, source[key], bool(source.get("optional")))
            mode = int(source.get("defaultMode", 0o644))
            items = source.get("items") or [{"key": k, "path": k} for k in sorted(data or {})]
            for item in items:
                if item["key"] not in (data or {}):
                    raise ContainerConfigError(f"couldn't find key {item['key']} in {kind} {source[key]}")
                path = host / item["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text((data or {})[item["key"]])
                path.chmod(int(item.get("mode", mode)))
            host.chmod(0o755)
            return host
        kinds = sorted(set(volume) - {"name"})
        raise ContainerConfigError(
            f"volume {name!r} ({', '.join(kinds)}): the fake kubelet mounts only emptyDir, secret, configMap"
        )

    def _security(self, launch: ContainerLaunch) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the Pod's securityContext, the container's over it)."""
        pod_context: dict[str, Any] = dict(launch.pod["spec"].get("securityContext") or {})
        merged: dict[str, Any] = {
            key: pod_context[key]
            for key in ("runAsUser", "runAsGroup", "runAsNonRoot", "seLinuxOptions")
            if key in pod_context
        }
        merged.update(launch.container.get("securityContext") or {})
        return pod_context, merged

    def _check_user(self, launch: ContainerLaunch) -> None:
        """runAsNonRoot: refused as the kubelet refuses it (CreateContainerConfigError)."""
        _, context = self._security(launch)
        if not context.get("runAsNonRoot"):
            return
        if "runAsUser" in context:
            if int(context["runAsUser"]) == 0:
                raise ContainerConfigError("container's runAsUser breaks non-root policy")
            return
        image = self._image(launch.container["image"])
        user = (image.user if image else "").split(":")[0]
        if not user.isdigit():
            raise ContainerConfigError(
                f"container has runAsNonRoot and image has non-numeric user ({user or 'root'}), "
                "cannot verify user is non-root"
            )
        if int(user) == 0:
            raise ContainerConfigError("container has runAsNonRoot and image will run as root")

    def _create_arguments(self, launch: ContainerLaunch, name: str, image: _Image) -> list[str]:
        pod, container = launch.pod, launch.container
        meta = pod["metadata"]
        arguments = [
            "--name",
            name,
            *RUNTIME_ARGS,
            "--pull",
            "never",
            "--network",
            "host",
            "--hostname",
            meta["name"][:63],
            "--label",
            f"io.kubernetes.pod.name={meta['name']}",
            "--label",
            f"io.kubernetes.pod.namespace={meta['namespace']}",
            "--label",
            f"io.kubernetes.pod.uid={meta['uid']}",
            "--label",
            f"io.kubernetes.container.name={container['name']}",
        ]
        for service in _services(launch):
            for host in _service_names(service, meta["namespace"]):
                arguments += ["--add-host", f"{host}:127.0.0.1"]
        for key, value in {**self.env, **launch.env}.items():
            arguments += ["--env", f"{key}={value}"]
        if container.get("workingDir"):
            arguments += ["--workdir", container["workingDir"]]
        arguments += launch.prepared
        message_path = container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
        arguments += ["--volume", f"{launch.termination_log_path}:{message_path}:rw"]
        arguments += _security_arguments(*self._security(launch), image)
        if launch.command:
            arguments += ["--entrypoint", json.dumps(launch.command)]
        return [*arguments, container["image"], *launch.args]


def _security_arguments(
    pod_context: Mapping[str, Any], context: Mapping[str, Any], image: _Image
) -> list[str]:
    arguments: list[str] = []
    if "runAsUser" in context or "runAsGroup" in context:
        user = str(context.get("runAsUser", image.user.split(":")[0] or "0"))
        group = context.get("runAsGroup")
        arguments += ["--user", user if group is None else f"{user}:{group}"]
    for group in [pod_context.get("fsGroup"), *(pod_context.get("supplementalGroups") or [])]:
        if group is not None:
            arguments += ["--group-add", str(group)]
    if context.get("readOnlyRootFilesystem"):
        arguments += ["--read-only", "--read-only-tmpfs=false"]
    capabilities = context.get("capabilities") or {}
    for capability in capabilities.get("drop") or []:
        arguments += ["--cap-drop", str(capability).lower()]
    for capability in capabilities.get("add") or []:
        arguments += ["--cap-add", str(capability).lower()]
    if context.get("allowPrivilegeEscalation") is False:
        arguments += ["--security-opt", "no-new-privileges"]
    return arguments


def _services(launch: ContainerLaunch) -> list[str]:
    namespace = launch.pod["metadata"]["namespace"]
    listing = launch.api_get(f"/api/v1/namespaces/{namespace}/services")
    return [item["metadata"]["name"] for item in (listing or {}).get("items", [])]


def _service_names(service: str, namespace: str) -> Sequence[str]:
    return (
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    )


def _podman_error(log_path: Path) -> str:
    """podman's own ``Error: …`` line in the attached output (why a container did not start)."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line.removeprefix("Error: ") for line in lines if line.startswith("Error: ")]
    return errors[-1] if errors else ""
