"""``rapport produce FILE.jsonl``: validate events and load them into their raw topics."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, BinaryIO

import orjson
import typer
from rich.console import Console

from schemas.validation import Rejection
from services.producer import produce_lines
from services.settings import get_settings


def produce(
    file: Annotated[str, typer.Argument(help="JSON Lines file of events, or - for standard input.")],
    rate: Annotated[
        float | None, typer.Option(min=0, help="Events per second (0 or absent: as fast as possible).")
    ] = None,
    rejects: Annotated[
        Path | None, typer.Option(help="Write each rejected line with its reasons here (JSON Lines).")
    ] = None,
) -> None:
    """Validate each line, send valid events to the raw topic of their type, summarise what was rejected."""
    console = Console(stderr=True)
    settings = get_settings()
    with ExitStack() as stack:
        try:
            source: BinaryIO = sys.stdin.buffer if file == "-" else stack.enter_context(Path(file).open("rb"))
            total = None if file == "-" else _count_lines(Path(file))
            reject_out = stack.enter_context(rejects.open("wb")) if rejects else None
        except OSError as exc:
            raise typer.BadParameter(f"{exc.filename}: {exc.strerror}") from exc

        def on_reject(number: int, raw: bytes, rejection: Rejection) -> None:
            if reject_out:
                record = {"line": number, **rejection.as_dict(), "raw": raw.decode("utf-8", "replace")}
                reject_out.write(orjson.dumps(record) + b"\n")

        summary = produce_lines(_lines(source), settings, rate=rate, progress=True, total=total, on_reject=on_reject)

    console.print(
        f"read {summary.read:,} · sent {summary.sent:,} · rejected {sum(summary.rejected.values()):,}"
        f" · {summary.rate:,.0f} events/s over {summary.seconds:.1f} s"
    )
    for topic, count in sorted(summary.per_topic.items()):
        console.print(f"  {topic}: {count:,}")
    for reason, count in summary.rejected.most_common():
        console.print(f"  [yellow]rejected[/] {reason}: {count:,}")
    if summary.failed:
        console.print(f"[red]{summary.failed:,} events were not acknowledged by Kafka[/]")
        raise typer.Exit(1)


def _lines(source: BinaryIO) -> Iterator[bytes]:
    yield from source


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
