"""pymilvus and gRPC failures mapped to :mod:`services.errors`, by type and status code.

pymilvus raises :class:`MilvusException` with a Milvus status code (``exc.code``) for what the
server refused, and for transport failures either a ``MilvusException`` carrying
``CONNECT_FAILED`` or a gRPC status code, or the ``grpc.RpcError`` itself (deadlines), often as
the cause of a retry that ran out. Never the message text: it changes between releases.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

from services.errors import CollectionNotFoundError, StoreError, StoreUnavailableError

# pymilvus.client.types.Status.CONNECT_FAILED: no channel to the server.
_CONNECT_FAILED = 2
# pymilvus.exceptions.ErrorCode.COLLECTION_NOT_FOUND (Milvus 2.3+).
_COLLECTION_NOT_FOUND = 100


def _unreachable_grpc_codes() -> frozenset[object]:
    import grpc

    return frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def _grpc_code(exc: BaseException) -> object | None:
    import grpc

    code = getattr(exc, "code", None)
    if isinstance(exc, grpc.RpcError) and callable(code):
        return cast(object, code())
    return None


def is_unimplemented(exc: BaseException) -> bool:
    """True when the server does not implement the call (Milvus Lite and GetVersion)."""
    import grpc

    return bool(_grpc_code(exc) == grpc.StatusCode.UNIMPLEMENTED)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_unreachable(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says the server could not be reached in time."""
    from pymilvus.exceptions import MilvusException, MilvusUnavailableException

    unreachable = _unreachable_grpc_codes()
    for link in _causes(exc):
        if isinstance(link, MilvusUnavailableException):
            return True
        if isinstance(link, MilvusException) and (
            link.code == _CONNECT_FAILED or link.code in unreachable
        ):
            return True
        if _grpc_code(link) in unreachable:
            return True
    return False


def map_milvus_error(exc: Exception, action: str, uri: str) -> Exception:
    """Our error for a pymilvus/gRPC failure while doing ``action`` at ``uri``; ``exc`` itself
    when it is neither (a bug of ours, to surface as it is)."""
    import grpc
    from pymilvus.exceptions import MilvusException

    if not isinstance(exc, MilvusException | grpc.RpcError):
        return exc
    detail = exc.message if isinstance(exc, MilvusException) else str(exc)
    if is_unreachable(exc):
        return StoreUnavailableError(
            f"Milvus at {uri} is unreachable while trying to {action}: {detail}. "
            "Start it (`lookalike milvus`) or check LOOKALIKE_MILVUS_URI"
        )
    if isinstance(exc, MilvusException) and exc.code == _COLLECTION_NOT_FOUND:
        return CollectionNotFoundError(
            f"Milvus at {uri} has no such collection while trying to {action} "
            f"(dropped meanwhile?): {detail}"
        )
    return StoreError(f"Milvus failed to {action}: {detail}")


@contextmanager
def mapped(action: str, uri: str) -> Iterator[None]:
    """Map pymilvus/gRPC failures inside the block to our errors, naming the action and server."""
    try:
        yield
    except Exception as exc:
        ours = map_milvus_error(exc, action, uri)
        if ours is exc:
            raise
        raise ours from exc
