"""``rapport profile get ID``: print a profile as the API serves it."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime
from typing import Annotated

import orjson
import typer

from profiles.namespaces import Namespaces
from profiles.read import AsOfBeforeLastEventError, read_profile
from profiles.store import ProfileStore, UnreadableProfileError
from services.cli.instants import as_of_ms
from services.cli.names import namespace_name
from services.redis_client import make_redis
from services.settings import get_settings

app = typer.Typer(help="Customer profiles.", no_args_is_help=True)


@app.command("get")
def get(
    any_id: Annotated[str, typer.Argument(metavar="ID", help="A customer id, anonymous id or email.")],
    as_of: Annotated[
        datetime | None, typer.Option(help="RFC 3339 instant to compute windows and recency for (default: now).")
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(help="Redis namespace (default: the one the API serves).", callback=namespace_name),
    ] = None,
) -> None:
    """Print the canonical profile of ID as JSON; exit 1 if no profile has it."""
    view = asyncio.run(_read(any_id, as_of_ms(as_of), namespace))
    if view is None:
        typer.echo(f"no profile for {any_id!r}", err=True)
        raise typer.Exit(1)
    sys.stdout.buffer.write(orjson.dumps(view, option=orjson.OPT_INDENT_2) + b"\n")


async def _read(any_id: str, as_of_ms: int | None, namespace: str | None) -> dict[str, object] | None:
    settings = get_settings()
    redis = make_redis(settings)
    try:
        served = namespace or await Namespaces(redis).serving(settings.profile.namespace)
        store = ProfileStore(redis, served)
        return await read_profile(
            store, any_id, settings.profile.fold_config(), as_of_ms=as_of_ms, now_ms=int(time.time() * 1000)
        )
    except AsOfBeforeLastEventError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except UnreadableProfileError as exc:  # docs/streams.md, "Unreadable profiles"
        typer.echo(f"rapport: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        await redis.aclose()
