"""Sources: the scheme factory, botocore's errors mapped by type and code, and S3Source against
a real S3 protocol server (moto, in its own process on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import http.client
import io
import ssl
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError

import pytest
from botocore import exceptions as boto
from PIL import Image

from cli.stack.net import free_port
from services import sources
from services.errors import (
    ConfigError,
    DecodeError,
    SourceReadError,
    SourceUnavailableError,
)
from services.pipeline import analyze_batch
from services.sources import (
    Entry,
    HttpSource,
    LocalSource,
    S3Source,
    Sources,
    map_http_error,
    map_s3_error,
    scheme_of,
)
from testkit.s3server import S3Server
from testkit.webserver import Route, WebServer, web_server


def jpeg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    image = Image.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, seed * 13 % 256))
    for x in range(0, size[0], 8):
        image.putpixel((x, (seed * x) % size[1]), (255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A client of the session's S3 server, this process configured for it, no buckets."""
    s3_server.reset()
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    sources._s3_client.cache_clear()
    yield s3_server.client()
    sources._s3_client.cache_clear()


# -- the factory ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "scheme"),
    [
        ("/data/a.jpg", "file"),
        ("rel/a.jpg", "file"),
        ("s3://b/k", "s3"),
        ("S3://b/k", "s3"),
        ("https://h/a.jpg", "https"),
        ("http://h/a.jpg", "https"),
    ],
)
def test_scheme_of_a_reference(ref: str, scheme: str) -> None:
    assert scheme_of(ref) == scheme


def test_an_unknown_scheme_fails_loudly() -> None:
    with pytest.raises(ConfigError, match="unknown scheme 'gs'"):
        scheme_of("gs://bucket/key")
    with pytest.raises(ConfigError, match="no bucket"):
        S3Source(["s3:///key"], max_bytes=10)


