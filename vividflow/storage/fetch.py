"""Fetching an input image from a user-supplied URL without letting the URL reach inside our network.

Every hop (the URL and each redirect) is vetted before any connection: https only, no credentials in
the URL, no internal host names, and every address the name resolves to must be public. The request
then goes to the vetted address itself (``Host`` header, TLS SNI and certificate check keep the name),
so a second DNS answer cannot swap in another address. ``fetch_allow_hosts`` exempts hosts or
networks (tests). The whole fetch, redirects included, has one deadline; the body is streamed and cut
off at the size limit.

The guard is reusable for other user-supplied URLs (webhook targets): :func:`check_url` vets a URL
without DNS (at submission), :func:`vet_url` also resolves it, :func:`guarded_client` and
:func:`send_vetted` send any request to a vetted address.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import anyio
import anyio.to_thread
import certifi
import httpx

from vividflow.settings import Settings
from vividflow.storage.errors import (
    FetchRefused,
    InputNotFound,
    InputTooLarge,
    InputUnreachable,
    InvalidImage,
    StorageAccessDenied,
    safe_url,
)
from vividflow.storage.images import CheckedImage, check_image

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

USER_AGENT = "vividflow-image-fetch/1"
_BLOCKED_NAMES = {"localhost", "metadata", "metadata.google.internal", "metadata.goog"}
_BLOCKED_SUFFIXES = (".localhost", ".internal", ".local")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Some servers label images generically; the bytes are checked afterwards either way.
_GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream"}


@dataclass(frozen=True)
class FetchedImage:
    checked: CheckedImage
    final_url: str

    @property
    def data(self) -> bytes:
        return self.checked.data

    @property
    def mime_type(self) -> str:
        return self.checked.mime_type


def fetch_image_url(url: str, settings: Settings) -> FetchedImage:
    """Fetch and validate the image at ``url`` (blocking; from async code await the async variant)."""
    return anyio.run(fetch_image_url_async, url, settings)


async def fetch_image_url_async(url: str, settings: Settings) -> FetchedImage:
    timeout = settings.fetch_timeout_seconds
    try:
        with anyio.fail_after(timeout):
            data, final_url = await _download(url, settings)
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise InputUnreachable(f"{safe_url(url)} did not answer within {timeout:g} seconds") from exc
    # Decoding is CPU work: off the event loop, and outside the network deadline.
    checked = await anyio.to_thread.run_sync(check_image, data, settings.max_upload_bytes)
    return FetchedImage(checked, final_url)


@dataclass(frozen=True)
class Target:
    """A vetted URL and the addresses a request to it may connect to."""

    url: httpx.URL
    host: str  # IDNA-encoded, lower case
    addresses: list[IPAddress]


def guarded_client(settings: Settings, timeout: float, headers: dict[str, str]) -> httpx.AsyncClient:
    """A client for :func:`send_vetted`: no redirects followed, no proxies, our CAs (plus
    ``fetch_ca_bundle``)."""
    return httpx.AsyncClient(
        verify=_ssl_context(settings.fetch_ca_bundle),
        follow_redirects=False,
        trust_env=False,  # a proxy from the environment would bypass the address checks
        timeout=timeout,
        headers=headers,
    )


async def _download(url: str, settings: Settings) -> tuple[bytes, str]:
    current = url
    headers = {"User-Agent": USER_AGENT, "Accept": "image/png, image/jpeg, image/webp, */*;q=0.1"}
    async with guarded_client(settings, settings.fetch_timeout_seconds, headers) as client:
        for _ in range(settings.fetch_max_redirects + 1):
            target = await vet_url(current, settings)
            response = await send_vetted(client, target)
            try:
                if response.status_code in (301, 302, 303, 307, 308):
                    location = response.headers.get("location")
                    if not location:
                        raise InputUnreachable(f"{safe_url(current)} redirected without a Location")
                    current = str(target.url.join(location))
                    continue
                return await _read_body(response, current, settings.max_upload_bytes), current
            finally:
                await response.aclose()
    limit = settings.fetch_max_redirects
    raise FetchRefused(f"{safe_url(url)} redirected too many times (the limit is {limit})")


async def send_vetted(
    client: httpx.AsyncClient,
    target: Target,
    method: str = "GET",
    *,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Send a request to ``target`` at one of its vetted addresses, trying the next one when a
    connection fails; the response is streamed (close it)."""
    url = target.url
    failure: httpx.ConnectError | None = None
    for address in target.addresses:
        request = client.build_request(
            method,
            url.copy_with(host=str(address)),
            headers={**(headers or {}), "Host": url.netloc.decode("ascii")},
            content=content,
            extensions={"sni_hostname": target.host} if url.scheme == "https" else {},
        )
        try:
            return await client.send(request, stream=True)
        except httpx.ConnectError as exc:
            failure = exc
        except httpx.TimeoutException:
            raise
        except httpx.HTTPError as exc:
            raise InputUnreachable(f"{safe_url(str(url))} could not be read") from exc
    if failure is not None and "CERTIFICATE_VERIFY_FAILED" in str(failure):
        raise InputUnreachable(f"the TLS certificate of {target.host} is not trusted") from failure
    raise InputUnreachable(f"could not connect to {target.host}") from failure


