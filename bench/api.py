"""Serving API figures: one uvicorn worker under wrk, GET profile and GET scores beside a trivial route on the
same server.

One run against the real local Redis: profiles of a simulation folded offline (the worker's pure fold)
and stored as the worker stores them; a key with ``profiles:read`` (every request is authenticated and
rate-limited in Redis, as in production); the four models trained (on the stored profiles' features, past
their cold start) and published as signed snapshots, so GET scores computes features and runs four River
pipelines per request; ``rapport api`` started as users start it (one process).

For each route: requests/s at saturation (wrk, 1 thread, 32 connections) and p50/p99 at a fixed
1,000 requests/s (20 connections, each pausing between requests; the pause is calibrated so that the
achieved rate is at or a few percent above 1,000/s, and the achieved rate is printed), twice: with the same
pause every time (the connections stay in step and send in clusters) and with random pauses of that mean
(arrivals like independent visitors'). ``/healthz`` is the
framework's ceiling on this machine: the same server, no Redis, no auth. wrk and the server share the two
cores, as they would not in production.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.harness import Figure, Ratio, bench_settings, run_namespace
from bench.models import examples_for
from deploy.localstack.tools import find_or_install
from profiles.model_store import ModelStore
from profiles.models.snapshots import dump_snapshot
from profiles.models.trainer import ModelTrainer
from profiles.state import ProfileState
from services.redis_client import make_redis
from services.settings import Settings
from tests.api_support import create_key, running_api, store_simulated_profiles

SCRIPT = Path(__file__).with_name("wrk") / "get.lua"
FIXED_RATE = 1_000
TARGET_P99_MS = 5.0
TARGET_RPS = 2_500
TARGET_SCORES_P99_MS = 8.0
SECRET = "bench-secret"
DURATION_S = 15


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    bad_status: int
    socket_errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s


def wrk(base: str, env: dict[str, str], *, connections: int, seconds: int, delay_ms: float = 0) -> WrkResult:
    run = subprocess.run(
        [find_or_install("wrk", "wrk"), "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(SCRIPT), base],
        env={**os.environ, **env, "DELAY_MS": str(delay_ms)},
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))
    requests, duration_us, p50, p99, mean, bad, errors = (float(x) for x in line.split()[1:])
    result = WrkResult(int(requests), duration_us / 1e6, p50 / 1000, p99 / 1000, mean / 1000, int(bad), int(errors))
    if result.bad_status or result.socket_errors:
        raise RuntimeError(f"wrk saw {result.bad_status} non-2xx answers and {result.socket_errors} socket errors")
    return result


def fixed_rate(base: str, env: dict[str, str], *, random_arrivals: bool = False) -> WrkResult:
    """p50/p99 at FIXED_RATE requests/s or a little more: 20 connections, each pausing so that it sends 50/s.

    Steady pauses keep the connections in step: each cycle they send a cluster of 20 requests. Random
    (exponential) pauses of the same mean let them drift apart, so that together they arrive about as
    independent visitors do (a Poisson stream)."""
    connections = 20
    interval_ms = connections * 1000 / FIXED_RATE
    probe = wrk(base, env, connections=connections, seconds=3, delay_ms=interval_ms)
    # A connection's cycle is its pause plus the answer's latency: take the measured latency off the pause.
    pause = max(0.0, interval_ms - probe.mean_ms)
    if random_arrivals:
        return wrk(base, {**env, "ARRIVALS": "random"}, connections=connections, seconds=DURATION_S, delay_ms=pause)
    # wrk pauses whole milliseconds: rounding down keeps the rate at or above the target (by up to ~5%).
    return wrk(base, env, connections=connections, seconds=DURATION_S, delay_ms=math.floor(pause))


def stored_profiles(settings: Settings, namespace: str, customers: int) -> list[str]:
    """Profiles of a simulation stored as the worker stores them, models published; their customer ids."""
    states = [s for s in store_simulated_profiles(settings, namespace, customers) if s.customer_id == s.profile_id]
    asyncio.run(_publish_models(settings, namespace, states))
    return [s.profile_id for s in states]


async def _publish_models(settings: Settings, namespace: str, states: list[ProfileState]) -> None:
    """Each model trained past its cold start on the profiles' features (labels from a simple rule: the
    figure is about serving cost, not quality) and published as the trainer publishes it."""
    config = settings.profile.fold_config()
    specs = settings.models.specs()
    redis = make_redis(settings)
    try:
        store = ModelStore(redis, namespace)
        for name, spec in specs.items():
            trainer = ModelTrainer(spec)
            for example in examples_for(spec, states, config, count=2 * len(states)):
                trainer.learn(example)
            version = await store.next_version(name)
            meta = trainer.snapshot_meta(version, 0)
            await store.publish(name, version, dump_snapshot(meta, trainer, SECRET.encode()), keep=1)
    finally:
        await redis.aclose()


def run(base_settings: Settings, customers: int = 2_000) -> tuple[list[Figure], list[Ratio]]:
    with bench_settings(base_settings) as settings, tempfile.TemporaryDirectory() as tmp:
        namespace = run_namespace(settings, "api")
        ids = stored_profiles(settings, namespace, customers)
        ids_file = Path(tmp) / "ids.txt"
        ids_file.write_text("\n".join(ids) + "\n")
        env = {
            "RAPPORT_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "RAPPORT_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
            "RAPPORT_REDIS__URL": settings.redis.url,
            "RAPPORT_PROFILE__NAMESPACE": namespace,
            "RAPPORT_MODELS__SECRET": SECRET,
        }
        scopes = "profiles:read,scores:read"
        token = create_key({**os.environ, **env}, "--name", "bench", "--scopes", scopes, "--rate-limit", "1e6")
        with running_api({**os.environ, **env}, Path(tmp) / "api.log") as base:
            profile_env = {"IDS": str(ids_file), "TOKEN": token, "ROUTE": "profile"}
            scores_env = {"IDS": str(ids_file), "TOKEN": token, "ROUTE": "scores"}
            health_env = {"ROUTE": "health"}
            wrk(base, profile_env, connections=8, seconds=3)  # warm-up: connections, caches, JIT-free but lazy imports
            wrk(base, scores_env, connections=8, seconds=3)  # and the models' first load
            health_max = wrk(base, health_env, connections=32, seconds=DURATION_S)
            profile_max = wrk(base, profile_env, connections=32, seconds=DURATION_S)
            scores_max = wrk(base, scores_env, connections=32, seconds=DURATION_S)
            health_fixed = fixed_rate(base, health_env)
            profile_fixed = fixed_rate(base, profile_env)
            scores_fixed = fixed_rate(base, scores_env)
            health_random = fixed_rate(base, health_env, random_arrivals=True)
            profile_random = fixed_rate(base, profile_env, random_arrivals=True)
            scores_random = fixed_rate(base, scores_env, random_arrivals=True)
    figures = [
        Figure("healthz saturation", health_max.rps, "req/s", f"p99 {health_max.p99_ms:.2f} ms, 32 connections"),
        Figure("GET profile saturation", profile_max.rps, "req/s", f"p99 {profile_max.p99_ms:.2f} ms; {len(ids)} ids"),
        Figure("GET profile target rps", TARGET_RPS, "req/s", "issue 6"),
        Figure(
            "healthz p99 @1k",
            health_fixed.p99_ms,
            "ms",
            f"{health_fixed.rps:,.0f} req/s achieved, p50 {health_fixed.p50_ms:.2f}",
        ),
        Figure(
            "GET profile p99 @1k",
            profile_fixed.p99_ms,
            "ms",
            f"{profile_fixed.rps:,.0f} req/s achieved, p50 {profile_fixed.p50_ms:.2f}",
        ),
        Figure("GET profile p99 target", TARGET_P99_MS, "ms", "issue 6: at most"),
        Figure("GET scores saturation", scores_max.rps, "req/s", f"p99 {scores_max.p99_ms:.2f} ms; 4 trained models"),
        Figure(
            "GET scores p99 @1k",
            scores_fixed.p99_ms,
            "ms",
            f"{scores_fixed.rps:,.0f} req/s achieved, p50 {scores_fixed.p50_ms:.2f}",
        ),
        Figure("GET scores p99 target", TARGET_SCORES_P99_MS, "ms", "issue 6: at most"),
        *(
            Figure(
                f"{name} p99 @1k random arrivals",
                result.p99_ms,
                "ms",
                f"{result.rps:,.0f} req/s, p50 {result.p50_ms:.2f}",
            )
            for name, result in (
                ("healthz", health_random),
                ("GET profile", profile_random),
                ("GET scores", scores_random),
            )
        ),
    ]
    ratios = [
        Ratio("GET profile / healthz (saturation)", "GET profile saturation", "healthz saturation"),
        Ratio("GET profile saturation vs target", "GET profile saturation", "GET profile target rps", 1.0),
        Ratio("p99 target / GET profile p99 @1k (>= 1 is met)", "GET profile p99 target", "GET profile p99 @1k", 1.0),
        Ratio("GET scores / healthz (saturation)", "GET scores saturation", "healthz saturation"),
        Ratio("p99 target / GET scores p99 @1k (>= 1 is met)", "GET scores p99 target", "GET scores p99 @1k", 1.0),
        Ratio(
            "p99 target / GET profile p99 @1k random arrivals",
            "GET profile p99 target",
            "GET profile p99 @1k random arrivals",
            1.0,
        ),
        Ratio(
            "p99 target / GET scores p99 @1k random arrivals",
            "GET scores p99 target",
            "GET scores p99 @1k random arrivals",
            1.0,
        ),
    ]
    return figures, ratios
