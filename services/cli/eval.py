"""``rapport eval`` (``make eval``): model quality on a fixed-seed simulation, against baselines and the
simulator's truth (``services.evaluation``)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from kafka.errors import KafkaError
from rich.console import Console
from rich.table import Table

from profiles.models.labels import Example, decode_example
from profiles.namespaces import Namespaces
from schemas.topics import CATALOGUE, MODEL_EXAMPLES, RAW_EVENT_TOPICS, full_name
from services.evaluation import Truth, progressive, start_ms, table
from services.kafka_clients import make_consumer, topic_partitions
from services.producer import produce_lines
from services.redis_client import make_redis
from services.settings import Settings, get_settings
from services.topics_admin import admin_client, ensure_topics

START = "2025-01-01T00:00:00Z"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "models.md"  # the source checkout (make eval)
MARK_START, MARK_END = "<!-- eval:start -->", "<!-- eval:end -->"


def evaluate(
    *,
    customers: Annotated[int, typer.Option(min=100)] = 2000,
    days: Annotated[
        int,
        typer.Option(
            min=30,
            help="Simulated days. `make eval` uses 730: clv_90d's 90-day horizon needs customers with months "
            "of history (docs/models.md).",
        ),
    ] = 120,
    seed: Annotated[int, typer.Option()] = 7,
    warmup: Annotated[int, typer.Option(min=0, help="Examples per model learned before scoring starts.")] = 500,
    lag_days: Annotated[float, typer.Option(help="The worker's watermark lag during the run.")] = 3.0,
    rate: Annotated[
        float,
        typer.Option(
            min=0,
            help="Events per second streamed in time order while the worker runs, as live traffic arrives; "
            "0: all of them produced first, then the worker catches up (topics read in an arbitrary interleaving).",
        ),
    ] = 5000.0,
    write_docs: Annotated[bool, typer.Option(help=f"Write the table into {DOCS} (`make eval` does).")] = False,
) -> None:
    """Simulate, stream through Kafka and a real worker, learn the examples progressively, print each
    model's ROC AUC (Spearman and MAE for clv_90d) beside its baselines and the oracle."""
    base = get_settings()
    prefix = f"{base.kafka.topic_prefix}eval-{uuid.uuid4().hex[:6]}."
    namespace = f"eval-{uuid.uuid4().hex[:6]}"
    settings = base.model_copy(update={"kafka": base.kafka.model_copy(update={"topic_prefix": prefix})})
    work = Path(tempfile.mkdtemp(prefix="rapport-eval-"))
    events = work / "events.jsonl"
    started = time.monotonic()
    typer.echo(f"simulating {customers} customers x {days} days (seed {seed}) into {events}")
    _rapport("simulate", "--customers", str(customers), "--days", str(days), "--seed", str(seed),
             "--start", START, "--out", str(events))  # fmt: skip
    ensure_topics(settings)
    try:
        lines = [line for line in events.read_bytes().splitlines() if line.strip()]
        if not rate:
            summary = produce_lines(lines, settings, progress=True, total=len(lines))
            typer.echo(f"produced {summary.sent:,} events; running the worker (namespace {namespace})")
        env = {
            **os.environ,
            "RAPPORT_KAFKA__TOPIC_PREFIX": prefix,
            "RAPPORT_PROFILE__NAMESPACE": namespace,
            "RAPPORT_MODELS__WATERMARK_LAG_S": str(lag_days * 86_400),
            "RAPPORT_MODELS__IDLE_PARTITION_S": "2",
        }
        with (work / "worker.log").open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
            try:
                if rate:
                    typer.echo(f"streaming the events at {rate:,.0f}/s into the worker (namespace {namespace})")
                    produce_lines(lines, settings, rate=rate, progress=True, total=len(lines))
                del lines  # ~0.9 GB for two years, not to be held while the examples are read and learned
                _wait_until_done(settings, namespace, worker)
            finally:
                worker.terminate()
                worker.wait(timeout=60)
        examples = _examples(settings)
        typer.echo(f"{len(examples):,} examples; learning them progressively")
        config = settings.profile.fold_config()
        specs = settings.models.specs()
        truth = Truth.read(str(events.with_suffix(".truth.jsonl")), start_ms(START))
        rows = table(progressive(examples, specs, truth, config, warmup), specs)
    except BaseException:
        typer.echo(f"the evaluation failed; its events and the worker's log are kept in {work}", err=True)
        raise
    else:
        shutil.rmtree(work)  # the simulated history: ~240 MB for 2,000 customers × 120 days
    finally:
        with admin_client(settings) as admin:
            admin.delete_topics([full_name(spec, prefix) for spec in CATALOGUE])
        asyncio.run(_drop(settings, namespace))
    took = time.monotonic() - started
    heading = (
        f"`rapport eval --customers {customers} --days {days} --seed {seed} --warmup {warmup} "
        f"--lag-days {lag_days:g} --rate {rate:g}` ({len(examples):,} examples, {took:.0f} s)"
    )
    _print(rows, heading)
    if write_docs:
        _write_docs(rows, heading)


