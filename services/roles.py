"""Access control on a Milvus server: a writer role for lookalike's workers and UI, a read-only
role for photo-sharing apps that query the collections directly.

Each role is granted custom privilege groups on every collection of one database::

    group            level        privileges                                  writer  reader
    <p>_read         collection   Query Search DescribeCollection GetLoadState   yes     yes
                                  GetLoadingProgress IndexDetail GetStatistics
    <p>_write        collection   Insert Upsert Delete CreateIndex Load          yes     no
    <p>_create       database     CreateCollection ShowCollections               yes     no
                                  DescribeDatabase

Milvus requires the privileges of one group to be of one level, hence three groups. Nobody but
an administrator may drop a collection. :func:`init_roles` is idempotent: it creates what is
missing, brings our groups to exactly the privileges above, and leaves the rest alone. It needs
an administrator's token (``root`` or a user with the built-in ``admin`` role); Milvus Lite has
no authentication, so there is nothing to set up on the embedded server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from services.errors import ConfigError, LookalikeError, StoreError
from services.milvus_errors import is_unimplemented, map_milvus_error

DEFAULT_PREFIX = "lookalike"
DEFAULT_DATABASE = "default"
ANY_COLLECTION = "*"

READ_PRIVILEGES = (
    "Query",
    "Search",
    "DescribeCollection",
    "GetLoadState",
    "GetLoadingProgress",
    "IndexDetail",
    "GetStatistics",
)
WRITE_PRIVILEGES = ("Insert", "Upsert", "Delete", "CreateIndex", "Load")
CREATE_PRIVILEGES = ("CreateCollection", "ShowCollections", "DescribeDatabase")

# Milvus's own rules (proxy.maxNameLength and friends), checked here for a clear message.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")
_USER = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")
MIN_PASSWORD, MAX_PASSWORD = 6, 256


@dataclass(frozen=True)
class PrivilegeGroup:
    """A custom privilege group; all its privileges are of one ``level``."""

    name: str
    level: Literal["collection", "database"]
    privileges: tuple[str, ...]


@dataclass(frozen=True)
class RoleSpec:
    """A role and the groups it is granted on every collection of the plan's database."""

    name: str
    groups: tuple[PrivilegeGroup, ...]


@dataclass(frozen=True)
class AccessPlan:
    """The groups and the two roles, named ``<prefix>_...``, in one database."""

    db_name: str
    groups: tuple[PrivilegeGroup, ...]
    writer: RoleSpec
    reader: RoleSpec

    @classmethod
    def build(cls, prefix: str = DEFAULT_PREFIX, db_name: str = DEFAULT_DATABASE) -> AccessPlan:
        read = PrivilegeGroup(f"{prefix}_read", "collection", READ_PRIVILEGES)
        write = PrivilegeGroup(f"{prefix}_write", "collection", WRITE_PRIVILEGES)
        create = PrivilegeGroup(f"{prefix}_create", "database", CREATE_PRIVILEGES)
        plan = cls(
            db_name=db_name,
            groups=(read, write, create),
            writer=RoleSpec(f"{prefix}_writer", (read, write, create)),
            reader=RoleSpec(f"{prefix}_reader", (read,)),
        )
        for name in [g.name for g in plan.groups] + [plan.writer.name, plan.reader.name]:
            if not _NAME.match(name):
                raise ConfigError(
                    f"role or group name {name!r} is not valid in Milvus (letters, digits and "
                    "_, at most 32, not starting with a digit): choose a shorter --prefix"
                )
        return plan


@dataclass(frozen=True)
class UserSpec:
    """A user to create (or check) and the role it gets."""

    name: str
    password: str = field(repr=False)
    role: str

    def __post_init__(self) -> None:
        if not _USER.match(self.name):
            raise ConfigError(
                f"user name {self.name!r} is not valid in Milvus (a letter, then letters, "
                "digits, _ . -, at most 32)"
            )
        if not MIN_PASSWORD <= len(self.password) <= MAX_PASSWORD:
            raise ConfigError(
                f"the password of user {self.name!r} must have {MIN_PASSWORD} to "
                f"{MAX_PASSWORD} characters"
            )


@dataclass(frozen=True)
class Step:
    """One reconciled item: what it is, its name, and what was done."""

    kind: Literal["privilege group", "role", "grant", "user", "user role"]
    name: str
    action: Literal["created", "updated", "unchanged"]
    detail: str = ""


