"""Fetching image URLs: the address guard, redirects, limits and validation, against a real TLS server."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from tests.fixtures.gcs_emulator import GcsEmulator
from tests.fixtures.https_server import HttpsServer
from tests.storage.test_images import make_image
from vividflow.settings import Settings
from vividflow.storage.errors import (
    FetchRefused,
    InputNotFound,
    InputTooLarge,
    InputUnreachable,
    InvalidImage,
    StorageAccessDenied,
    StorageError,
)
from vividflow.storage.fetch import fetch_image_url

PNG = make_image("PNG")


def settings_for(server: HttpsServer, **overrides: Any) -> Settings:
    return Settings(**{"fetch_timeout_seconds": 5.0, **server.settings_overrides(), **overrides})


@pytest.mark.parametrize(
    ("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_image_type_comes_from_the_content(https_server: HttpsServer, fmt: str, mime: str) -> None:
    data = make_image(fmt)
    url = https_server.add(f"misnamed-{fmt}.gif", data, "image/gif")  # name and header both say GIF
    fetched = fetch_image_url(url, settings_for(https_server))
    assert (fetched.data, fetched.mime_type, fetched.final_url) == (data, mime, url)


def test_generic_content_type_is_accepted(https_server: HttpsServer) -> None:
    url = https_server.add("generic.bin", PNG, "application/octet-stream")
    assert fetch_image_url(url, settings_for(https_server)).mime_type == "image/png"


def test_redirects_are_followed_up_to_the_limit(https_server: HttpsServer) -> None:
    final = https_server.add("hop-final.png", PNG, "image/png")
    https_server.redirect("hop-2", "/hop-final.png", 301)
    first = https_server.redirect("hop-1", https_server.url("hop-2"), 307)
    fetched = fetch_image_url(first, settings_for(https_server, fetch_max_redirects=2))
    assert fetched.final_url == final
    assert fetched.data == PNG


def test_too_many_redirects_are_refused(https_server: HttpsServer) -> None:
    https_server.redirect("loop-a", "/loop-b")
    url = https_server.redirect("loop-b", "/loop-a")
    with pytest.raises(FetchRefused, match="redirected too many times"):
        fetch_image_url(url, settings_for(https_server, fetch_max_redirects=3))
    assert https_server.hits("loop-a") + https_server.hits("loop-b") == 4


def test_plain_http_is_refused_by_default(https_server: HttpsServer) -> None:
    with pytest.raises(FetchRefused, match="must use https, not http"):
        fetch_image_url(f"http://localhost:{https_server.port}/x.png", settings_for(https_server))


def test_plain_http_when_allowed(gcs_emulator: GcsEmulator) -> None:
    """The emulator is a plain-HTTP server: the Host header and pinned address work without TLS too."""
    bucket = gcs_emulator.client().bucket(gcs_emulator.make_bucket("vivid-fetch-tests"))
    bucket.blob("plain.png").upload_from_string(PNG, content_type="image/png")
    url = f"{gcs_emulator.endpoint}/download/storage/v1/b/vivid-fetch-tests/o/plain.png?alt=media"
    settings = Settings(fetch_allow_http=True, fetch_allow_hosts=["127.0.0.1"])
    assert fetch_image_url(url, settings).data == PNG


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_loopback_is_refused_without_the_allow_list(https_server: HttpsServer, host: str) -> None:
    https_server.add("guarded.png", PNG, "image/png")
    settings = Settings(fetch_ca_bundle=https_server.ca_bundle_path)
    with pytest.raises(FetchRefused):
        fetch_image_url(f"https://{host}:{https_server.port}/guarded.png", settings)
    assert https_server.hits("guarded.png") == 0


def test_allow_list_takes_networks(https_server: HttpsServer) -> None:
    https_server.add("by-cidr.png", PNG, "image/png")
    settings = settings_for(https_server, fetch_allow_hosts=["127.0.0.0/8"])
    assert fetch_image_url(f"https://127.0.0.1:{https_server.port}/by-cidr.png", settings).data == PNG


def test_connects_to_the_vetted_address(https_server: HttpsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DNS answer that changes after the check (rebinding) is never consulted: one lookup, then that IP."""
    url = https_server.add("rebind.png", PNG, "image/png")
    answers = iter(["127.0.0.1"] + ["127.0.0.2"] * 10)  # nothing listens on 127.0.0.2
    lookups: list[str] = []

    def rebinding_getaddrinfo(host: str | bytes, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        lookups.append(host.decode() if isinstance(host, bytes) else host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
    assert fetch_image_url(url, settings_for(https_server)).data == PNG
    assert lookups == ["localhost"]


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.1/a.png",
        "https://172.16.5.4/a.png",
        "https://192.168.1.1/a.png",
        "https://100.64.0.1/a.png",
        "https://169.254.169.254/computeMetadata/v1/",
        "https://0.0.0.0/a.png",
        "https://224.0.0.1/a.png",
        "https://240.0.0.1/a.png",
        "https://127.1/a.png",
        "https://2130706433/a.png",
        "https://[::1]/a.png",
        "https://[::]/a.png",
        "https://[fe80::1]/a.png",
        "https://[fc00::1]/a.png",
        "https://[ff02::1]/a.png",
        "https://[::ffff:10.0.0.1]/a.png",
        "https://[64:ff9b::a00:1]/a.png",
        "https://[2002:a00:1::]/a.png",
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://metadata/computeMetadata/v1/",
        "https://anything.internal/a.png",
        "https://printer.local/a.png",
    ],
)
def test_internal_addresses_are_refused_before_connecting(url: str) -> None:
    started = time.monotonic()
    with pytest.raises(FetchRefused, match=r"private or reserved address|internal host"):
        fetch_image_url(url, Settings(fetch_timeout_seconds=5.0))
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    "location",
    [
        "https://10.0.0.1/a.png",
        "https://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token",
        "https://metadata.google.internal/",
        "https://[::ffff:127.0.0.1]:{port}/a.png",
        "http://example.com/a.png",
        "file:///etc/passwd",
    ],
)
def test_redirects_to_internal_addresses_are_refused(https_server: HttpsServer, location: str) -> None:
    url = https_server.redirect(f"to-internal-{abs(hash(location))}", location.format(port=https_server.port))
    with pytest.raises(FetchRefused):
        fetch_image_url(url, settings_for(https_server, fetch_allow_hosts=["localhost"]))


