"""Where image bytes come from: local files, objects in S3-compatible storage, or web URLs.

A :class:`Source` lists its entries, each with a change key (what the files cache compares to
skip an entry stored unchanged), and reads one entry's bytes into memory. One exhaustive factory,
:func:`scheme_of` / :class:`Sources`, picks the implementation by the reference's scheme:

- a plain path: :class:`LocalSource`, walked by ``services.discovery``; change key ``mtime_ns``;
  read exactly as ``services.decode.load_image`` reads a file;
- ``s3://bucket[/prefix]``: :class:`S3Source`, listed with ListObjectsV2 (paginated); change key
  the object's ETag (quotes stripped); read with one GetObject, never written to disk, refused
  over ``max_source_bytes``. boto3's standard configuration applies (``AWS_ENDPOINT_URL``,
  ``AWS_PROFILE``, credentials, region), so MinIO, Ceph RGW and AWS all work;
- ``https://host/path`` (or ``http://``): :class:`HttpSource`, one entry per URL; change key the
  ETag or Last-Modified of a HEAD; read with one bounded GET (timeouts, redirects, size).

botocore's errors are mapped here, by type and error code: a connection that fails is
:class:`~services.errors.SourceUnavailableError` (transient, the batch is retried); a missing
bucket or object, or access denied, is :class:`~services.errors.SourceReadError` for that entry.
urllib's are mapped the same way, by type and HTTP status (5xx, 408, 429: transient).
"""

from __future__ import annotations

import functools
import http.client
import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol

from services.decode import read_image_file
from services.discovery import IMAGE_SUFFIXES, RAW_SUFFIXES, discover
from services.errors import ConfigError, SourceReadError, SourceUnavailableError
from services.settings import DEFAULT_MAX_SOURCE_BYTES

log = logging.getLogger(__name__)

Scheme = Literal["file", "s3", "https"]
S3_PREFIX = "s3://"
_S3_PAGE = 1000  # keys per ListObjectsV2 page (S3's own maximum)
HTTP_TIMEOUT_SECONDS = 30.0  # connect, and each read, of one URL
HTTP_MAX_REDIRECTS = 5
HTTP_ATTEMPTS = 3  # tries of one URL whose server cannot be reached, before it fails
HTTP_BACKOFF_SECONDS = 0.5
# Error codes that say "try again later", not "this object is bad".
_S3_TRANSIENT_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling", "503"}
)
_S3_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_S3_DENIED_CODES = frozenset(
    {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}
)


@dataclass(frozen=True)
class Entry:
    """One thing to ingest as its source listed it, or (``problem`` set) one that cannot be.

    On the queue it is ``[ref, size, change]``: ``[path, size, mtime_ns]`` for a local file,
    ``[s3://bucket/key, size, etag]`` for an object. ``size`` is -1 where it is unknown."""

    ref: str
    size: int
    change: int | str
    problem: str | None = None

    @property
    def stat_key(self) -> str:
        """What the files cache holds for the entry as it is now."""
        return f"{self.size}:{self.change}"


class Source(Protocol):
    """A place images are listed and read from."""

    def entries(self) -> Iterator[Entry]:
        """Everything under this source's roots, problems included (never raises for one)."""
        ...

    def read(self, ref: str) -> bytes:
        """The bytes of ``ref``; SourceReadError (or another DecodeError) for that entry,
        SourceUnavailableError when the source cannot be reached at all."""
        ...


def change_key(validator: str) -> str:
    """An ETag or Last-Modified as a change key: no quotes, and no ``:`` (the files cache
    separates its fields with it)."""
    return validator.strip().strip('"').replace(":", "-")


def scheme_of(ref: str) -> Scheme:
    """The scheme of a root or entry reference; ConfigError on one we do not read."""
    scheme, sep, _ = ref.partition("://")
    if not sep:
        return "file"
    if scheme.lower() == "s3":
        return "s3"
    if scheme.lower() in {"https", "http"}:
        return "https"
    raise ConfigError(
        f"cannot ingest {ref!r}: unknown scheme {scheme!r} (use a path, s3:// or https://)"
    )


