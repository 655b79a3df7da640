"""Replay figures: ``rapport replay`` beside the live worker and a raw consumer of the same topics, one run.

1. simulator lines preloaded into the five raw topics;
2. ceiling: a plain aiokafka ``getmany`` loop over them (no group, no decoding);
3. rounds (``--rounds``, medians reported): the live worker (``rapport worker``) from cold into a fresh
   namespace, as ``bench.profile_worker`` measures it, then ``rapport replay --into`` a fresh namespace (one
   process): records / seconds from its own summary line (plan made, erasures read), and the wall time of
   the whole command. One round's ratio swung from 2.9x to 4.7x between runs minutes apart (session 36),
   mostly with the worker's rate: the medians of interleaved rounds are the figures;
4. the first round's replay again into another fresh namespace, and into the first round's worker's
   namespace, which must write nothing; then the canonical hashes of the three namespaces (they must be
   equal);
6. the replay again, adopting five segments from the namespace it takes as served, whose memberships it
   then evaluates (the other replays adopt from the worker's namespace, which has none).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from bench.harness import Figure, Ratio, bench_settings, raw_consume_rate, run_namespace
from bench.profile_worker import ROUNDS, corpus, raw_ends, rounded, topics_of, worker_throughput
from services.namespace_ops import NamespaceHash, hash_namespace
from services.redis_client import make_redis
from services.settings import Settings
from tests.kafka_support import produce_raw, rapport
from tests.worker_support import define_segments

TARGET = 60_000.0
TARGET_VS_WORKER = 4.0
_SUMMARY = re.compile(r"replayed ([\d,]+) records .* in ([\d.]+) s \(([\d,]+) records/s\).*, ([\d,]+) profile writes")


#: The segments of tests/integration/test_segments_live.py that read the profile alone.
SEGMENTS = {
    "buyers": "transactions.orders >= 1",
    "active_7d": 'windows["7d"].clicks >= 1',
    "recent_buyers": "rfm.recency_days < 10",
    "engaged": 'journey_stage == "consideration" || journey_stage == "decision"',
    "big_month": 'windows["30d"].spend > 100.0',
}


def _replay(settings: Settings, namespace: str, live: str) -> tuple[float, int, float]:
    """(records/s as the command reports it, profile writes, wall seconds of the command). ``live`` is the
    served namespace the replay adopts segments and models from: the bench's worker's, which has none, so
    that definitions left in the machine's own live namespace do not weigh on the figure."""
    env = {
        "RAPPORT_PROFILE__NAMESPACE": live,
        "RAPPORT_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "RAPPORT_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "RAPPORT_REDIS__URL": settings.redis.url,
    }
    started = time.monotonic()
    done = rapport("replay", "--into", namespace, "--quiet", env=env)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    found = _SUMMARY.search(done.stdout)
    if found is None:
        raise RuntimeError(f"unexpected replay output: {done.stdout!r}")
    return float(found.group(3).replace(",", "")), int(found.group(4).replace(",", "")), wall


async def _hash(settings: Settings, namespace: str) -> NamespaceHash:
    redis = make_redis(settings)
    try:
        return await hash_namespace(redis, namespace, settings.profile.fold_config())
    finally:
        await redis.aclose()


class _Round(NamedTuple):
    live: str  # the worker's namespace
    replayed_into: str
    worker: float  # events/s
    replay: float  # events/s, as the command reports it
    writes: int  # the replay's profile writes
    wall_s: float  # the replay command's wall time


def run(base: Settings, events: int, rounds: int = ROUNDS) -> tuple[list[Figure], list[Ratio]]:
    lines = corpus(events)
    logs = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    with bench_settings(base) as settings:
        produce_raw(topics_of(settings), lines)
        ends = raw_ends(settings)
        total = sum(ends.values())
        raw = raw_consume_rate(settings, ends)
        played: list[_Round] = []
        for n in range(rounds):
            (logs / str(n)).mkdir()
            live, first = run_namespace(settings, "live"), run_namespace(settings, "replay")
            worker = worker_throughput(settings, live, logs / str(n), total).rate
            played.append(_Round(live, first, worker, *_replay(settings, first, live)))
        live, first = played[0].live, played[0].replayed_into
        second = run_namespace(settings, "replay")
        _replay(settings, second, live)
        again, noop_writes, _ = _replay(settings, live, live)
        hashes = {ns: asyncio.run(_hash(settings, ns)) for ns in (live, first, second)}
        # The same replay adopting served segments, whose memberships it evaluates (streams/replay_segments.py).
        served = run_namespace(settings, "served")
        define_segments(settings, served, SEGMENTS)
        with_segments, _, segments_wall = _replay(settings, run_namespace(settings, "replay"), served)
    shutil.rmtree(logs)
    workers = [r.worker for r in played]
    replays = [r.replay for r in played]
    writes, wall = played[0].writes, played[0].wall_s
    per_round = ", ".join(f"{r:,.0f}/{w:,.0f} = {r / w:.2f}x" for w, r in zip(workers, replays, strict=True))
    figures = [
        Figure("raw aiokafka getmany", raw, "events/s", f"{total:,} simulator lines, {len(ends)} partitions"),
        Figure(
            "live worker",
            statistics.median(workers),
            "events/s",
            f"median of {rounds} rounds ({rounded(workers)}), each {total:,} lines from assignment to caught up",
        ),
        Figure(
            "replay, one process",
            statistics.median(replays),
            "events/s",
            f"median of {rounds} rounds ({rounded(replays)}), each {total:,} records into a fresh namespace; "
            f"the first: {writes:,} profile writes, whole command {wall:.1f} s (interpreter, plan, erasures "
            "included)",
        ),
        Figure(
            "replay / worker, lowest round",
            min(r / w for w, r in zip(workers, replays, strict=True)),
            "x",
            f"each round's replay / worker: {per_round}",
        ),
        Figure(
            "replay, 5 served segments",
            with_segments,
            "events/s",
            f"the same, memberships evaluated (whole command {segments_wall:.1f} s)",
        ),
        Figure("replay into the live namespace", again, "events/s", f"{noop_writes:,} profile writes (expected 0)"),
        Figure(
            "namespaces with the live worker's hash",
            sum(h.digest == hashes[live].digest for h in hashes.values()),
            "of 3",
            f"live, replay, second replay; {hashes[live].profiles:,} profiles; live {hashes[live].digest[:16]}…",
        ),
        Figure("target: replay", TARGET, "events/s", "per process"),
        Figure("target: replay / worker", TARGET_VS_WORKER, "x", ""),
    ]
    ratios = [
        Ratio("replay / live worker", "replay, one process", "live worker", target=TARGET_VS_WORKER),
        Ratio("replay / target", "replay, one process", "target: replay", target=1.0),
        Ratio("replay / raw getmany", "replay, one process", "raw aiokafka getmany"),
        Ratio("replay with segments / without", "replay, 5 served segments", "replay, one process"),
    ]
    return figures, ratios
