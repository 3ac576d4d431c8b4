"""Quarantining duplicates that are objects in S3-compatible storage, or deleting them.

The object counterpart of :mod:`services.fileops`, with the same :class:`FileAction` per entry.
A move is a server-side CopyObject to ``s3://QBUCKET/QPREFIX/<bucket>/<key>`` (the source's own
bucket and key below the quarantine prefix, so two buckets never collide), pinned to the ETag
the object had when it was checked (``CopySourceIfMatch``), then a check that the copy has the
source's size (and ETag, where the source's is a plain MD5), and only then a DeleteObject of the
original. A target that exists is never overwritten; nor is an original that is there again
when an object is restored (:func:`restore`). S3 has no "create only if absent" copy, so the
check is a HeadObject just before the copy: a writer racing it in that instant can still win.

botocore's errors are mapped by :func:`services.sources.map_s3_error` (type and error code);
each becomes that entry's ``error``, and the other entries go on.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from services.errors import SourceReadError
from services.fileops import FileAction
from services.sources import S3_PREFIX, map_s3_error, s3_client, split_s3_uri

log = logging.getLogger(__name__)


class ObjectError(Exception):
    """One object operation failed; the message says why (for that entry's ``error``)."""


def quarantine_target(uri: str, quarantine: str) -> str:
    """Where ``uri`` goes under the ``quarantine`` prefix (``s3://QBUCKET[/QPREFIX]``)."""
    bucket, key = split_s3_uri(uri)
    qbucket, qprefix = split_s3_uri(quarantine)
    qprefix = qprefix.strip("/")
    return f"{S3_PREFIX}{qbucket}/{qprefix + '/' if qprefix else ''}{bucket}/{key}"


def move_into(uris: Sequence[str], quarantine: str) -> list[FileAction]:
    """Move each object of ``uris`` under the ``quarantine`` prefix (copy, verify, delete)."""
    actions = []
    for uri in uris:
        target = quarantine_target(uri, quarantine)
        try:
            _move(uri, target)
        except ObjectError as exc:
            actions.append(FileAction(uri, error=str(exc)))
            continue
        log.info("moved %s to %s", uri, target)
        actions.append(FileAction(uri, target=target))
    return actions


def delete(uris: Sequence[str]) -> list[FileAction]:
    """Delete each object of ``uris``; one that is not there is reported, not counted."""
    actions = []
    for uri in uris:
        try:
            if _head(uri) is None:
                raise ObjectError("object not found (deleted already?)")
            _call(uri, "delete_object", **_location(uri))
        except ObjectError as exc:
            actions.append(FileAction(uri, error=f"cannot delete: {exc}"))
            continue
        log.info("deleted %s", uri)
        actions.append(FileAction(uri))
    return actions


def restore(quarantined: str, original: str) -> FileAction:
    """Copy a quarantined object back to ``original`` (never over an object there now), then
    delete the quarantined copy. The action's ``path`` is ``original``, ``target`` the copy."""
    try:
        _move(quarantined, original)
    except ObjectError as exc:
        return FileAction(original, error=str(exc))
    log.info("restored %s from %s", original, quarantined)
    return FileAction(original, target=quarantined)


def exists(uri: str) -> bool:
    """Whether an object is at ``uri``; ObjectError when that cannot be told."""
    return _head(uri) is not None


def sha256_of(uri: str) -> str:
    """The sha256 of the object at ``uri``, streamed; ObjectError when it cannot be read."""
    response = _call(uri, "get_object", **_location(uri))
    digest = hashlib.sha256()
    body = response["Body"]
    try:
        for block in iter(lambda: body.read(1 << 20), b""):
            digest.update(block)
    finally:
        body.close()
    return digest.hexdigest()


def _move(source: str, target: str) -> None:
    head = _head(source)
    if head is None:
        raise ObjectError(f"{source} is gone (object not found)")
    if _head(target) is not None:
        raise ObjectError(f"{target} exists; not overwritten")
    bucket, key = split_s3_uri(source)
    etag = str(head.get("ETag", ""))
    _call(
        target,
        "copy_object",
        CopySource={"Bucket": bucket, "Key": key},
        CopySourceIfMatch=etag,
        **_location(target),
    )
    copied = _head(target)
    if copied is None or not _same_object(head, copied):
        raise ObjectError(
            f"the copy at {target} does not match {source} (size or ETag); the original is kept"
        )
    _call(source, "delete_object", **_location(source))


def _same_object(source: dict[str, Any], copy: dict[str, Any]) -> bool:
    if int(source.get("ContentLength", -1)) != int(copy.get("ContentLength", -2)):
        return False
    etag = str(source.get("ETag", ""))
    # A multipart object's ETag ("...-N") is not its MD5; a copy gets a new one. Size only then.
    return "-" in etag or etag == str(copy.get("ETag", ""))


def _head(uri: str) -> dict[str, Any] | None:
    """HeadObject's answer, or None when no object is there."""
    try:
        head: dict[str, Any] = _call(uri, "head_object", **_location(uri))
    except _MissingError:
        return None
    return head


class _MissingError(ObjectError):
    pass


def _location(uri: str) -> dict[str, str]:
    bucket, key = split_s3_uri(uri)
    return {"Bucket": bucket, "Key": key}


def _call(uri: str, operation: str, **arguments: Any) -> Any:
    """``client.<operation>(**arguments)`` with botocore's errors mapped to ObjectError."""
    try:
        return getattr(s3_client(), operation)(**arguments)
    except Exception as exc:
        mapped = map_s3_error(uri, exc)
        if mapped is None:
            raise
        if isinstance(mapped, SourceReadError):
            if _is_missing_object(exc):
                raise _MissingError(f"{uri}: {mapped.reason}") from exc
            raise ObjectError(f"{uri}: {mapped.reason}") from exc
        raise ObjectError(str(mapped)) from exc


def _is_missing_object(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in {"NoSuchKey", "404", "NotFound"}


def read_bytes(uri: str) -> bytes:
    """The whole object at ``uri`` (a manifest: small); ObjectError when it cannot be read."""
    response = _call(uri, "get_object", **_location(uri))
    body = response["Body"]
    try:
        data: bytes = body.read()
    finally:
        body.close()
    return data


def put_new(uri: str, data: bytes) -> bool:
    """Write ``data`` to ``uri`` unless an object is there (False then); ObjectError on failure."""
    if _head(uri) is not None:
        return False
    _call(uri, "put_object", Body=data, **_location(uri))
    return True
