"""Access commands: principals and their hashed tokens in SALESML_HOME/access.yaml."""

from __future__ import annotations

from typing import Annotated

import typer

from salesml.cli.common import (
    CommandError,
    JsonOpt,
    access_app,
    emit,
    failures,
    new_table,
    stdout,
)
from salesml.settings import get_settings


@access_app.command("add")
def access_add(
    name: Annotated[str, typer.Option(help="Unique principal name.")],
    role: Annotated[str, typer.Option(help="sales_rep, sales_manager, executive, application, data_scientist or "
                                           "model_validator.")],
    scope: Annotated[str, typer.Option(help="rep:ID, team:ID or all.")] = "all",
    as_json: JsonOpt = False,
) -> None:
    """Add a principal and print its new token once (only its scrypt hash is stored)."""
    from salesml.access import issue_token

    settings = get_settings()
    with failures(as_json):
        try:
            token = issue_token(settings.access_file, name, role, scope)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    emit({"name": name, "role": role, "scope": scope, "token": token}, as_json,
         lambda r: stdout.print(f"token for {name} (shown once): {token}"))


@access_app.command("list")
def access_list(as_json: JsonOpt = False) -> None:
    """List principals (names, roles, scopes; never tokens)."""
    from salesml.access import load_principals

    settings = get_settings()
    rows = [{"name": p.name, "role": p.role, "scope": p.scope} for p in load_principals(settings.access_file)]

    def render(r: dict) -> None:
        rich = new_table("name", "role", "scope", title="Principals")
        for p in r["principals"]:
            rich.add_row(p["name"], p["role"], p["scope"])
        stdout.print(rich)

    emit({"principals": rows}, as_json, render)


@access_app.command("revoke")
def access_revoke(
    name: Annotated[str, typer.Argument(help="Principal to remove.")],
    as_json: JsonOpt = False,
) -> None:
    """Remove a principal; its token stops working at once."""
    from salesml.access import load_principals, save_principals

    settings = get_settings()
    with failures(as_json):
        principals = load_principals(settings.access_file)
        if not any(p.name == name for p in principals):
            raise CommandError(f"no principal named {name!r}")
        save_principals(settings.access_file, [p for p in principals if p.name != name])
    emit({"revoked": name}, as_json, lambda r: stdout.print(f"revoked {name}"))