def test_local_roots_are_listed_together(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(jpeg(1))
    listing = Sources().listing([str(tmp_path), "s3://bucket/p/", str(tmp_path)], recursive=True)
    assert [type(s) for s in listing] == [LocalSource, S3Source]
    local = listing[0]
    assert isinstance(local, LocalSource) and len(local.roots) == 2


def test_a_local_file_reads_as_load_image_reads_it(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(jpeg(1))
    (tmp_path / "folder.jpg").mkdir()
    assert Sources().read(str(tmp_path / "a.jpg")) == jpeg(1)
    with pytest.raises(DecodeError, match="is a directory"):
        Sources().read(str(tmp_path / "folder.jpg"))
    with pytest.raises(DecodeError, match="file not found"):
        Sources().read(str(tmp_path / "gone.jpg"))


# -- error mapping, by type and code --------------------------------------------------------


def client_error(code: str, status: int) -> boto.ClientError:
    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return boto.ClientError(response, "GetObject")


@pytest.mark.parametrize(
    ("exc", "kind", "reason"),
    [
        (client_error("NoSuchKey", 404), SourceReadError, "object not found"),
        (client_error("404", 404), SourceReadError, "object not found"),
        (client_error("NoSuchBucket", 404), SourceReadError, "bucket does not exist"),
        (client_error("AccessDenied", 403), SourceReadError, "access denied"),
        (client_error("InvalidAccessKeyId", 403), SourceReadError, "access denied"),
        (client_error("403", 403), SourceReadError, "access denied"),
        (client_error("InvalidObjectState", 403), SourceReadError, "archived"),
        (client_error("InvalidRange", 416), SourceReadError, "refused the request"),
        (client_error("SlowDown", 503), SourceUnavailableError, ""),
        (client_error("InternalError", 500), SourceUnavailableError, ""),
        (client_error("Whatever", 502), SourceUnavailableError, ""),
        (boto.EndpointConnectionError(endpoint_url="http://x"), SourceUnavailableError, ""),
        (boto.ConnectTimeoutError(endpoint_url="http://x"), SourceUnavailableError, ""),
        (boto.ReadTimeoutError(endpoint_url="http://x"), SourceUnavailableError, ""),
        (boto.ConnectionClosedError(endpoint_url="http://x"), SourceUnavailableError, ""),
        (boto.NoCredentialsError(), SourceReadError, "no AWS credentials"),
        (boto.ParamValidationError(report="bad"), SourceReadError, "client failed"),
    ],
)
def test_botocore_errors_are_mapped(exc: Exception, kind: type, reason: str) -> None:
    mapped = map_s3_error("s3://b/k.jpg", exc)
    assert type(mapped) is kind
    if isinstance(mapped, SourceReadError):
        assert reason in mapped.reason and mapped.path == "s3://b/k.jpg"
    else:
        assert "s3://b/k.jpg" in str(mapped)


def test_other_exceptions_are_left_alone() -> None:
    assert map_s3_error("s3://b/k", RuntimeError("ours")) is None


# -- S3Source against a real server ---------------------------------------------------------


def test_listing_is_paginated_filtered_and_keyed_by_etag(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "_S3_PAGE", 3)
    s3.create_bucket(Bucket="photos")
    keys = [f"2024/img{i:02d}.jpg" for i in range(8)] + ["2024/sub/deep.png", "2024/noext"]
    for i, key in enumerate(keys):
        s3.put_object(Bucket="photos", Key=key, Body=jpeg(i))
    for key in ("2024/notes.txt", "2024/.hidden.jpg", "2024/folder/", "other/x.jpg"):
        s3.put_object(Bucket="photos", Key=key, Body=b"x")
    listed = list(S3Source(["s3://photos/2024/"], max_bytes=10**6).entries())
    assert sorted(e.ref for e in listed) == sorted(f"s3://photos/{k}" for k in keys)
    head = s3.head_object(Bucket="photos", Key=keys[0])
    first = next(e for e in listed if e.ref.endswith(keys[0]))
    assert first.size == head["ContentLength"] and first.change == head["ETag"].strip('"')
    assert first.stat_key == f"{first.size}:{first.change}"

    flat = list(S3Source(["s3://photos/2024/"], recursive=False, max_bytes=10**6).entries())
    assert "s3://photos/2024/sub/deep.png" not in {e.ref for e in flat}
    assert len(flat) == len(keys) - 1


def test_reading_objects_and_their_failures(s3: Any) -> None:
    s3.create_bucket(Bucket="photos")
    s3.put_object(Bucket="photos", Key="a.jpg", Body=jpeg(1))
    s3.put_object(Bucket="photos", Key="big.jpg", Body=b"x" * 2000)
    source = S3Source([], max_bytes=1500)
    assert source.read("s3://photos/a.jpg") == jpeg(1)
    with pytest.raises(SourceReadError, match="over the limit of 1500"):
        source.read("s3://photos/big.jpg")
    with pytest.raises(SourceReadError, match="object not found"):
        source.read("s3://photos/gone.jpg")
    with pytest.raises(SourceReadError, match="bucket does not exist"):
        source.read("s3://nobucket/a.jpg")


def test_a_missing_bucket_lists_as_one_problem(s3: Any) -> None:
    listed = list(S3Source(["s3://nobucket/prefix"], max_bytes=10).entries())
    assert [(e.ref, e.problem) for e in listed] == [
        ("s3://nobucket/prefix", "bucket does not exist")
    ]


def test_an_unreachable_endpoint_is_transient(
    s3: Any, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    sources._s3_client.cache_clear()
    with pytest.raises(SourceUnavailableError, match="cannot reach object storage"):
        S3Source([], max_bytes=10).read("s3://photos/a.jpg")
    with pytest.raises(SourceUnavailableError):
        list(S3Source(["s3://photos/"], max_bytes=10).entries())


def test_analyze_batch_reads_objects_and_fails_bad_ones_alone(s3: Any) -> None:
    s3.create_bucket(Bucket="photos")
    s3.put_object(Bucket="photos", Key="a.jpg", Body=jpeg(1))
    s3.put_object(Bucket="photos", Key="empty.jpg", Body=b"")
    s3.put_object(Bucket="photos", Key="text.jpg", Body=b"not an image at all")
    s3.put_object(Bucket="photos", Key="huge.jpg", Body=jpeg(2, size=(400, 300)))
    refs = [f"s3://photos/{k}" for k in ("a.jpg", "empty.jpg", "text.jpg", "huge.jpg", "gone.jpg")]
    outcome = analyze_batch(refs, None, max_pixels=100_000, sources=Sources(max_bytes=10**6))
    assert [r.path for r in outcome.records] == ["s3://photos/a.jpg"]
    reasons = {f.path.rpartition("/")[2]: f.error for f in outcome.failures}
    assert reasons["empty.jpg"] == "empty file"
    assert "not an image" in reasons["text.jpg"] or "cannot identify" in reasons["text.jpg"]
    assert "LOOKALIKE_MAX_IMAGE_PIXELS" in reasons["huge.jpg"]
    assert "object not found" in reasons["gone.jpg"]
    # The same content read from disk gives the same record (content id and hashes).
    assert outcome.records[0].id == hashlib.sha256(jpeg(1)).hexdigest()


# -- HttpSource against a real HTTP server ----------------------------------------------------


@pytest.fixture
def web() -> Iterator[WebServer]:
    with web_server() as server:
        yield server


def test_urls_are_listed_with_their_validators(web: WebServer) -> None:
    web.routes["/etag.jpg"] = Route(jpeg(1), headers={"ETag": '"v1"'})
    web.routes["/dated.jpg"] = Route(
        jpeg(2), headers={"Last-Modified": "Tue, 01 Dec 2026 10:00:00 GMT"}
    )
    web.routes["/plain.jpg"] = Route(jpeg(3))
    urls = [web.url(p) for p in ("/etag.jpg", "/dated.jpg", "/plain.jpg", "/missing.jpg")]
    listed = {e.ref: e for e in HttpSource(urls, max_bytes=10**6).entries()}
    assert listed[urls[0]].change == "v1" and listed[urls[0]].size == len(jpeg(1))
    assert listed[urls[1]].change == "Tue, 01 Dec 2026 10-00-00 GMT"  # no ":" in a change key
    assert listed[urls[2]].change == "" and listed[urls[2]].problem is None
    assert listed[urls[3]].problem == "not found (HTTP 404)"


def test_reading_urls_bounded_by_size_redirects_and_time(
    web: WebServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "HTTP_BACKOFF_SECONDS", 0.01)
    web.routes["/a.jpg"] = Route(jpeg(1))
    web.routes["/moved"] = Route(redirect_to="/a.jpg")
    web.routes["/loop"] = Route(redirect_to="/loop")
    web.routes["/big.jpg"] = Route(b"x" * 3000)
    web.routes["/slow.jpg"] = Route(jpeg(2), delay=1.0)
    web.routes["/denied.jpg"] = Route(b"", 403)
    web.routes["/broken.jpg"] = Route(b"", 503)
    source = HttpSource([], max_bytes=2000, timeout=0.3)
    assert source.read(web.url("/a.jpg")) == jpeg(1)
    assert source.read(web.url("/moved")) == jpeg(1)
    cases = {
        "/loop": "too many redirects (over 5)",
        "/big.jpg": "3000 bytes are over the limit of 2000",
        "/denied.jpg": "access denied (HTTP 403)",
        "/missing.jpg": "not found (HTTP 404)",
    }
    for path, reason in cases.items():
        with pytest.raises(SourceReadError) as raised:
            source.read(web.url(path))
        assert reason in raised.value.reason
    with pytest.raises(SourceReadError, match=r"HTTP 503 .*gave up after 3 tries"):
        source.read(web.url("/broken.jpg"))
    assert web.hits["/broken.jpg"] == 3
    with pytest.raises(SourceReadError, match=r"TimeoutError.*gave up after 3 tries"):
        source.read(web.url("/slow.jpg"))
    closed = f"http://127.0.0.1:{free_port()}/a.jpg"
    with pytest.raises(SourceReadError, match="cannot reach the web server"):
        source.read(closed)


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (HTTPError("u", 500, "x", Message(), None), SourceUnavailableError, "HTTP 500"),
        (HTTPError("u", 429, "x", Message(), None), SourceUnavailableError, "HTTP 429"),
        (HTTPError("u", 410, "x", Message(), None), SourceReadError, "not found (HTTP 410)"),
        (HTTPError("u", 401, "x", Message(), None), SourceReadError, "access denied"),
        (HTTPError("u", 418, "x", Message(), None), SourceReadError, "refused the request"),
        (HTTPError("u", 301, "x", Message(), None), SourceReadError, "too many redirects"),
        (URLError(ConnectionRefusedError()), SourceUnavailableError, "ConnectionRefusedError"),
        (URLError(ssl.SSLCertVerificationError()), SourceReadError, "TLS failed"),
        (URLError("unknown url type"), SourceReadError, "bad URL"),
        (TimeoutError(), SourceUnavailableError, "TimeoutError"),
        (http.client.RemoteDisconnected(), SourceUnavailableError, "RemoteDisconnected"),
    ],
)
def test_urllib_errors_are_mapped(exc: Exception, kind: type, text: str) -> None:
    mapped = map_http_error("https://h/a.jpg", exc)
    assert type(mapped) is kind and text in str(mapped)


def test_a_url_without_validators_is_never_taken_as_unchanged() -> None:
    assert Entry("https://h/a.jpg", 10, "").stat_key == "10:"
