"""Start a real, throw-away Kubernetes control plane on loopback for tests.

etcd, kube-apiserver and (optionally) kube-controller-manager run as local processes from the binaries
that ``hack/kubebin/build.sh`` builds and caches. Everything lives in a temporary directory: a
self-signed CA, a serving certificate, an admin client certificate (group ``system:masters``), the
service-account signing key pair, the etcd data, the component logs and the kubeconfig files.

    with ControlPlane() as plane:
        os.environ["KUBECONFIG"] = str(plane.kubeconfig_path)
        token = plane.create_service_account_token("ns", "operator")
        limited = plane.make_kubeconfig_for_token(token)

Authorization is RBAC (plus Node), so a ServiceAccount token is only allowed what its (Cluster)Role
bindings grant. There is no scheduler and no kubelet: pods created by the Job controller stay Pending
and unbound until a test binds them and patches their status.

The Job API's default deletion propagation is *orphan*; delete Jobs with ``propagationPolicy:
Background`` (or Foreground) to have the garbage collector remove their pods.
"""

from __future__ import annotations

import atexit
import base64
import datetime
import http.client
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.ports import free_port

__all__ = [
    "DEFAULT_CONTROLLERS",
    "REPO_ROOT",
    "ControlPlane",
    "ControlPlaneError",
    "build_binaries",
    "find_bin_dir",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "kubebin" / "build.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")

#: Controllers that matter for Jobs. No podgc / node-lifecycle / taint-eviction: there are no nodes.
DEFAULT_CONTROLLERS: tuple[str, ...] = (
    "job-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
)

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
_KUBERNETES_SERVICE_IP = "10.0.0.1"


class ControlPlaneError(RuntimeError):
    """A component failed to start or a request to the control plane failed."""


# --------------------------------------------------------------------------------------------------
# Binaries
# --------------------------------------------------------------------------------------------------


def _bin_dir_is_complete(path: Path) -> bool:
    return all(os.access(path / name, os.X_OK) for name in BINARIES)


def find_bin_dir() -> Path | None:
    """The directory with etcd, kube-apiserver and kube-controller-manager, or None if not built.

    ``VIVID_KUBE_BIN_DIR`` wins; otherwise the cache directory that ``hack/kubebin/build.sh`` uses for
    the pinned versions. Never builds (a cold build takes 10-25 minutes): see :func:`build_binaries`.
    """
    override = os.environ.get("VIVID_KUBE_BIN_DIR")
    if override:
        path = Path(override)
        return path if _bin_dir_is_complete(path) else None
    if not BUILD_SCRIPT.is_file():
        return None
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return None
    path = Path(proc.stdout.strip())
    return path if _bin_dir_is_complete(path) else None


