"""``rapport keys create | revoke | list``: API keys (only their hashes are stored)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable
from typing import Annotated

import typer
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from services.api.keys import SCOPES, ApiKey, KeyDefinitionError, KeyStore
from services.cli.on_redis import run_on_redis
from services.settings import get_settings

app = typer.Typer(help="API keys.", no_args_is_help=True)


@app.command("create")
def create(
    name: Annotated[str, typer.Option(help="Who or what uses the key.")],
    scopes: Annotated[str, typer.Option(help=f"Comma-separated: {', '.join(SCOPES)}.")],
    publishable: Annotated[bool, typer.Option(help="A browser key: events:write and scores:read only.")] = False,
    origin: Annotated[list[str] | None, typer.Option(help="Allowed origin of a publishable key (repeat).")] = None,
    rate_limit: Annotated[
        float | None, typer.Option(help="Requests per second (default: api.default_rate_per_s).")
    ] = None,
) -> None:
    """Create a key and print its token once (it cannot be shown again)."""
    settings = get_settings()
    wanted = [s.strip() for s in scopes.split(",") if s.strip()]
    rate = settings.api.default_rate_per_s if rate_limit is None else rate_limit

    def make(redis: Redis) -> Awaitable[tuple[str, ApiKey]]:
        return KeyStore(redis).create(name, wanted, publishable=publishable, origins=origin or [], rate_per_s=rate)

    try:
        token, key = run_on_redis(make)
    except KeyDefinitionError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"created key {key.key_id} ({', '.join(sorted(key.scopes))})", err=True)
    typer.echo(token)


@app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key id (the 12 hex digits in the token).")]) -> None:
    """Revoke a key: every API process refuses it within api.key_cache_s."""
    if not run_on_redis(lambda redis: KeyStore(redis).revoke(key_id)):
        typer.echo(f"no key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


@app.command("list")
def list_keys() -> None:
    """Every key with its scopes and state (never a token)."""
    table = Table("id", "name", "scopes", "kind", "origins", "rate/s", "created", "revoked")
    for key in run_on_redis(lambda redis: KeyStore(redis).all()):
        table.add_row(
            key.key_id,
            key.name,
            ",".join(sorted(key.scopes)),
            "publishable" if key.publishable else "secret",
            " ".join(key.origins),
            f"{key.rate_per_s:g}",
            _when(key.created_at),
            _when(key.revoked_at),
        )
    Console().print(table)


def _when(at: float | None) -> str:
    return "" if at is None else dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