class LocalSource:
    """Files and folders on a local file system, walked as ``services.discovery`` does."""

    def __init__(self, roots: Sequence[str | Path] = (), *, recursive: bool = True) -> None:
        self.roots = [Path(root) for root in roots]
        self.recursive = recursive

    def entries(self) -> Iterator[Entry]:
        for found in discover(self.roots, recursive=self.recursive):
            path = str(found.path)
            if found.problem is not None:
                yield Entry(path, -1, -1, found.problem)
                continue
            try:
                stat = found.path.stat()
            except OSError:
                yield Entry(path, -1, -1)  # the worker reports why it cannot be read
                continue
            yield Entry(path, stat.st_size, stat.st_mtime_ns)

    def read(self, ref: str) -> bytes:
        return read_image_file(ref)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); ConfigError without a bucket."""
    if not uri.lower().startswith(S3_PREFIX):
        raise ConfigError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len(S3_PREFIX) :].partition("/")
    if not bucket:
        raise ConfigError(f"no bucket in {uri!r} (expected s3://BUCKET[/PREFIX])")
    return bucket, key


def _takes_key(key: str) -> bool:
    """Keys taken by name: image and RAW suffixes, and keys with no suffix at all (decoding
    tells whether they are images); folder markers and other suffixes are left out."""
    if key.endswith("/"):
        return False
    name = PurePosixPath(key).name
    if name.startswith("."):
        return False
    suffix = PurePosixPath(name).suffix.lower()
    return suffix == "" or suffix in IMAGE_SUFFIXES or suffix in RAW_SUFFIXES


def s3_client() -> Any:
    """This process's S3 client (boto3's standard configuration), shared by every caller."""
    return _s3_client()


@functools.cache
def _s3_client() -> Any:
    """One S3 client per process, from boto3's standard configuration (env, profile)."""
    import boto3
    from botocore.config import Config

    # Short timeouts: an unreachable endpoint is reported (and the batch retried) quickly.
    config = Config(connect_timeout=5, read_timeout=30)
    return boto3.session.Session().client("s3", config=config)


class S3Source:
    """Objects under ``s3://bucket[/prefix]`` roots (any S3-compatible endpoint)."""

    def __init__(
        self, roots: Sequence[str] = (), *, recursive: bool = True, max_bytes: int
    ) -> None:
        self.roots = [split_s3_uri(root) for root in roots]
        self.recursive = recursive
        self.max_bytes = max_bytes

    def entries(self) -> Iterator[Entry]:
        for bucket, prefix in self.roots:
            root = f"{S3_PREFIX}{bucket}/{prefix}"
            try:
                yield from self._list(bucket, prefix)
            except SourceReadError as exc:
                yield Entry(root, -1, -1, exc.reason)

    def _list(self, bucket: str, prefix: str) -> Iterator[Entry]:
        client = _s3_client()
        options: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": _S3_PAGE}
        if not self.recursive:
            options["Delimiter"] = "/"
        while True:
            with mapped_s3_errors(f"{S3_PREFIX}{bucket}/{prefix}"):
                page = client.list_objects_v2(**options)
            for item in page.get("Contents", ()):
                key = str(item["Key"])
                if _takes_key(key):
                    etag = change_key(str(item.get("ETag", "")))
                    yield Entry(f"{S3_PREFIX}{bucket}/{key}", int(item["Size"]), etag)
            if not page.get("IsTruncated"):
                return
            options["ContinuationToken"] = page["NextContinuationToken"]

    def read(self, ref: str) -> bytes:
        bucket, key = split_s3_uri(ref)
        with mapped_s3_errors(ref):
            response = _s3_client().get_object(Bucket=bucket, Key=key)
            size = int(response.get("ContentLength", -1))
            body = response["Body"]
            try:
                if size > self.max_bytes:
                    raise SourceReadError(ref, self._too_large(size))
                data: bytes = body.read(self.max_bytes + 1)
            finally:
                body.close()
        if len(data) > self.max_bytes:
            raise SourceReadError(ref, self._too_large(len(data)))
        return data

    def _too_large(self, size: int) -> str:
        return _too_large(size, self.max_bytes)