async def _read_body(response: httpx.Response, url: str, max_bytes: int) -> bytes:
    shown = safe_url(url)
    status = response.status_code
    if status in (404, 410):
        raise InputNotFound(f"{shown} was not found (HTTP {status})")
    if status in (401, 403):
        raise StorageAccessDenied(f"{shown} refused access (HTTP {status})")
    if status != 200:
        raise InputUnreachable(f"{shown} answered HTTP {status}")
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type.startswith("image/") and content_type not in _GENERIC_TYPES:
        raise InvalidImage(f"{shown} is not an image (content type {content_type})")
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise InputTooLarge.of(max_bytes, int(length))
    body = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > max_bytes:
                raise InputTooLarge.of(max_bytes)
    except httpx.TimeoutException:
        raise
    except httpx.HTTPError as exc:
        raise InputUnreachable(f"reading {shown} failed") from exc
    return bytes(body)


@dataclass(frozen=True)
class _Checked:
    url: httpx.URL
    host: str
    exempt: bool
    """The host is on the allow list by name."""
    networks: tuple[IPNetwork, ...]


def check_url(url: str, settings: Settings, noun: str = "image URL") -> httpx.URL:
    """Vet ``url`` without resolving it: scheme, credentials, host, internal names, and a host given
    as an address must be public; FetchRefused (its message names ``noun``) otherwise."""
    return _check(url, settings, noun).url


def _check(url: str, settings: Settings, noun: str) -> _Checked:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise FetchRefused(f"the {noun} is not a valid URL") from exc
    allowed_schemes = {"https", "http"} if settings.fetch_allow_http else {"https"}
    if not parsed.scheme:
        raise FetchRefused(f"{noun}s must start with https://")
    if parsed.scheme not in allowed_schemes:
        raise FetchRefused(f"{noun}s must use https, not {parsed.scheme}")
    if parsed.userinfo:
        raise FetchRefused(f"{noun}s must not contain credentials")
    host = parsed.raw_host.decode("ascii").lower().rstrip(".")
    if not host:
        raise FetchRefused(f"the {noun} has no host")
    allow_names, allow_networks = _allow_list(tuple(settings.fetch_allow_hosts))
    checked = _Checked(parsed, host, host in allow_names, allow_networks)
    if not checked.exempt and (host in _BLOCKED_NAMES or host.endswith(_BLOCKED_SUFFIXES)):
        raise FetchRefused(f"{host} is an internal host")
    literal = _literal_address(host)
    if literal is not None:
        _refuse_private(checked, [literal])
    return checked


async def vet_url(url: str, settings: Settings, noun: str = "image URL") -> Target:
    """Check one hop before connecting (:func:`check_url`, then every address the host resolves to
    must be public); the addresses it may connect to."""
    checked = _check(url, settings, noun)
    parsed = checked.url
    addresses = await _resolve(checked.host, parsed.port or (443 if parsed.scheme == "https" else 80))
    _refuse_private(checked, addresses)
    return Target(parsed, checked.host, addresses)


def _refuse_private(checked: _Checked, addresses: list[IPAddress]) -> None:
    for address in addresses:
        if checked.exempt or _is_public(address) or any(address in net for net in checked.networks):
            continue
        raise FetchRefused(f"{checked.host} is a private or reserved address")


def _literal_address(host: str) -> IPAddress | None:
    """The address a host written as one stands for, legacy IPv4 forms (``127.1``, ``2130706433``)
    included, as the resolver would read them; None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    if not host[:1].isdigit():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise InputUnreachable(f"the host {host} could not be resolved") from exc
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise InputUnreachable(f"the host {host} could not be resolved")
    return addresses


def _is_public(address: IPAddress) -> bool:
    """Whether ``address`` is globally routable (IPv4 inside IPv6 forms is judged as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not _is_public(embedded):
            return False
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    )


@lru_cache(maxsize=8)
def _allow_list(entries: tuple[str, ...]) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    """Split ``fetch_allow_hosts`` into host names and networks (a bare IP is a one-address network)."""
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            names.add(entry.lower().rstrip("."))
    return frozenset(names), tuple(networks)


@lru_cache(maxsize=4)
def _ssl_context(extra_ca_bundle: Path | None) -> ssl.SSLContext:
    """The default CAs (certifi, as httpx uses), plus ``extra_ca_bundle`` when set."""
    context = ssl.create_default_context(cafile=certifi.where())
    if extra_ca_bundle is not None:
        context.load_verify_locations(cafile=str(extra_ca_bundle))
    return context