class RbacClient(Protocol):
    """The part of ``pymilvus.MilvusClient`` that access control uses."""

    def list_privilege_groups(self) -> list[dict[str, Any]]: ...
    def create_privilege_group(self, group_name: str) -> None: ...
    def add_privileges_to_group(self, group_name: str, privileges: list[str]) -> None: ...
    def remove_privileges_from_group(self, group_name: str, privileges: list[str]) -> None: ...
    def list_roles(self) -> list[str]: ...
    def create_role(self, role_name: str) -> None: ...
    def describe_role(self, role_name: str, *, db_name: str = "") -> dict[str, Any]: ...
    def grant_privilege_v2(
        self, role_name: str, privilege: str, collection_name: str, db_name: str | None = None
    ) -> None: ...
    def list_users(self) -> list[str]: ...
    def create_user(self, user_name: str, password: str) -> None: ...
    def describe_user(self, user_name: str) -> dict[str, Any]: ...
    def grant_role(self, user_name: str, role_name: str) -> None: ...


PasswordCheck = Callable[[str, str], bool]


def init_roles(
    client: RbacClient,
    plan: AccessPlan,
    users: Sequence[UserSpec],
    *,
    password_works: PasswordCheck,
    uri: str = "Milvus",
) -> list[Step]:
    """Create or reconcile ``plan``'s groups and roles and ``users``; returns what was done.

    A user that exists keeps its password when ``password_works(name, password)`` confirms it;
    otherwise ConfigError (lookalike never resets another account's password silently).
    """
    steps: list[Step] = []
    with _mapped("set up access control", uri):
        steps += _reconcile_groups(client, plan.groups)
        for role in (plan.writer, plan.reader):
            steps += _reconcile_role(client, role, plan.db_name)
        existing_users = set(client.list_users())
        for user in users:
            steps += _reconcile_user(client, user, user.name in existing_users, password_works)
    return steps


def _reconcile_groups(client: RbacClient, groups: Sequence[PrivilegeGroup]) -> Iterator[Step]:
    current = {
        str(g["privilege_group"]): {str(p) for p in g.get("privileges", ())}
        for g in client.list_privilege_groups()
    }
    for group in groups:
        wanted = set(group.privileges)
        if group.name not in current:
            client.create_privilege_group(group_name=group.name)
            client.add_privileges_to_group(group_name=group.name, privileges=sorted(wanted))
            yield Step("privilege group", group.name, "created", ", ".join(group.privileges))
            continue
        missing, extra = wanted - current[group.name], current[group.name] - wanted
        if missing:
            client.add_privileges_to_group(group_name=group.name, privileges=sorted(missing))
        if extra:
            client.remove_privileges_from_group(group_name=group.name, privileges=sorted(extra))
        if missing or extra:
            detail = f"added {sorted(missing)}, removed {sorted(extra)}"
            yield Step("privilege group", group.name, "updated", detail)
        else:
            yield Step("privilege group", group.name, "unchanged")


def _reconcile_role(client: RbacClient, role: RoleSpec, db_name: str) -> Iterator[Step]:
    if role.name in set(client.list_roles()):
        yield Step("role", role.name, "unchanged")
        granted = _granted(client, role.name, db_name)
    else:
        client.create_role(role_name=role.name)
        yield Step("role", role.name, "created")
        granted = set()
    for group in role.groups:
        where = f"{group.name} on {db_name}.{ANY_COLLECTION}"
        if (group.name, db_name) in granted or _grant(client, role.name, group.name, db_name):
            yield Step("grant", role.name, "unchanged", where)
        else:
            yield Step("grant", role.name, "created", where)


def _grant(client: RbacClient, role_name: str, group_name: str, db_name: str) -> bool:
    """Grant ``group_name`` on every collection of ``db_name``; True when it was granted
    already (Milvus said so)."""
    from pymilvus.exceptions import MilvusException

    try:
        client.grant_privilege_v2(
            role_name=role_name,
            privilege=group_name,
            collection_name=ANY_COLLECTION,
            db_name=db_name,
        )
    except MilvusException as exc:
        if "exist" in str(exc.message).lower():
            return True
        raise
    return False


def _granted(client: RbacClient, role_name: str, db_name: str) -> set[tuple[str, str]]:
    """(privilege or group, database) pairs granted to the role on every collection."""
    described = client.describe_role(role_name=role_name, db_name=db_name)
    pairs = set()
    for grant in described.get("privileges", ()):
        if str(grant.get("object_name", "")) == ANY_COLLECTION:
            name = _api_name(str(grant.get("privilege", "")))
            pairs.add((name, str(grant.get("db_name") or db_name)))
    return pairs


