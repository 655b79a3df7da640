"""``rapport scores get ID [--as-of]``: a profile's scores as the API serves them."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime
from typing import Annotated

import orjson
import typer

from profiles.model_store import ModelStore
from profiles.namespaces import Namespaces
from profiles.read import AsOfBeforeLastEventError, ScoresRead, read_scores
from profiles.store import ProfileStore
from profiles.timeutil import iso
from services.cli.instants import as_of_ms
from services.model_cache import ModelCache
from services.redis_client import make_redis
from services.settings import get_settings

app = typer.Typer(help="Scores from the online models.", no_args_is_help=True)


@app.command("get")
def get(
    any_id: Annotated[str, typer.Argument(metavar="ID", help="A customer id, anonymous id or email.")],
    as_of: Annotated[datetime | None, typer.Option(help="RFC 3339 instant (default: now).")] = None,
) -> None:
    """Print every model's score for ID's profile as JSON, with the models the API serves; exit 1 if no profile
    has it."""
    at = as_of_ms(as_of)
    if not get_settings().models.secret.get_secret_value():
        typer.echo("rapport: RAPPORT_MODELS__SECRET is not set: no model is verified, so cold-start scores", err=True)
    read = asyncio.run(_read(any_id, at))
    if isinstance(read.error, AsOfBeforeLastEventError):
        typer.echo(str(read.error), err=True)
        raise typer.Exit(2)
    if read.error is not None:  # its stored profile does not decode (docs/streams.md, "Unreadable profiles")
        typer.echo(f"rapport: {read.error}", err=True)
        raise typer.Exit(1)
    if read.scores is None:
        typer.echo(f"no profile for {any_id!r}", err=True)
        raise typer.Exit(1)
    out = {
        "profile_id": read.profile_id,
        "scores": {
            name: {
                "value": s.value,
                "model": s.model,
                "model_version": s.model_version,
                "as_of": iso(s.as_of_ms),
                "computed_at": iso(s.computed_at_ms),
                "cold_start": s.cold_start,
            }
            for name, s in read.scores.items()
        },
    }
    sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")


async def _read(any_id: str, as_of_ms: int | None) -> ScoresRead:
    settings = get_settings()
    redis = make_redis(settings)
    try:
        namespace = await Namespaces(redis).serving(settings.profile.namespace)  # the API's, after a promotion
        specs = settings.models.specs()
        cache = ModelCache(ModelStore(redis, namespace), specs, settings.models.secret.get_secret_value().encode(), 0.0)
        reads = await read_scores(
            ProfileStore(redis, namespace),
            [any_id],
            settings.profile.fold_config(),
            specs,
            await cache.current(),
            as_of_ms=as_of_ms,
            now_ms=int(time.time() * 1000),
        )
        return reads[any_id]
    finally:
        await redis.aclose()