def _too_large(size: int, limit: int) -> str:
    return f"{size} bytes are over the limit of {limit} (LOOKALIKE_MAX_SOURCE_BYTES); not read"


class mapped_s3_errors:  # noqa: N801 (used as a context manager, like contextlib's)
    """botocore's exceptions on ``ref`` -> ours, by type and error code."""

    def __init__(self, ref: str) -> None:
        self.ref = ref

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if exc is None:
            return
        mapped = map_s3_error(self.ref, exc)
        if mapped is not None:
            raise mapped from exc


def map_s3_error(ref: str, exc: BaseException) -> Exception | None:
    """Our exception for botocore's ``exc`` on ``ref`` (None: not botocore's, leave it)."""
    from botocore import exceptions as boto

    if isinstance(exc, boto.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _S3_TRANSIENT_CODES or status in {"500", "502", "503", "504"}:
            return SourceUnavailableError(f"object storage failed on {ref}: {code} (retrying)")
        if code == "NoSuchBucket":
            return SourceReadError(ref, "bucket does not exist")
        if code == "InvalidObjectState":
            return SourceReadError(ref, "object is archived (restore it first)")
        if code in _S3_MISSING_CODES:
            return SourceReadError(ref, "object not found (deleted since it was listed?)")
        if code in _S3_DENIED_CODES or status == "403":
            return SourceReadError(ref, f"access denied ({code}): check the credentials")
        return SourceReadError(ref, f"object storage refused the request ({code or status})")
    if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError):
        return SourceReadError(
            ref, "no AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
        )
    if isinstance(exc, boto.ConnectionError | boto.HTTPClientError):
        return SourceUnavailableError(
            f"cannot reach object storage for {ref} ({type(exc).__name__}); check "
            "AWS_ENDPOINT_URL and the network (retrying)"
        )
    if isinstance(exc, boto.BotoCoreError):
        return SourceReadError(ref, f"object storage client failed ({type(exc).__name__})")
    return None


class _BoundedRedirects(urllib.request.HTTPRedirectHandler):
    max_redirections = HTTP_MAX_REDIRECTS


class HttpSource:
    """Images at ``https://`` (or ``http://``) URLs, one entry per URL given.

    Listing is one HEAD per URL: its size and change key (the ETag, else Last-Modified; with
    neither, ``""``, which the producer never takes as unchanged). Reading is one GET with
    timeouts, at most ``HTTP_MAX_REDIRECTS`` redirects, and ``max_bytes``."""

    def __init__(
        self, roots: Sequence[str] = (), *, max_bytes: int, timeout: float = HTTP_TIMEOUT_SECONDS
    ) -> None:
        self.roots = list(roots)
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_BoundedRedirects())

    def entries(self) -> Iterator[Entry]:
        for url in self.roots:
            try:
                with mapped_http_errors(url):
                    request = urllib.request.Request(url, method="HEAD")
                    with self._opener.open(request, timeout=self.timeout) as response:
                        headers = response.headers
            except SourceReadError as exc:
                yield Entry(url, -1, -1, exc.reason)
                continue
            except SourceUnavailableError:
                yield Entry(url, -1, "")  # the worker tries again, and reports
                continue
            change = headers.get("ETag") or headers.get("Last-Modified") or ""
            yield Entry(url, int(headers.get("Content-Length") or -1), change_key(change))

    def read(self, ref: str) -> bytes:
        """One GET; a server that cannot be reached or answers 5xx is tried ``HTTP_ATTEMPTS``
        times, then fails this URL alone: URLs name many hosts, and one host down must not
        hold (and retry) a whole batch."""
        for attempt in range(1, HTTP_ATTEMPTS + 1):
            try:
                return self._get(ref)
            except SourceUnavailableError as exc:
                if attempt == HTTP_ATTEMPTS:
                    raise SourceReadError(ref, f"{exc} (gave up after {attempt} tries)") from exc
                time.sleep(HTTP_BACKOFF_SECONDS * attempt)
        raise AssertionError("unreachable")

    def _get(self, ref: str) -> bytes:
        with mapped_http_errors(ref), self._opener.open(ref, timeout=self.timeout) as response:
            size = int(response.headers.get("Content-Length") or -1)
            if size > self.max_bytes:
                raise SourceReadError(ref, _too_large(size, self.max_bytes))
            data: bytes = response.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise SourceReadError(ref, _too_large(len(data), self.max_bytes))
        return data


