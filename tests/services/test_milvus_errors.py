"""Every pymilvus/gRPC failure shape is mapped to our errors by type and status code."""

from __future__ import annotations

import grpc
import pytest
from pymilvus.exceptions import MilvusException, MilvusUnavailableException

from services.errors import CollectionNotFoundError, StoreError, StoreUnavailableError
from services.milvus_errors import is_unimplemented, map_milvus_error, mapped


class FakeRpcError(grpc.RpcError):
    """What grpc raises: an RpcError whose ``code()`` is the status."""

    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(f"rpc failed: {code.name}")
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def _chained(outer: Exception, cause: BaseException) -> Exception:
    try:
        raise outer from cause
    except Exception as exc:
        return exc


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (MilvusException(code=2, message="fail connecting"), StoreUnavailableError),
        (MilvusUnavailableException(message="server unavailable"), StoreUnavailableError),
        (MilvusException(code=grpc.StatusCode.UNAVAILABLE, message="x"), StoreUnavailableError),
        (FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED), StoreUnavailableError),
        (FakeRpcError(grpc.StatusCode.UNAVAILABLE), StoreUnavailableError),
        # pymilvus's retry loop giving up: a plain MilvusException caused by the transport error.
        (
            _chained(
                MilvusException(message="[search] Retry timeout: 10s"),
                FakeRpcError(grpc.StatusCode.UNAVAILABLE),
            ),
            StoreUnavailableError,
        ),
        (MilvusException(code=100, message="collection not found"), CollectionNotFoundError),
        (MilvusException(code=700, message="index not found"), StoreError),
        (MilvusException(code=1, message="the word unavailable in a message"), StoreError),
        (FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT), StoreError),
        (FakeRpcError(grpc.StatusCode.PERMISSION_DENIED), StoreError),
    ],
)
def test_each_failure_shape_maps_to_its_error(raised: Exception, expected: type) -> None:
    mapped_error = map_milvus_error(raised, "run a search", "http://milvus:19530")
    assert type(mapped_error) is expected
    assert "run a search" in str(mapped_error)
    with pytest.raises(expected) as caught, mapped("run a search", "http://milvus:19530"):
        raise raised
    assert caught.value.__cause__ is raised


def test_errors_that_are_not_milvus_errors_pass_through_unchanged() -> None:
    bug = KeyError("id")
    assert map_milvus_error(bug, "read", "uri") is bug
    with pytest.raises(KeyError), mapped("read", "uri"):
        raise bug


def test_unimplemented_is_recognised_by_its_status_code() -> None:
    assert is_unimplemented(FakeRpcError(grpc.StatusCode.UNIMPLEMENTED))
    assert not is_unimplemented(FakeRpcError(grpc.StatusCode.UNAVAILABLE))
    assert not is_unimplemented(MilvusException(code=1, message="UNIMPLEMENTED"))
