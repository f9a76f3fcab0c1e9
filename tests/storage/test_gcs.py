"""Cloud Storage reads, writes and result URLs against the real client and gcp-storage-emulator."""

from __future__ import annotations

import binascii
import hashlib
import json
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fixtures.gcs_emulator import GcsEmulator
from vividflow.settings import Settings
from vividflow.storage import gcs
from vividflow.storage.errors import InputNotFound, InputTooLarge, StorageAccessDenied, StorageError
from vividflow.storage.gcs import GcsLocation, parse_gcs_url

BUCKET = "vivid-gcs-tests"
SIGNER = "signer@vivid-test.iam.gserviceaccount.com"


@pytest.fixture
def bucket(gcs_emulator: GcsEmulator) -> str:
    return gcs_emulator.make_bucket(BUCKET)


def put(emulator: GcsEmulator, name: str, data: bytes, content_type: str = "image/png") -> None:
    emulator.client().bucket(BUCKET).blob(name).upload_from_string(data, content_type=content_type)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("gs://bkt/a/b.png", GcsLocation("bkt", "a/b.png")),
        ("gs://bkt/odd name?#%20.png", GcsLocation("bkt", "odd name?#%20.png")),
        ("https://storage.googleapis.com/bkt/a%20b/c%2Bd.png", GcsLocation("bkt", "a b/c+d.png")),
        ("https://storage.cloud.google.com/bkt/x.png", GcsLocation("bkt", "x.png")),
        ("https://bkt.storage.googleapis.com/dir/x%C3%BC.png", GcsLocation("bkt", "dir/xü.png")),
        ("gs://bkt", None),
        ("gs://bkt/", None),
        ("gs://Not_A_Bucket/x", None),
        ("https://storage.googleapis.com/bkt/x.png?X-Goog-Signature=abc", None),
        ("https://example.com/bkt/x.png", None),
        ("http://storage.googleapis.com/bkt/x.png", None),
        ("/tmp/x.png", None),
    ],
)
def test_parse_gcs_url(url: str, expected: GcsLocation | None) -> None:
    assert parse_gcs_url(url) == expected


def test_location_uri_and_public_url_quote_the_name() -> None:
    location = GcsLocation("bkt", "dir/a b+c?ü.mp4")
    assert location.uri == "gs://bkt/dir/a b+c?ü.mp4"
    assert location.public_url == "https://storage.googleapis.com/bkt/dir/a%20b%2Bc%3F%C3%BC.mp4"
    assert parse_gcs_url(location.public_url) == location


def test_storage_client_is_cached_and_uses_the_emulator(gcs_emulator: GcsEmulator) -> None:
    client = gcs.storage_client()
    assert client is gcs.storage_client()
    assert client.api_endpoint == gcs_emulator.endpoint


@pytest.mark.parametrize("name", ["plain.png", "dir with space/ü+%20 (1).png"])
def test_download_by_gs_and_https_url(gcs_emulator: GcsEmulator, bucket: str, name: str) -> None:
    put(gcs_emulator, name, b"image bytes")
    by_gs = parse_gcs_url(f"gs://{bucket}/{name}")
    by_https = parse_gcs_url(GcsLocation(bucket, name).public_url)
    assert by_gs is not None and by_https is not None
    assert gcs.download_bytes(by_gs, 1024) == b"image bytes"
    assert gcs.download_bytes(by_https, 1024) == b"image bytes"


def test_download_missing_object(bucket: str) -> None:
    with pytest.raises(InputNotFound) as caught:
        gcs.download_bytes(GcsLocation(bucket, "missing.png"), 1024)
    assert caught.value.message == f"gs://{bucket}/missing.png does not exist"


def test_download_missing_bucket(gcs_emulator: GcsEmulator) -> None:
    with pytest.raises(InputNotFound, match="does not exist"):
        gcs.download_bytes(GcsLocation("no-such-bucket-here", "x.png"), 1024)


def test_download_refuses_large_objects_by_metadata(gcs_emulator: GcsEmulator, bucket: str) -> None:
    put(gcs_emulator, "big.png", bytes(3000))
    with pytest.raises(InputTooLarge) as caught:
        gcs.download_bytes(GcsLocation(bucket, "big.png"), 2999)
    assert caught.value.message == "image is 3000 bytes; the limit is 2999 bytes"
    assert gcs.download_bytes(GcsLocation(bucket, "big.png"), 3000) == bytes(3000)