def _rapport(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        typer.echo(f"rapport {args[0]} failed: {done.stderr}", err=True)
        raise typer.Exit(1)


def _wait_until_done(settings: Settings, namespace: str, worker: subprocess.Popen[bytes]) -> None:
    """Until the worker has read every raw record and models.examples has stopped growing for 10 s."""
    group = f"{settings.kafka.topic_prefix}rapport-profiles-{namespace}"
    count, since = -1, time.monotonic()
    while True:
        if worker.poll() is not None:
            raise RuntimeError("the worker exited; see its log")
        time.sleep(2.0)
        try:
            lag, released = _lag_and_examples(settings, group)
        except KafkaError as exc:
            # A freshly started broker creates its offsets topic on first use: ask again.
            if not exc.retriable:
                raise
            continue
        if lag or released != count:
            count, since = released, time.monotonic()
        elif time.monotonic() - since >= 10.0:
            return


def _lag_and_examples(settings: Settings, group: str) -> tuple[int, int]:
    consumer = make_consumer(settings, "eval-progress")
    try:
        prefix = settings.kafka.topic_prefix
        raw = [tp for spec in RAW_EVENT_TOPICS for tp in topic_partitions(consumer, full_name(spec, prefix))]
        examples = topic_partitions(consumer, full_name(MODEL_EXAMPLES, prefix))
        ends = consumer.end_offsets([*raw, *examples])
        with admin_client(settings) as admin:
            committed = admin.list_group_offsets(group).get(group, {})
        lag = sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in raw)
        return lag, sum(ends[tp] for tp in examples)
    finally:
        consumer.close()


def _examples(settings: Settings) -> list[Example]:
    consumer = make_consumer(settings, "eval-examples")
    try:
        tps = topic_partitions(consumer, full_name(MODEL_EXAMPLES, settings.kafka.topic_prefix))
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = sum(consumer.end_offsets(tps).values())
        out: list[Example] = []
        # A deadline on progress, not on the whole read: two years' 606,000 examples take a while to decode.
        deadline = time.monotonic() + 120
        while len(out) < end:
            if time.monotonic() > deadline:
                raise RuntimeError(f"read {len(out):,} of {end:,} examples, then nothing for 120 s")
            for records in consumer.poll(timeout_ms=1000, max_records=50_000).values():
                out += [decode_example(r.value) for r in records]
                deadline = time.monotonic() + 120
        return list({e.example_id: e for e in out}.values())  # a retried batch can re-send an example
    finally:
        consumer.close()


async def _drop(settings: Settings, namespace: str) -> None:
    redis = make_redis(settings)
    try:
        async for _ in Namespaces(redis).drop(settings.profile.namespace, namespace):
            pass
    finally:
        await redis.aclose()


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}"


def _print(rows: list[dict[str, Any]], heading: str) -> None:
    out = Table(
        "score", "metric", "examples", "model", "recency", "base rate", "oracle", "model / oracle", title=heading
    )
    for r in rows:
        ratio = r["model"] / r["oracle"] if r["model"] is not None and r["oracle"] else None
        cells = [r["name"], r["metric"], f"{r['examples']:,}"]
        out.add_row(*cells, *(_fmt(r[k]) for k in ("model", "recency", "base_rate", "oracle")), _fmt(ratio))
    Console(width=160).print(out)


def _write_docs(rows: list[dict[str, Any]], heading: str) -> None:
    lines = [
        MARK_START,
        "",
        heading,
        "",
        "| score | metric | examples scored | model | recency-only | base rate | oracle | model / oracle |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    predictors = ("model", "recency", "base_rate", "oracle")
    for r in rows:
        ratio = r["model"] / r["oracle"] if r["model"] is not None and r["oracle"] else None
        cells = [r["name"], r["metric"], f"{r['examples']:,}", *(_fmt(r[k]) for k in predictors), _fmt(ratio)]
        lines.append("| " + " | ".join(cells) + " |")
        if r["metric"] == "Spearman":
            maes = [_fmt(r[f"{k}_mae"]) for k in predictors]
            lines.append("| " + " | ".join([r["name"], "MAE (base currency)", "", *maes, ""]) + " |")
    lines += ["", MARK_END]
    text = DOCS.read_text()
    if MARK_START in text:
        before, rest = text.split(MARK_START, 1)
        after = rest.split(MARK_END, 1)[1]
        text = before + "\n".join(lines) + after
    else:
        text += "\n## Evaluation\n\n" + "\n".join(lines) + "\n"
    DOCS.write_text(text)