def build_binaries() -> Path:
    """Run ``hack/kubebin/build.sh`` (seconds when cached, 10-25 minutes cold) and return the bin dir."""
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise ControlPlaneError(f"{BUILD_SCRIPT} failed with exit status {proc.returncode}")
    return Path(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass(frozen=True)
class _CA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, common_name: str) -> _CA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(hours=1))
            .not_valid_after(_now() + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key=key, cert=cert)

    def issue(
        self,
        common_name: str,
        *,
        organizations: Sequence[str] = (),
        server: bool = False,
        client: bool = False,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(hours=1))
            .not_valid_after(_now() + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(self.key, hashes.SHA256())


# --------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------


@dataclass
class _Component:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, max_chars: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-max_chars:]

    def stop(self, timeout: float) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) on free loopback ports; a context manager.

    Args:
        bin_dir: directory with the three binaries; default :func:`find_bin_dir`.
        controllers: kube-controller-manager ``--controllers``; empty to not run it at all.
        start_timeout: seconds to wait for etcd ``/health`` and kube-apiserver ``/readyz``.
        apiserver_args / controller_manager_args: extra flags appended to the defaults.
        keep_dir: keep the temporary directory (certs, logs, etcd data) after :meth:`stop`;
            also switched on by ``VIVID_KUBE_KEEP=1``.
    """

    def __init__(
        self,
        bin_dir: Path | None = None,
        *,
        controllers: Sequence[str] = DEFAULT_CONTROLLERS,
        start_timeout: float = 60.0,
        apiserver_args: Sequence[str] = (),
        controller_manager_args: Sequence[str] = (),
        keep_dir: bool | None = None,
    ) -> None:
        self._bin_dir_arg = bin_dir
        self.controllers = tuple(controllers)
        self.start_timeout = start_timeout
        self.apiserver_args = tuple(apiserver_args)
        self.controller_manager_args = tuple(controller_manager_args)
        self.keep_dir = keep_dir if keep_dir is not None else os.environ.get("VIVID_KUBE_KEEP") == "1"
        self._dir: Path | None = None
        self._components: list[_Component] = []
        self._server_url: str | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._kubeconfig_count = 0
        #: Seconds :meth:`start` took, once started.
        self.startup_seconds: float | None = None

    # -- properties ---------------------------------------------------------------------------------

    @property
    def dir(self) -> Path:
        """The temporary directory holding certificates, logs, etcd data and kubeconfigs."""
        if self._dir is None:
            raise ControlPlaneError("the control plane is not started")
        return self._dir

    @property
    def kubeconfig_path(self) -> Path:
        """Kubeconfig of the cluster admin (client certificate in group ``system:masters``)."""
        return self.dir / "admin.kubeconfig"

    @property
    def server_url(self) -> str:
        """``https://127.0.0.1:<port>`` of kube-apiserver."""
        if self._server_url is None:
            raise ControlPlaneError("the control plane is not started")
        return self._server_url

    @property
    def ca_path(self) -> Path:
        """PEM of the CA that signed the serving certificate and the client certificates."""
        return self.dir / "pki" / "ca.crt"

    @property
    def admin_cert_path(self) -> Path:
        return self.dir / "pki" / "admin.crt"

    @property
    def admin_key_path(self) -> Path:
        return self.dir / "pki" / "admin.key"

    def log_path(self, component: str) -> Path:
        """Log file of ``etcd``, ``kube-apiserver`` or ``kube-controller-manager``."""
        return self.dir / "logs" / f"{component}.log"

    # -- lifecycle ----------------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Start all components and wait until the API is ready. Cleans up fully if a step fails."""
        if self._dir is not None:
            raise ControlPlaneError("the control plane is already started")
        began = time.monotonic()
        bin_dir = self._bin_dir_arg or find_bin_dir()
        if bin_dir is None or not _bin_dir_is_complete(bin_dir):
            raise ControlPlaneError(
                f"kube binaries not found (looked in {bin_dir or 'the hack/kubebin cache'}); "
                f"build them with: {BUILD_SCRIPT.relative_to(REPO_ROOT)}"
            )
        for attempt in range(3):
            self._dir = Path(tempfile.mkdtemp(prefix="vivid-kube-"))
            atexit.register(self.stop)
            try:
                self._start(bin_dir)
                break
            except ControlPlaneError as err:
                self.stop()
                # Another process may take a free port between probing and binding it: start over.
                if "address already in use" not in str(err) or attempt == 2:
                    raise
            except BaseException:
                self.stop()
                raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate (then kill) the components in reverse order and remove the temporary directory."""
        atexit.unregister(self.stop)
        for component in reversed(self._components):
            try:
                component.stop(timeout)
            except Exception:  # pragma: no cover - keep stopping the others
                component.process.kill()
        self._components.clear()
        if self._dir is not None and not self.keep_dir:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None
        self._server_url = None
        self._ssl_context = None

    def _start(self, bin_dir: Path) -> None:
        pki = self.dir / "pki"
        pki.mkdir()
        (self.dir / "logs").mkdir()
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        self._server_url = f"https://127.0.0.1:{api_port}"

        # Certificates and keys.
        ca = _CA.create("vivid-test-ca")
        _write_cert(self.ca_path, ca.cert)
        key, cert = ca.issue(
            "kube-apiserver",
            server=True,
            dns_names=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
            ip_addresses=["127.0.0.1", _KUBERNETES_SERVICE_IP],
        )
        _write_private_key(pki / "apiserver.key", key)
        _write_cert(pki / "apiserver.crt", cert)
        key, cert = ca.issue("vivid-admin", organizations=["system:masters"], client=True)
        _write_private_key(self.admin_key_path, key)
        _write_cert(self.admin_cert_path, cert)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private_key(pki / "sa.key", sa_key)
        (pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self._write_kubeconfig(
            self.kubeconfig_path,
            "admin",
            {
                "client-certificate-data": _b64(self.admin_cert_path.read_bytes()),
                "client-key-data": _b64(self.admin_key_path.read_bytes()),
            },
        )

        # etcd
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd = self._spawn(
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=vivid-test",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=vivid-test={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait("etcd /health", lambda: _etcd_healthy(etcd_url), [etcd])

        # kube-apiserver
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={self.ca_path}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                "--disable-admission-plugins=ServiceAccount",
                "--authorization-mode=Node,RBAC",
                f"--service-account-issuer={self._server_url}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                # Loopback cannot be written into the "kubernetes" Endpoints ("may not be in the
                # loopback range"), so do not reconcile them.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                *self.apiserver_args,
            ],
        )
        self._wait("kube-apiserver /readyz", self._apiserver_ready, [etcd, apiserver])
        # The bootstrap controller creates the "default" namespace shortly after /readyz.
        self._wait(
            "namespace default",
            lambda: self.request("GET", "/api/v1/namespaces/default", check=False)[0] == 200,
            [etcd, apiserver],
        )

        # kube-controller-manager (no serving port, so nothing to poll: check that it stays up).
        if self.controllers:
            manager = self._spawn(
                "kube-controller-manager",
                [
                    str(bin_dir / "kube-controller-manager"),
                    f"--kubeconfig={self.kubeconfig_path}",
                    "--leader-elect=false",
                    "--use-service-account-credentials=false",
                    f"--controllers={','.join(self.controllers)}",
                    "--bind-address=127.0.0.1",
                    "--secure-port=0",
                    *self.controller_manager_args,
                ],
            )
            time.sleep(0.2)
            if manager.process.poll() is not None:
                raise self._failure("kube-controller-manager exited", [manager])

    def _spawn(self, name: str, argv: list[str]) -> _Component:
        log_path = self.log_path(name)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir
            )
        component = _Component(name=name, process=process, log_path=log_path)
        self._components.append(component)
        return component

    def _wait(self, what: str, ready: Callable[[], bool], watch: Sequence[_Component]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            for component in watch:
                if component.process.poll() is not None:
                    raise self._failure(
                        f"{component.name} exited with status {component.process.returncode} "
                        f"while waiting for {what}",
                        [component],
                    )
            try:
                if ready():
                    return
            except (OSError, http.client.HTTPException, ssl.SSLError):
                pass
            if time.monotonic() > deadline:
                raise self._failure(f"timed out after {self.start_timeout:.0f} s waiting for {what}", watch)
            time.sleep(0.05)

    def _failure(self, message: str, components: Sequence[_Component]) -> ControlPlaneError:
        tails = "".join(f"\n--- {c.name} log (tail) ---\n{c.log_tail()}" for c in components)
        return ControlPlaneError(message + tails)

    def _apiserver_ready(self) -> bool:
        status, _ = self.request("GET", "/readyz", check=False)
        return status == 200

    # -- kubeconfigs --------------------------------------------------------------------------------

    def _write_kubeconfig(self, path: Path, user: str, credentials: Mapping[str, str]) -> None:
        # JSON is YAML: client-go, kubectl and the Python client all read it.
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "vivid-test",
                    "cluster": {
                        "server": self.server_url,
                        "certificate-authority-data": _b64(self.ca_path.read_bytes()),
                    },
                }
            ],
            "users": [{"name": user, "user": dict(credentials)}],
            "contexts": [{"name": user, "context": {"cluster": "vivid-test", "user": user}}],
            "current-context": user,
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)

    def make_kubeconfig_for_token(self, token: str, name: str | None = None) -> Path:
        """Write a kubeconfig that authenticates with a bearer ``token`` and return its path."""
        self._kubeconfig_count += 1
        user = name or f"token-{self._kubeconfig_count}"
        path = self.dir / f"{user}.kubeconfig"
        self._write_kubeconfig(path, user, {"token": token})
        return path

    # -- API access (admin) -------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, *, check: bool = True, timeout: float = 10.0
    ) -> tuple[int, Any]:
        """One admin request to kube-apiserver: returns (status, decoded JSON or text).

        With ``check`` a status of 400 or more raises :class:`ControlPlaneError`.
        """
        if self._ssl_context is None:
            context = ssl.create_default_context(cafile=str(self.ca_path))
            context.load_cert_chain(str(self.admin_cert_path), str(self.admin_key_path))
            self._ssl_context = context
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server_url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            content_type = "application/json"
            if method == "PATCH":
                content_type = "application/merge-patch+json"
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self._ssl_context, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        text = raw.decode(errors="replace")
        try:
            payload: Any = json.loads(text)
        except ValueError:
            payload = text
        if check and status >= 400:
            raise ControlPlaneError(f"{method} {path} -> {status}: {text[:2000]}")
        return status, payload

    def ensure_namespace(self, namespace: str) -> None:
        status, payload = self.request(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            check=False,
        )
        if status not in (201, 409):
            raise ControlPlaneError(f"creating namespace {namespace} -> {status}: {payload}")

    def create_service_account_token(
        self,
        namespace: str,
        name: str,
        *,
        expiration_seconds: int = 3600,
        audiences: Sequence[str] = (),
        create: bool = True,
        bound_pod: Mapping[str, Any] | None = None,
    ) -> str:
        """Return a token for ServiceAccount ``namespace/name`` from the TokenRequest API.

        With ``create`` the namespace and the ServiceAccount are created first when missing. The
        token carries only the permissions that RBAC grants the ServiceAccount. With ``bound_pod`` (a
        Pod object of that ServiceAccount) it is bound to the Pod, as the kubelet's projected tokens
        are: requests made with it carry the Pod's name and uid in their user info.
        """
        base = f"/api/v1/namespaces/{namespace}/serviceaccounts"
        if create:
            self.ensure_namespace(namespace)
            status, payload = self.request(
                "POST",
                base,
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
                check=False,
            )
            if status not in (201, 409):
                raise ControlPlaneError(f"creating serviceaccount {namespace}/{name} -> {status}: {payload}")
        spec: dict[str, Any] = {"expirationSeconds": expiration_seconds}
        if audiences:
            spec["audiences"] = list(audiences)
        if bound_pod is not None:
            metadata = bound_pod["metadata"]
            spec["boundObjectRef"] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": metadata["name"],
                "uid": metadata["uid"],
            }
        _, payload = self.request(
            "POST",
            f"{base}/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        token: str = payload["status"]["token"]
        return token


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _etcd_healthy(url: str) -> bool:
    with urllib.request.urlopen(url + "/health", timeout=2) as resp:
        payload = json.loads(resp.read())
    return bool(payload.get("health") == "true")
