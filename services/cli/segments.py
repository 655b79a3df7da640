"""``rapport segments list | get | put | delete | members``: segment definitions (the API's routes, from a shell)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import msgspec
import typer
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from profiles.namespaces import Namespaces
from profiles.segment_store import SegmentStore
from profiles.segments import DefinitionError, RuleError, SegmentDefinition
from services.cli.on_redis import run_on_redis
from services.settings import get_settings

app = typer.Typer(help="Segments: named CEL rules over profiles (docs/segments.md).", no_args_is_help=True)
T = TypeVar("T")


def _run(action: Callable[[SegmentStore], Awaitable[T]]) -> T:
    namespace = get_settings().profile.namespace

    async def on_served(redis: Redis) -> T:
        # The served namespace's, like the API's (a promoted namespace's after ``namespace promote``).
        return await action(SegmentStore(redis, await Namespaces(redis).serving(namespace)))

    return run_on_redis(on_served)


@app.command("list")
def list_segments() -> None:
    """Every segment with its version and live member count."""

    async def read(store: SegmentStore) -> tuple[dict[str, SegmentDefinition], dict[str, int]]:
        definitions = await store.definitions()
        return definitions, await store.counts(list(definitions))

    definitions, counts = _run(read)
    table = Table("segment", "version", "members", "rule")
    for name, d in definitions.items():
        table.add_row(name, str(d.version), str(counts[name]), d.rule)
    Console().print(table)


@app.command("get")
def get(name: Annotated[str, typer.Argument()]) -> None:
    """A segment's definition as JSON (exit 1 if there is none)."""
    definition = _run(lambda store: store.definition(name))
    if definition is None:
        typer.echo(f"no segment named {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(msgspec.json.encode(definition).decode())


@app.command("put")
def put(
    name: Annotated[str, typer.Argument()],
    rule: Annotated[str, typer.Option(help="A CEL rule, e.g. 'windows[\"7d\"].orders >= 2'.")],
    description: Annotated[str, typer.Option()] = "",
) -> None:
    """Create or change a segment; the rule is type-checked first (exit 2 with the position if it is wrong)."""
    try:
        saved = _run(lambda store: store.save(name, description, rule, now_ms=int(time.time() * 1000)))
    except RuleError as exc:
        typer.echo(f"{rule}\n{' ' * exc.position}^\n{exc.line}:{exc.column}: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    except DefinitionError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"{saved.name} version {saved.version}")


@app.command("delete")
def delete(name: Annotated[str, typer.Argument()]) -> None:
    """Delete a segment (exit 1 if there is none)."""
    if not _run(lambda store: store.delete(name)):
        typer.echo(f"no segment named {name!r}", err=True)
        raise typer.Exit(1)


@app.command("members")
def members(
    name: Annotated[str, typer.Argument()],
    after: Annotated[str | None, typer.Option(help="Start after this profile id.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
) -> None:
    """Member profile ids, one per line, in id order (exit 1 if there is no such segment)."""

    async def read(store: SegmentStore) -> list[str] | None:
        if await store.definition(name) is None:
            return None
        return await store.members(name, after, limit)

    found = _run(read)
    if found is None:
        typer.echo(f"no segment named {name!r}", err=True)
        raise typer.Exit(1)
    for member in found:
        typer.echo(member)