def test_upload_file_sets_content_type(gcs_emulator: GcsEmulator, bucket: str, tmp_path: Path) -> None:
    video = tmp_path / "out.mp4"
    video.write_bytes(b"\0\0\0\x18ftypmp42 fake video")
    gcs.upload_file(video, GcsLocation(bucket, "videos/job 1.mp4"), "video/mp4")
    blob = gcs_emulator.client().bucket(bucket).get_blob("videos/job 1.mp4")
    assert blob is not None
    assert blob.content_type == "video/mp4"
    assert blob.download_as_bytes() == video.read_bytes()


def test_upload_to_missing_bucket_is_a_storage_error(gcs_emulator: GcsEmulator, tmp_path: Path) -> None:
    video = tmp_path / "out.mp4"
    video.write_bytes(b"video")
    with pytest.raises(StorageError, match=r"^the bucket no-such-bucket-here does not exist$"):
        gcs.upload_file(video, GcsLocation("no-such-bucket-here", "v.mp4"), "video/mp4")


def test_result_url_is_public_by_default() -> None:
    url = gcs.result_url(GcsLocation("bkt", "videos/a b.mp4"), Settings())
    assert url == "https://storage.googleapis.com/bkt/videos/a%20b.mp4"


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, rsa.RSAPublicKey]:
    """A service-account JSON key with a fresh RSA key (no network involved)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "vivid-test",
        "private_key_id": "test-key",
        "private_key": pem,
        "client_email": SIGNER,
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path = tmp_path_factory.mktemp("signing") / "key.json"
    path.write_text(json.dumps(info))
    return path, key.public_key()


def verify_v4_signature(url: str, public_key: rsa.RSAPublicKey) -> None:
    """Check the signature as Cloud Storage does: rebuild the string to sign from the URL itself."""
    parts = urlsplit(url)
    canonical_query, _, signature = parts.query.rpartition("&X-Goog-Signature=")
    query = parse_qs(canonical_query)
    canonical_request = "\n".join(
        ["GET", parts.path, canonical_query, f"host:{parts.netloc}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    scope = unquote(query["X-Goog-Credential"][0]).split("/", 1)[1]
    string_to_sign = "\n".join(
        [
            "GOOG4-RSA-SHA256",
            query["X-Goog-Date"][0],
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    public_key.verify(
        binascii.unhexlify(signature), string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256()
    )


def test_signed_url_is_a_valid_v4_signature(
    gcs_emulator: GcsEmulator, signing_key: tuple[Path, rsa.RSAPublicKey]
) -> None:
    key_file, public_key = signing_key
    settings = Settings(
        gcs_signed_urls=True, gcs_signing_key_file=key_file, gcs_signed_url_expiry_seconds=3600
    )
    url = gcs.result_url(GcsLocation("bkt", "videos/a b.mp4"), settings)
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert (
        f"{parts.scheme}://{parts.netloc}{parts.path}"
        == "https://storage.googleapis.com/bkt/videos/a%20b.mp4"
    )
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert query["X-Goog-Credential"][0].startswith(SIGNER + "/")
    assert query["X-Goog-Expires"] == ["3600"]
    assert "X-Goog-Signature" in query
    verify_v4_signature(url, public_key)


def test_signed_url_expiry_is_capped_at_seven_days(
    gcs_emulator: GcsEmulator, signing_key: tuple[Path, rsa.RSAPublicKey]
) -> None:
    settings = Settings(gcs_signed_urls=True, gcs_signing_key_file=signing_key[0])
    settings = settings.model_copy(update={"gcs_signed_url_expiry_seconds": 30 * 24 * 3600})
    url = gcs.result_url(GcsLocation("bkt", "v.mp4"), settings)
    assert parse_qs(urlsplit(url).query)["X-Goog-Expires"] == [str(7 * 24 * 3600)]


def test_signing_without_a_private_key_is_a_clear_error(gcs_emulator: GcsEmulator) -> None:
    with pytest.raises(StorageError, match="signing needs service-account credentials"):
        gcs.result_url(GcsLocation("bkt", "v.mp4"), Settings(gcs_signed_urls=True))


def test_signing_with_a_broken_key_file_is_a_clear_error(tmp_path: Path) -> None:
    key_file = tmp_path / "key.json"
    key_file.write_text('{"type": "service_account"}')
    with pytest.raises(StorageError, match="not a service-account key"):
        gcs.result_url(
            GcsLocation("bkt", "v.mp4"), Settings(gcs_signed_urls=True, gcs_signing_key_file=key_file)
        )


def test_missing_credentials_are_access_denied(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Outside the emulator the client needs application default credentials; none is a clear error."""
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing-key.json"))
    with pytest.raises(StorageAccessDenied) as caught:
        gcs.download_bytes(GcsLocation("bkt", "x.png"), 1024)
    expected = "cannot read gs://bkt/x.png: Google Cloud credentials are missing or invalid"
    assert caught.value.message == expected
    assert "missing-key.json" not in caught.value.message
