"""``rapport simulate``: seeded, realistic customer traffic to a JSON Lines file or straight into Kafka.

The same arguments always give byte-identical output (the default ``--start`` is a fixed date for that
reason). Next to the events the simulator writes the ground truth, one JSON record per simulated person:
latent traits and day-by-day true probabilities and expectations (see :mod:`services.simulator`).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from services.simulator import Simulation, SimulationConfig, SimulationStats
from services.simulator.clock import UTC_Z, format_ts

DEFAULT_KAFKA_TRUTH = Path(".rapport/truth.jsonl")
_WRITE_BATCH_BYTES = 1 << 20


def simulate(
    *,
    customers: Annotated[int, typer.Option(min=1, help="Simulated people (about 80% eventually identify).")] = 1000,
    days: Annotated[int, typer.Option(min=1, help="Days of simulated traffic.")] = 30,
    seed: Annotated[int, typer.Option(help="Same seed and options, same bytes.")] = 42,
    start: Annotated[
        str, typer.Option(help="RFC 3339 start of simulated time, e.g. 2025-01-01T00:00:00Z.")
    ] = "2025-01-01T00:00:00Z",
    out: Annotated[Path | None, typer.Option(help="Write the events to this JSON Lines file.")] = None,
    truth: Annotated[
        Path | None,
        typer.Option(help="Ground-truth file (default: <out>.truth.jsonl, or .rapport/truth.jsonl with --to-kafka)."),
    ] = None,
    to_kafka: Annotated[bool, typer.Option("--to-kafka", help="Validate and produce into the raw topics.")] = False,
    rate: Annotated[
        float | None, typer.Option(min=0.0, help="Throttle to this many lines per second (default: flat out).")
    ] = None,
    duplicate_rate: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Share of events re-sent as byte-identical duplicates.")
    ] = 0.01,
    late_rate: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Share of events arriving 1 hour to 3 days late.")
    ] = 0.02,
    malformed_rate: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Extra malformed lines per event (every rejection class).")
    ] = 0.005,
    send_malformed: Annotated[
        bool,
        typer.Option(
            "--send-malformed",
            help="With --to-kafka: send the malformed lines too, as a faulty client would, for the worker to "
            "dead-letter (by default they are counted and not sent).",
        ),
    ] = False,
    real_time: Annotated[
        bool,
        typer.Option(
            "--real-time",
            help="Hold each line until its arrival time (received_at) comes: a history ending now, then a live "
            "feed of the days after it.",
        ),
    ] = False,
) -> None:
    """Generate seeded customer traffic (clicks, emails, purchases, mentions, identifies) and its ground truth."""
    console = Console(stderr=True)
    if (out is None) == (not to_kafka):
        raise typer.BadParameter("give exactly one of --out FILE or --to-kafka")
    if send_malformed and not to_kafka:
        raise typer.BadParameter("--send-malformed goes with --to-kafka (a file gets every line anyway)")
    try:
        start_at = datetime.fromisoformat(start)
    except ValueError as exc:
        raise typer.BadParameter(f"--start is not an RFC 3339 timestamp: {start!r}") from exc
    if start_at.utcoffset() is None:
        raise typer.BadParameter("--start needs an explicit offset, e.g. 2025-01-01T00:00:00Z")
    truth_path = truth or (DEFAULT_KAFKA_TRUTH if out is None else default_truth_path(out))
    config = SimulationConfig(
        customers=customers,
        days=days,
        seed=seed,
        start=start_at,
        duplicate_rate=duplicate_rate,
        late_rate=late_rate,
        malformed_rate=malformed_rate,
    )
    sim = Simulation(config)
    # Generation allocates millions of short-lived acyclic objects; collect less often.
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 20)
    started = time.monotonic()
    failed = 0
    lines = held_until_arrival(reported(sim.timed_lines(), console.print)) if real_time else sim.lines()
    try:
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            write_lines(out, _paced(lines, rate) if rate else lines, batch_bytes=0 if real_time else _WRITE_BATCH_BYTES)
        else:
            from services.producer import produce_lines  # noqa: PLC0415 - Kafka clients load only when needed
            from services.settings import get_settings  # noqa: PLC0415

            # A live feed reports in lines of its own (``reported``): a progress bar would never finish.
            summary = produce_lines(
                lines, get_settings(), rate=rate, progress=not real_time, send_rejected=send_malformed
            )
            failed = summary.failed
            console.print(
                f"kafka: sent {summary.sent:,}, rejected {sum(summary.rejected.values()):,}"
                f"{' (sent anyway)' if send_malformed else ''}"
                f" ({', '.join(f'{k} {v}' for k, v in summary.rejected.most_common())}), failed {summary.failed:,}"
            )
        truth_path.parent.mkdir(parents=True, exist_ok=True)
        write_lines(truth_path, sim.truth_lines())
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
    _print_summary(console, sim.stats, time.monotonic() - started, out, truth_path)
    if failed:
        console.print(f"[red]{failed:,} events were not acknowledged by Kafka[/]")
        raise typer.Exit(1)


def default_truth_path(out: Path) -> Path:
    """``events.jsonl`` -> ``events.truth.jsonl`` (next to it)."""
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(f"{stem}.truth.jsonl")


def write_lines(path: Path, lines: Iterable[bytes], batch_bytes: int = _WRITE_BATCH_BYTES) -> None:
    """Write newline-terminated lines in batches of about ``batch_bytes`` (0: each line as it comes, for a
    reader following the file)."""
    with path.open("wb") as fh:
        batch: list[bytes] = []
        size = 0
        for line in lines:
            batch.append(line)
            size += len(line)
            if size >= batch_bytes:
                fh.write(b"\n".join(batch) + b"\n")
                fh.flush()
                batch.clear()
                size = 0
        if batch:
            fh.write(b"\n".join(batch) + b"\n")


def held_until_arrival(
    timed: Iterable[tuple[int, bytes]],
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[bytes]:
    """Each line once the wall clock reaches its arrival time (epoch ms): lines of the past at once.

    >>> slept = []
    >>> list(held_until_arrival([(1_000, b"past"), (5_000, b"future")], clock=lambda: 2.0, sleep=slept.append))
    [b'past', b'future']
    >>> slept
    [3.0]
    """
    for arrival_ms, line in timed:
        wait = arrival_ms / 1000 - clock()
        if wait > 0:
            sleep(wait)
        yield line


def reported(
    timed: Iterable[tuple[int, bytes]],
    say: Callable[[str], None],
    *,
    every_s: float = 60.0,
    clock: Callable[[], float] = time.time,
) -> Iterator[tuple[int, bytes]]:
    """``timed`` as it is, saying when the lines of the past are all out and then, at most every
    ``every_s``, how many went out: a live feed's log shows it is alive.

    >>> now = iter([10.0, 10.0, 20.0, 80.0]).__next__
    >>> _ = list(reported([(5_000, b"a"), (15_000, b"b"), (70_000, b"c"), (75_000, b"d")], print, clock=now))
    sent the lines of the past (1); each next line goes out when it happens
    sent 3 lines, the last received at 1970-01-01T00:01:10.000Z
    """
    live, said_at, last_ms = False, 0.0, 0
    for sent, (arrival_ms, line) in enumerate(timed):
        now = clock()
        if not live and arrival_ms / 1000 > now:
            live, said_at = True, now
            say(f"sent the lines of the past ({sent:,}); each next line goes out when it happens")
        elif live and now - said_at >= every_s:
            said_at = now
            say(f"sent {sent:,} lines, the last received at {format_ts(last_ms, UTC_Z)}")
        yield arrival_ms, line
        last_ms = arrival_ms


def _paced(lines: Iterable[bytes], rate: float) -> Iterator[bytes]:
    started = time.monotonic()
    for n, line in enumerate(lines, start=1):
        yield line
        ahead = started + n / rate - time.monotonic()
        if ahead > 0.001:
            time.sleep(ahead)


def _print_summary(console: Console, stats: SimulationStats, seconds: float, out: Path | None, truth: Path) -> None:
    per_s = stats.lines / seconds if seconds > 0 else 0.0
    console.print(
        f"simulated {stats.customers:,} people ({stats.identified:,} identified): {stats.events:,} events,"
        f" {stats.lines:,} lines in {seconds:.1f} s ({per_s:,.0f} lines/s)"
    )
    by_type = ", ".join(f"{kind} {n:,}" for kind, n in sorted(stats.by_type().items()))
    console.print(f"  by type: {by_type}")
    malformed = sum(stats.malformed.values())
    console.print(f"  injected: {stats.duplicates:,} duplicates, {stats.late:,} late, {malformed:,} malformed")
    for reason, n in sorted(stats.malformed.items()):
        console.print(f"    malformed {reason}: {n:,}")
    if out is not None:
        console.print(f"  events: {out}")
    console.print(f"  truth:  {truth}")
