"""``rapport trainer`` and ``rapport models list | rollback | release`` (docs/models.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import orjson
import typer
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from profiles.model_store import ModelStore
from profiles.models.snapshots import SnapshotRejectedError, read_meta
from profiles.namespaces import Namespaces, NamespaceStateError
from services.cli.on_redis import run_on_redis
from services.cli.signals import on_stop_signals
from services.logs import configure_logging
from services.settings import get_settings
from streams.trainer import MissingSecretError, run_trainer

app = typer.Typer(help="Model snapshots: versions, metrics, rollback.", no_args_is_help=True)
T = TypeVar("T")


def trainer() -> None:
    """Learn every model from models.examples and publish signed snapshots, until SIGTERM/SIGINT."""
    settings = get_settings()
    configure_logging(settings.stream.log_level)

    async def run() -> None:
        stop = asyncio.Event()
        on_stop_signals(asyncio.get_running_loop(), lambda _: stop.set())
        await run_trainer(settings, stop)

    try:
        asyncio.run(run())
    except MissingSecretError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    except NamespaceStateError as exc:  # its namespace is being dropped
        typer.echo(f"rapport: {exc}", err=True)
        raise typer.Exit(1) from None


def _run(action: Callable[[ModelStore], Awaitable[T]]) -> T:
    namespace = get_settings().profile.namespace

    async def on_served(redis: Redis) -> T:
        # The models the API serves: a promoted namespace's after ``namespace promote`` (a rollback of the
        # configured one's would change nothing served).
        return await action(ModelStore(redis, await Namespaces(redis).serving(namespace)))

    return run_on_redis(on_served)


@app.command("list")
def list_models() -> None:
    """Every kept version of every model: when, examples seen, rolling metrics; which one is served."""
    settings = get_settings()
    secret = settings.models.secret.get_secret_value().encode()
    names = list(settings.models.specs())

    async def read(store: ModelStore) -> list[tuple[str, dict[int, bytes], int | None, int | None, int]]:
        return [
            (
                n,
                await store.snapshots(n),
                await store.active_version(n),
                await store.pinned(n),
                len(await store.drift(n)),
            )
            for n in names
        ]

    table = Table("model", "version", "served", "created", "examples", "metrics", "drift events")
    for name, blobs, active, pinned, drifts in _run(read):
        if not blobs:
            table.add_row(name, "-", "", "", "0", "no snapshot yet (scores are cold-start heuristics)", str(drifts))
        for version, blob in sorted(blobs.items(), reverse=True):
            served = ("pinned" if pinned == version else "yes") if active == version else ""
            try:
                meta = read_meta(blob, secret) if secret else None
            except SnapshotRejectedError as exc:
                table.add_row(name, str(version), served, "", "", f"REFUSED: {exc}", str(drifts))
                continue
            if meta is None:
                table.add_row(name, str(version), served, "", "", "set RAPPORT_MODELS__SECRET to read", str(drifts))
                continue
            created = datetime.fromtimestamp(meta.created_at_ms / 1000, UTC).isoformat(timespec="seconds")
            metrics = orjson.dumps({k: v if v is None else round(v, 4) for k, v in meta.metrics.items()}).decode()
            table.add_row(name, str(version), served, created, f"{meta.examples_seen:,}", metrics, str(drifts))
    Console(width=240).print(table)


@app.command("rollback")
def rollback(
    name: Annotated[str, typer.Argument(metavar="NAME")], version: Annotated[int, typer.Argument(metavar="VERSION")]
) -> None:
    """Serve VERSION of NAME (a kept version) until `rapport models release NAME`; training goes on."""
    if name not in get_settings().models.specs():
        raise typer.BadParameter(f"no model named {name!r}")
    if not _run(lambda store: store.rollback(name, version)):
        typer.echo(f"{name} v{version} is not kept (see `rapport models list`)", err=True)
        raise typer.Exit(1)
    typer.echo(f"serving {name} v{version} (pinned)")


@app.command("release")
def release(name: Annotated[str, typer.Argument(metavar="NAME")]) -> None:
    """Undo a rollback: serve the newest version again (exit 1 if the model has no snapshot yet)."""
    if name not in get_settings().models.specs():
        raise typer.BadParameter(f"no model named {name!r}")
    newest = _run(lambda store: store.release(name))
    if newest is None:
        typer.echo(f"{name} has no snapshot yet", err=True)
        raise typer.Exit(1)
    typer.echo(f"serving {name} v{newest}")
