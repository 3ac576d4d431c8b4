"""A real S3 protocol server on 127.0.0.1 for tests: moto's server, in its own process.

Producers and workers reach it the way they reach any S3-compatible storage, through boto3's
standard configuration; :meth:`S3Server.env` is that configuration (endpoint, dummy
credentials, region).
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

from cli.stack.net import free_port
from cli.stack.supervisor import Child
from services.errors import LookalikeError

REGION = "us-east-1"


class S3Server:
    """``python -m moto.server`` on a free port; :meth:`start` returns once it answers.

    ``enforce_access``: moto checks IAM policies (after the three unauthenticated requests
    :meth:`user_with_policy` makes); the server is then for one user, made by that call."""

    def __init__(
        self, log_file: Path, port: int | None = None, *, enforce_access: bool = False
    ) -> None:
        self.port = port or free_port()
        self.log_file = log_file
        self.enforce_access = enforce_access
        self.child: Child | None = None
        self.access_key = ("testing", "testing")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """boto3's configuration for this server (or for ``endpoint``)."""
        return {
            "AWS_ENDPOINT_URL": endpoint or self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key[0],
            "AWS_SECRET_ACCESS_KEY": self.access_key[1],
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            # Fail fast where a test points at a closed port.
            "AWS_MAX_ATTEMPTS": "2",
            "AWS_RETRY_MODE": "standard",
        }

    def start(self) -> None:
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        env = _base_env()
        if self.enforce_access:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
        self.child = Child("moto S3 server", argv, env, self.log_file)
        self.child.wait_ready(self._answers, 30.0, LookalikeError)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(5.0)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=0.5):
                return True
        except OSError:
            return False

    def client(self, service: str = "s3") -> Any:
        import boto3

        return boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key[0],
            aws_secret_access_key=self.access_key[1],
            region_name=REGION,
        )

    def user_with_policy(self, policy: dict[str, Any]) -> None:
        """An IAM user with ``policy``; its key is used from now on (env, client)."""
        iam = self.client("iam")
        iam.create_user(UserName="lookalike")
        iam.put_user_policy(
            UserName="lookalike", PolicyName="lookalike", PolicyDocument=json.dumps(policy)
        )
        key = iam.create_access_key(UserName="lookalike")["AccessKey"]
        self.access_key = (key["AccessKeyId"], key["SecretAccessKey"])

    def reset(self) -> None:
        """Forget every bucket (moto's reset endpoint)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=5):
            pass


def _base_env() -> dict[str, str]:
    import os

    return {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