class mapped_http_errors(mapped_s3_errors):  # noqa: N801
    """urllib's exceptions on ``ref`` -> ours, by type and status code."""

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if exc is None:
            return
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()  # an HTTPError holds its response, and the connection with it
        mapped = map_http_error(self.ref, exc)
        if mapped is not None:
            raise mapped from exc


def map_http_error(ref: str, exc: BaseException) -> Exception | None:
    """Our exception for urllib's ``exc`` on ``ref`` (None: not a network error, leave it)."""
    if isinstance(exc, urllib.error.HTTPError):
        code = exc.code
        if code in {408, 429} or code >= 500:
            return SourceUnavailableError(f"web server failed on {ref}: HTTP {code} (retrying)")
        if 300 <= code < 400:
            return SourceReadError(ref, f"too many redirects (over {HTTP_MAX_REDIRECTS})")
        if code in {401, 403}:
            return SourceReadError(ref, f"access denied (HTTP {code})")
        if code in {404, 410}:
            return SourceReadError(ref, f"not found (HTTP {code})")
        return SourceReadError(ref, f"web server refused the request (HTTP {code})")
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, ssl.SSLError):
            return SourceReadError(ref, f"TLS failed ({type(reason).__name__})")
        if isinstance(reason, OSError):
            return _unreachable(ref, reason)
        return SourceReadError(ref, "cannot fetch URL (bad URL or unsupported redirect)")
    if isinstance(exc, ssl.SSLError):
        return SourceReadError(ref, f"TLS failed ({type(exc).__name__})")
    if isinstance(exc, http.client.HTTPException | OSError):
        return _unreachable(ref, exc)
    return None


def _unreachable(ref: str, exc: BaseException) -> SourceUnavailableError:
    return SourceUnavailableError(
        f"cannot reach the web server for {ref} ({type(exc).__name__}); retrying"
    )


class Sources:
    """The factory: one source per scheme for reading entries, made on first use."""

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_SOURCE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._readers: dict[Scheme, Source] = {}

    def listing(self, roots: Sequence[str], *, recursive: bool) -> list[Source]:
        """The sources that list ``roots``: the local ones walked together (links inside any of
        them are followed), each kind in the order first given."""
        by_scheme: dict[Scheme, list[str]] = {}
        for root in roots:
            by_scheme.setdefault(scheme_of(root), []).append(root)
        return [self._make(scheme, group, recursive) for scheme, group in by_scheme.items()]

    def read(self, ref: str) -> bytes:
        scheme = scheme_of(ref)
        if scheme not in self._readers:
            self._readers[scheme] = self._make(scheme, (), True)
        return self._readers[scheme].read(ref)

    def _make(self, scheme: Scheme, roots: Sequence[str], recursive: bool) -> Source:
        if scheme == "file":
            return LocalSource(roots, recursive=recursive)
        if scheme == "s3":
            return S3Source(roots, recursive=recursive, max_bytes=self.max_bytes)
        if scheme == "https":
            return HttpSource(roots, max_bytes=self.max_bytes)
        raise ConfigError(f"no source for scheme {scheme!r}")  # unreachable while exhaustive