def test_the_deadline_covers_a_slow_answer(https_server: HttpsServer) -> None:
    url = https_server.add("slow.png", PNG, "image/png", delay=3.0)
    started = time.monotonic()
    with pytest.raises(InputUnreachable, match=r"did not answer within 0\.5 seconds"):
        fetch_image_url(url, settings_for(https_server, fetch_timeout_seconds=0.5))
    assert time.monotonic() - started < 1.5


def test_the_deadline_covers_the_whole_body_not_each_read(https_server: HttpsServer) -> None:
    body = make_image("PNG", (256, 256))
    url = https_server.add(
        "drip.png", body, "image/png", chunked=True, chunk_size=len(body) // 10, chunk_delay=0.2
    )
    started = time.monotonic()
    with pytest.raises(InputUnreachable, match=r"did not answer within 0\.6 seconds"):
        fetch_image_url(url, settings_for(https_server, fetch_timeout_seconds=0.6))
    assert time.monotonic() - started < 1.5


def test_content_length_over_the_limit_is_refused(https_server: HttpsServer) -> None:
    url = https_server.add("big-declared.png", PNG + bytes(5000), "image/png")
    with pytest.raises(InputTooLarge) as caught:
        fetch_image_url(url, settings_for(https_server, max_upload_bytes=1000))
    assert caught.value.message == f"image is {len(PNG) + 5000} bytes; the limit is 1000 bytes"


def test_streamed_body_over_the_limit_is_cut_off(https_server: HttpsServer) -> None:
    url = https_server.add("big-chunked.png", PNG + bytes(5 * 1024 * 1024), "image/png", chunked=True)
    with pytest.raises(InputTooLarge, match=r"image is larger than the limit of 0\.1 MB"):
        fetch_image_url(url, settings_for(https_server, max_upload_bytes=100 * 1024))


def test_non_image_content_type_is_refused(https_server: HttpsServer) -> None:
    url = https_server.add("page.html", PNG, "text/html; charset=utf-8")
    with pytest.raises(InvalidImage, match=r"is not an image \(content type text/html\)"):
        fetch_image_url(url, settings_for(https_server))


def test_corrupt_image_is_refused(https_server: HttpsServer) -> None:
    url = https_server.add("corrupt.png", PNG[: len(PNG) // 2], "image/png")
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        fetch_image_url(url, settings_for(https_server))


def test_other_formats_are_refused(https_server: HttpsServer) -> None:
    url = https_server.add("anim.gif", make_image("GIF"), "image/gif")
    with pytest.raises(InvalidImage, match=r"^image must be PNG, JPEG or WebP$"):
        fetch_image_url(url, settings_for(https_server))


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, InputNotFound), (410, InputNotFound), (403, StorageAccessDenied), (500, InputUnreachable)],
)
def test_http_errors(https_server: HttpsServer, status: int, error: type[StorageError]) -> None:
    url = https_server.add(f"status-{status}.png", b"nope", "text/plain", status=status)
    with pytest.raises(error, match=f"HTTP {status}"):
        fetch_image_url(url, settings_for(https_server))


def test_an_untrusted_certificate_is_refused(https_server: HttpsServer) -> None:
    url = https_server.add("untrusted.png", PNG, "image/png")
    settings = Settings(fetch_allow_hosts=["localhost"], fetch_timeout_seconds=5.0)
    with pytest.raises(InputUnreachable, match="TLS certificate of localhost is not trusted"):
        fetch_image_url(url, settings)


def test_credentials_in_the_url_are_refused(https_server: HttpsServer) -> None:
    url = f"https://user:hunter2@localhost:{https_server.port}/x.png"
    with pytest.raises(FetchRefused) as caught:
        fetch_image_url(url, settings_for(https_server))
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("secret-missing.png", {"body": b"", "content_type": "text/plain", "status": 404}),
        ("secret-slow.png", {"body": PNG, "content_type": "image/png", "delay": 2.0}),
        ("secret-page.png", {"body": PNG, "content_type": "text/html"}),
    ],
)
def test_messages_leave_out_the_query_string(
    https_server: HttpsServer, path: str, route: dict[str, Any]
) -> None:
    url = https_server.add(path, **route) + "?X-Amz-Signature=s3cr3t&token=t0k3n"
    with pytest.raises(StorageError) as caught:
        fetch_image_url(url, settings_for(https_server, fetch_timeout_seconds=0.5))
    assert path in caught.value.message
    for secret in ("s3cr3t", "t0k3n", "?"):
        assert secret not in caught.value.message
        assert secret not in str(caught.value)