def _api_name(privilege: str) -> str:
    """A granted custom group as its name: the metastore may report it prefixed."""
    for prefix in ("PrivilegeGroup", "Group"):
        if privilege.startswith(prefix) and len(privilege) > len(prefix):
            return privilege[len(prefix) :]
    return privilege


def _reconcile_user(
    client: RbacClient, user: UserSpec, exists: bool, password_works: PasswordCheck
) -> Iterator[Step]:
    if not exists:
        client.create_user(user_name=user.name, password=user.password)
        yield Step("user", user.name, "created")
    elif password_works(user.name, user.password):
        yield Step("user", user.name, "unchanged", "password verified")
    else:
        raise ConfigError(
            f"Milvus user {user.name!r} exists with another password; give its current "
            "password, or have an administrator drop the user (client.drop_user) and run "
            "`lookalike milvus init-roles` again"
        )
    roles = {str(r) for r in client.describe_user(user_name=user.name).get("roles", ())}
    if user.role in roles:
        yield Step("user role", user.name, "unchanged", user.role)
    else:
        client.grant_role(user_name=user.name, role_name=user.role)
        yield Step("user role", user.name, "created", user.role)


@contextmanager
def _mapped(action: str, uri: str) -> Iterator[None]:
    """pymilvus failures as our errors, with what to do about a missing admin right."""
    from pymilvus.exceptions import MilvusException

    try:
        yield
    except MilvusException as exc:
        text = str(exc.message).lower()
        if "permission" in text or ("privilege" in text and "deny" in text):
            raise StoreError(
                f"Milvus at {uri} refused to {action}: {exc.message}. LOOKALIKE_MILVUS_TOKEN "
                "must be an administrator's (root, or a user with the admin role)"
            ) from exc
        raise map_milvus_error(exc, action, uri) from exc
    except Exception as exc:
        # gRPC's own errors, e.g. UNIMPLEMENTED from Milvus Lite, which has no access control.
        if is_unimplemented(exc):
            raise StoreError(
                f"the server at {uri} does not implement access control (Milvus Lite?): "
                "roles need Milvus standalone or distributed"
            ) from exc
        ours = map_milvus_error(exc, action, uri)
        if ours is exc:
            raise
        raise ours from exc


def connect(uri: str, token: str, *, timeout: float = 10.0) -> Any:
    """A MilvusClient with ``token``; StoreError (naming the cause) when Milvus refuses it."""
    from pymilvus import MilvusClient

    from services.store import GRPC_OPTIONS

    try:
        with _mapped("connect", uri):
            return MilvusClient(
                uri=uri, token=token, timeout=timeout, grpc_options=dict(GRPC_OPTIONS)
            )
    except StoreError as exc:
        if _is_auth_failure(exc):
            raise StoreError(
                f"Milvus at {uri} refused the user name or password (check the token)"
            ) from exc
        raise


def password_works(uri: str) -> PasswordCheck:
    """A check that logs in to ``uri`` as a user: True when Milvus accepts the password."""

    def check(user: str, password: str) -> bool:
        try:
            client = connect(uri, f"{user}:{password}")
        except StoreError as exc:
            if _is_auth_failure(exc):
                return False
            raise
        try:
            # Connecting may be lazy: one call that every authenticated user may make.
            client.get_server_version()
        except Exception as exc:
            if _is_auth_failure(exc):
                return False
            raise StoreError(f"Milvus at {uri} failed to answer: {exc}") from exc
        finally:
            client.close()
        return True

    return check


def authentication_enforced(uri: str) -> bool:
    """Whether the server refuses a made-up user (``common.security.authorizationEnabled``)."""
    return not password_works(uri)("lookalike_probe", "not-a-password-0")


_AUTH_WORDS = ("auth", "credential", "password", "unauthenticated")


def _is_auth_failure(exc: BaseException) -> bool:
    """Whether Milvus refused the credentials, anywhere down the exception's causes (pymilvus
    reports a refused login as a connection failure caused by the gRPC error)."""
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            return False
        if not isinstance(current, LookalikeError):  # ours name the URI, which may say "auth"
            code = getattr(current, "code", None)
            code_text = str(code() if callable(code) else code).lower()
            text = str(getattr(current, "message", "") or current).lower()
            if "unauthenticated" in code_text or any(word in text for word in _AUTH_WORDS):
                return True
        current = current.__cause__ or current.__context__
    return False
