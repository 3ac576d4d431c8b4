"""An in-memory stand-in for the RBAC calls of pymilvus.MilvusClient, with Milvus's answers'
shapes, to test the reconciliation logic of services.roles without a server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BUILT_IN_GROUPS = {
    "CollectionReadOnly": {"Query", "Search", "DescribeCollection"},
    "DatabaseAdmin": {"CreateCollection", "DropCollection"},
}


@dataclass
class FakeRbac:
    groups: dict[str, set[str]] = field(default_factory=lambda: {**BUILT_IN_GROUPS})
    roles: dict[str, set[tuple[str, str, str]]] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    user_roles: dict[str, set[str]] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)

    def list_privilege_groups(self) -> list[dict[str, Any]]:
        return [{"privilege_group": n, "privileges": tuple(p)} for n, p in self.groups.items()]

    def create_privilege_group(self, group_name: str) -> None:
        assert group_name not in self.groups
        self.groups[group_name] = set()
        self.changes.append(f"create group {group_name}")

    def add_privileges_to_group(self, group_name: str, privileges: list[str]) -> None:
        self.groups[group_name] |= set(privileges)
        self.changes.append(f"add {privileges} to {group_name}")

    def remove_privileges_from_group(self, group_name: str, privileges: list[str]) -> None:
        self.groups[group_name] -= set(privileges)
        self.changes.append(f"remove {privileges} from {group_name}")

    def list_roles(self) -> list[str]:
        return list(self.roles)

    def create_role(self, role_name: str) -> None:
        assert role_name not in self.roles
        self.roles[role_name] = set()
        self.changes.append(f"create role {role_name}")

    def describe_role(self, role_name: str, *, db_name: str = "") -> dict[str, Any]:
        grants = [
            # Milvus reports a custom group granted with the metastore's prefix.
            {
                "object_type": "Global",
                "object_name": collection,
                "db_name": db,
                "role_name": role_name,
                "privilege": f"PrivilegeGroup{privilege}",
                "grantor_name": "root",
            }
            for privilege, collection, db in sorted(self.roles[role_name])
            if not db_name or db == db_name
        ]
        return {"role": role_name, "description": "", "privileges": grants}

    def grant_privilege_v2(
        self, role_name: str, privilege: str, collection_name: str, db_name: str | None = None
    ) -> None:
        assert privilege in self.groups, f"no privilege group {privilege}"
        self.roles[role_name].add((privilege, collection_name, db_name or "default"))
        self.changes.append(f"grant {privilege} to {role_name}")

    def list_users(self) -> list[str]:
        return list(self.users)

    def create_user(self, user_name: str, password: str) -> None:
        assert user_name not in self.users
        self.users[user_name] = password
        self.user_roles[user_name] = set()
        self.changes.append(f"create user {user_name}")

    def describe_user(self, user_name: str) -> dict[str, Any]:
        return {"user_name": user_name, "roles": tuple(self.user_roles[user_name])}

    def grant_role(self, user_name: str, role_name: str) -> None:
        assert role_name in self.roles
        self.user_roles[user_name].add(role_name)
        self.changes.append(f"grant role {role_name} to {user_name}")

    def password_works(self, user_name: str, password: str) -> bool:
        return self.users.get(user_name) == password

    def effective(self, user_name: str) -> set[str]:
        """Every privilege a user holds through its roles' groups."""
        return {
            p
            for role in self.user_roles[user_name]
            for group, _, _ in self.roles[role]
            for p in self.groups[group]
        }
