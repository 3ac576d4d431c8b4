"""``lookalike milvus``: the embedded Milvus Lite server, and roles on a Milvus server."""

from __future__ import annotations

import os
import signal
import sys
from typing import Annotated

import typer
from rich.table import Table

from cli.common import console, fail, handle_errors, settings_of
from cli.stack.milvus_lite import EmbeddedMilvus

app = typer.Typer(
    help="The embedded Milvus Lite server, and access control on a Milvus server.",
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def milvus(ctx: typer.Context) -> None:
    """Run the embedded Milvus Lite server (127.0.0.1, data under LOOKALIKE_HOME) until Ctrl-C.

    Milvus Lite has no authentication: it listens on 127.0.0.1 only. For a shared server, see
    `lookalike milvus init-roles`.
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = settings_of(ctx)
    if settings.milvus_uri is not None:
        fail(f"LOOKALIKE_MILVUS_URI is set ({settings.milvus_uri}): nothing to start")
    with handle_errors(), EmbeddedMilvus(settings.home, settings.milvus_port) as server:
        console.print(
            f"Milvus Lite serving {server.db_file} at [bold]{server.uri}[/] (Ctrl-C stops)"
        )
        _serve_until_interrupted(server)


def _serve_until_interrupted(server: EmbeddedMilvus) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        code = server.wait()
    except KeyboardInterrupt:
        console.print("stopping Milvus Lite")
        return
    if code != 0:
        fail(f"the Milvus Lite server exited with code {code}")


WRITER_PASSWORD_ENV = "MILVUS_WRITER_PASSWORD"
READER_PASSWORD_ENV = "MILVUS_READER_PASSWORD"


@app.command("init-roles")
def init_roles(
    ctx: typer.Context,
    writer_user: Annotated[
        str, typer.Option(help="User of the workers and the UI (writer role).")
    ] = "lookalike_writer",
    reader_user: Annotated[
        str, typer.Option(help="Read-only user for apps that query Milvus directly.")
    ] = "lookalike_reader",
    prefix: Annotated[
        str, typer.Option(help="Prefix of the role and privilege group names.")
    ] = "lookalike",
    db_name: Annotated[
        str, typer.Option(help="The database whose collections the roles cover.")
    ] = "default",
) -> None:
    """Create (or check) the writer and read-only roles and their users on a Milvus server.

    Needs LOOKALIKE_MILVUS_URI and an administrator's LOOKALIKE_MILVUS_TOKEN (root:PASSWORD).
    The users' passwords come from MILVUS_WRITER_PASSWORD and MILVUS_READER_PASSWORD, or are
    asked for without echo. Running it again changes nothing that is already right.
    """
    from services import roles

    settings = settings_of(ctx)
    uri, admin = settings.milvus_uri, settings.milvus_secret
    if uri is None:
        fail(
            "set LOOKALIKE_MILVUS_URI to the Milvus server to set up; the embedded Milvus Lite "
            "has no authentication (it listens on 127.0.0.1 only)",
            code=2,
        )
    if admin is None:
        fail("set LOOKALIKE_MILVUS_TOKEN to an administrator's credentials (root:PASSWORD)", code=2)
    if writer_user == reader_user:
        fail("the writer and the reader must be different users", code=2)
    with handle_errors():
        plan = roles.AccessPlan.build(prefix, db_name)
        users = [
            roles.UserSpec(
                writer_user, _password(WRITER_PASSWORD_ENV, writer_user), plan.writer.name
            ),
            roles.UserSpec(
                reader_user, _password(READER_PASSWORD_ENV, reader_user), plan.reader.name
            ),
        ]
        client = roles.connect(uri, admin)
        try:
            steps = roles.init_roles(
                client, plan, users, password_works=roles.password_works(uri), uri=uri
            )
        finally:
            client.close()
        enforced = roles.authentication_enforced(uri)
    table = Table("what", "name", "done", "detail", title=f"access control on {uri}")
    for step in steps:
        table.add_row(step.kind, step.name, step.action, step.detail)
    console.print(table)
    if not enforced:
        console.print(
            "[yellow]warning:[/] this server lets anyone in, so the roles are not enforced: set "
            "common.security.authorizationEnabled: true (see deploy/README.md)"
        )


def _password(variable: str, user: str) -> str:
    """A user's password from ``variable``, else asked for on the terminal (never echoed)."""
    value = os.environ.get(variable, "")
    if value:
        return value
    if not sys.stdin.isatty():
        fail(f"set {variable} to the password of Milvus user {user!r}", code=2)
    return str(
        typer.prompt(
            f"Password for Milvus user {user!r}", hide_input=True, confirmation_prompt=True
        )
    )
