"""``rapport replay``: rebuild a namespace from the raw topics (``streams.replay``, docs/replay.md)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated, Final, TypeVar

import typer
from redis.asyncio import Redis
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from profiles.namespaces import Namespaces, NamespaceStateError
from profiles.store import ProfileStore
from services.cli.instants import instant_ms
from services.cli.names import namespace_name
from services.cli.on_redis import REFUSALS, refused
from services.cli.signals import Stopping
from services.gc_tuning import tune_gc
from services.logs import configure_logging
from services.redis_client import make_redis
from services.redis_lock import Held, exclusive
from services.settings import Settings, get_settings
from streams import replay as engine
from streams.backoff import Backoff, through_outages
from streams.replay_models import ReplayModels, RetrainConflictError
from streams.replay_segments import ReplaySegments

T = TypeVar("T")

#: How long a replay's lock outlives its last refresh (a replay on another host that died).
LOCK_MS: Final = 60_000


def replay(
    *,
    into: Annotated[
        str, typer.Option("--into", help="The namespace to write (created if new).", callback=namespace_name)
    ],
    start: Annotated[str, typer.Option("--from", help="RFC 3339 instant, or `earliest`.")] = "earliest",
    end: Annotated[
        str, typer.Option("--to", help="RFC 3339 instant, or `now` (the end when the replay starts).")
    ] = "now",
    topics: Annotated[
        list[str] | None, typer.Option("--topics", help="Raw topics (default: all five); repeat the option.")
    ] = None,
    chunk: Annotated[
        int, typer.Option(min=100, max=200_000, help="Records per chunk: per checkpoint and profile write.")
    ] = 200_000,
    retrain: Annotated[
        bool,
        typer.Option(help="Rebuild the models too, as new versions that activate when the namespace is promoted."),
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar; one summary line.")] = False,
) -> None:
    """Replay the raw topics' records between two instants into a namespace, with the live worker's
    validation, identity resolution and fold. Resumable: run the same command again after an interruption."""
    settings = get_settings()
    if retrain and into == settings.profile.namespace:
        # The live trainer owns the live namespace's models; a replay into it changes no profile anyway.
        raise typer.BadParameter(
            "--retrain rebuilds models into a new namespace, not the live one", param_hint="--into"
        )
    if retrain and not settings.models.secret.get_secret_value():
        raise typer.BadParameter("set RAPPORT_MODELS__SECRET: model snapshots are signed", param_hint="--retrain")
    configure_logging(logging.WARNING)
    tune_gc(settings.stream.replay_gc_young_threshold)
    from_ms, to_ms_ = instant_ms(start, "--from", "earliest"), instant_ms(end, "--to", "now")
    if from_ms is not None and to_ms_ is not None and from_ms > to_ms_:
        raise typer.BadParameter(f"{start} is after --to {end}", param_hint="--from")
    if from_ms is not None and to_ms_ is None and from_ms > time.time() * 1000:
        # It would replay nothing and record the namespace as replayed up to now.
        raise typer.BadParameter(f"{start} is in the future", param_hint="--from")
    try:
        names = engine.raw_topics(settings, topics)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--topics") from exc
    stopping = Stopping()
    try:
        result = asyncio.run(
            replay_through_outages(
                settings,
                into=into,
                topics=names,
                from_ms=from_ms,
                to_ms=to_ms_,
                chunk=chunk,
                quiet=quiet,
                retrain=retrain,
                stopping=stopping,
            )
        )
    except (engine.PlanMismatchError, RetrainConflictError, NamespaceStateError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    except REFUSALS as exc:  # another replay's lock; a damaged segment definition of the served namespace
        raise refused(exc) from None
    except (KeyboardInterrupt, engine.ReplayInterruptedError):
        # KeyboardInterrupt: a Ctrl-C before the replay's loop runs, or after it.
        typer.echo(f"replay into {into!r} interrupted: the same command resumes it from its last checkpoint", err=True)
        raise typer.Exit(128 + stopping.signal) from None
    typer.echo(
        f"replayed {result.done:,} records into {into!r} in {result.elapsed_s:.1f} s ({result.rate:,.0f} records/s): "
        f"{result.applied:,} events applied, {result.rejected:,} rejected, {result.erased:,} erased, "
        f"{result.written:,} profile writes"
        + (f", {result.examples:,} model examples learned" if retrain else "")
        + (
            f", {result.unfoldable:,} records set aside: their fold raised or their profile is unreadable (see the log)"
            if result.unfoldable
            else ""
        )
    )
    if result.handed_over:
        typer.echo(
            f"workers of {into!r} (consumer group {settings.profile_group_of(into)}) will start reading "
            f"{result.handed_over} raw partitions where this replay ended"
        )


async def replay_through_outages(
    settings: Settings,
    *,
    into: str,
    topics: list[str],
    from_ms: int | None,
    to_ms: int | None,
    chunk: int,
    quiet: bool,
    retrain: bool,
    stopping: Stopping | None = None,
) -> engine.Progress:
    """The replay, resumed from its checkpoint after each outage of Redis or Kafka, as a new process would
    resume it (the kill/resume path the tests check), until it completes; ``ReplayInterruptedError`` once
    ``stopping`` was requested."""
    stop = None
    if stopping is not None:
        stopping.install(asyncio.get_running_loop())
        stop = stopping.requested
    redis = make_redis(settings)
    counters = engine.Counters()
    backoff = Backoff(settings.stream.retry_initial_s, settings.stream.retry_max_s)
    columns = (
        TextColumn("[bold]replay[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>9,.0f} records/s"),
        TimeRemainingColumn(),
    )
    try:
        async with _one_at_a_time(redis, into, backoff, stop) as held:
            with Progress(*columns, disable=quiet) as bar:
                task = bar.add_task(into, total=None, rate=0.0)
                shown = 0

                def show(p: engine.Progress) -> None:
                    # After an outage the replay resumes from its checkpoint and folds the chunk it was folding
                    # again: the bar waits where it was until it passes it, rather than stepping back.
                    nonlocal shown
                    shown = max(shown, p.done)
                    bar.update(task, total=p.total, completed=shown, rate=p.rate)

                plan: engine.Plan | None = None  # fixed by the first attempt that gets one: the one to complete

                async def attempt() -> engine.Progress:
                    nonlocal plan
                    models = ReplayModels(settings, redis, into, settings.profile.fold_config()) if retrain else None
                    namespaces = Namespaces(redis)
                    served = await namespaces.serving(settings.profile.namespace)
                    if retrain and into == served:
                        # Its trainer owns its models: a promoted namespace's, not the configured one's alone.
                        raise NamespaceStateError(
                            f"{into!r} is what the API serves: --retrain rebuilds models into a new namespace"
                        )
                    segments = ReplaySegments(settings, redis, into, served) if into != served else None
                    async with engine.Replay(
                        settings,
                        ProfileStore(redis, into),
                        namespaces,
                        chunk,
                        models=models,
                        segments=segments,
                        counters=counters,
                        stop=stop,
                        guard=held.check,
                    ) as runner:
                        if plan is None:
                            plan = await runner.plan(topics, from_ms, to_ms)
                        else:  # after an outage: the first attempt's plan, still the command's options
                            runner.request = runner.request_for(topics, from_ms, to_ms)
                        return await runner.run(plan, show)

                return await _waiting_out_outages(
                    attempt, backoff, stop, f"replay into {into!r}", "resumes from its checkpoint"
                )
    finally:
        await redis.aclose()


@asynccontextmanager
async def _one_at_a_time(redis: Redis, into: str, backoff: Backoff, stop: asyncio.Event | None) -> AsyncIterator[Held]:
    """The namespace's replay lock, held for every attempt of the command (taken through outages).

    A second replay into the namespace meanwhile would fold the same chunks again, each refusing the other's
    writes, and could move the checkpoint back; it exits 1 instead (``LockBusyError``). One that finds its
    lock taken (held up past its time to live) stops before its next chunk (``LockLostError``)."""
    stack = AsyncExitStack()
    key = Namespaces.replay_lock_key(into)
    held = await _waiting_out_outages(
        # A fresh context manager per attempt: one whose entry failed cannot be entered again.
        lambda: stack.enter_async_context(exclusive(redis, key, LOCK_MS, what="replay")),
        backoff,
        stop,
        f"replay into {into!r}",
        "taking its lock",
    )
    async with stack:
        yield held


async def _waiting_out_outages(
    step: Callable[[], Awaitable[T]], backoff: Backoff, stop: asyncio.Event | None, what: str, doing: str
) -> T:
    """``step()``, again after each outage until it succeeds; ``ReplayInterruptedError`` once ``stop`` is set
    while it waits."""
    done = await through_outages(
        step, backoff, f"{what} ({doing})", alive=lambda: None, stop=stop, outages=engine.OUTAGES
    )
    if done is None:
        raise engine.ReplayInterruptedError(f"{what} interrupted")
    return done
