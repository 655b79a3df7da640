"""``python -m bench.run [SUITE …]``: run benchmarks and print figures with ratios to same-run baselines."""

from __future__ import annotations

import argparse
import platform
from datetime import UTC, datetime

from bench import (
    api,
    foundation,
    models,
    profile_worker,
    redis_client,
    replay,
    segment_cost,
    segments,
    stream_runtime,
    webhooks,
)
from bench.harness import report
from services.settings import Settings

SUITES = (
    "foundation",
    "stream_runtime",
    "redis_client",
    "profile_worker",
    "api",
    "segments",
    "segment_cost",
    "models",
    "replay",
    "webhooks",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("suites", nargs="*", choices=[*SUITES, []], help=f"default: all of {', '.join(SUITES)}")
    parser.add_argument("--events", type=int, default=200_000, help="events per run")
    parser.add_argument(
        "--rounds",
        type=int,
        default=profile_worker.ROUNDS,
        help="interleaved rounds whose medians are reported: profile_worker's worker and naive runs, replay's "
        "worker and replay runs",
    )
    args = parser.parse_args()
    suites = args.suites or list(SUITES)
    settings = Settings()
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.python_implementation()} {platform.python_version()}")
    if "foundation" in suites:
        report("foundation", *foundation.run(settings, args.events))
    if "stream_runtime" in suites:
        report("stream runtime", *stream_runtime.run(settings, args.events))
    if "redis_client" in suites:
        report("Redis client: pipelined commands", *redis_client.run(settings))
    if "profile_worker" in suites:
        report("profile worker", *profile_worker.run(settings, args.events, args.rounds))
    if "api" in suites:
        report("serving API (one uvicorn worker)", *api.run(settings))
    if "segments" in suites:
        report("segment timers", *segments.run(settings))
    if "segment_cost" in suites:
        report("segment evaluation cost", *segment_cost.run(settings, args.events))
    if "models" in suites:
        report("models: training and scoring cost", *models.run(settings, args.events))
    if "replay" in suites:
        report("replay", *replay.run(settings, args.events, args.rounds))
    if "webhooks" in suites:
        report("webhook delivery by number of webhooks (one deliverer)", *webhooks.run(settings))


if __name__ == "__main__":
    main()
