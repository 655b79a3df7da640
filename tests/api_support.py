"""The real API in a subprocess (`rapport api` on a free loopback port), for integration tests."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx

from profiles.identity import Arrival
from profiles.offline import OfflineFolder
from profiles.state import ProfileState
from profiles.store import ABSENT, ProfileStore, ProfileWrite
from schemas.resolved import RawSource
from schemas.validation import Rejection, decode_event
from services.redis_client import make_redis
from services.settings import Settings
from services.simulator import Simulation, SimulationConfig
from services.simulator.stream import DEFAULT_START


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_api(env: dict[str, str], log: Path) -> Iterator[str]:
    """Start `rapport api`, wait for /healthz, yield its base URL; SIGTERM it afterwards."""
    with api_process(env, log) as (_, base):
        yield base


@contextmanager
def api_process(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``running_api``, yielding the process too (a test that stops it itself)."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "api", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"rapport api exited: {log.read_text()}")
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"rapport api did not come up: {log.read_text()}")
                time.sleep(0.1)
            yield process, base
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def stopped(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    """SIGTERM, then the exit code; a process still running ``timeout_s`` later is SIGKILLed (no test leaves one
    behind) and the test fails."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"still running {timeout_s} s after SIGTERM") from None


def create_key(env: dict[str, str], *options: str) -> str:
    """`rapport keys create …` → the token it prints."""
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "keys", "create", *options],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def store_simulated_profiles(
    settings: Settings, namespace: str, customers: int, *, days: int = 30, start: datetime = DEFAULT_START
) -> list[ProfileState]:
    """The profiles of a simulation folded offline (the worker's pure fold), written into ``namespace`` as the
    worker writes them; every profile, customers and visitors."""
    folder = OfflineFolder(settings.profile.fold_config())
    arrivals = []
    for i, line in enumerate(Simulation(SimulationConfig(customers=customers, days=days, seed=3, start=start)).lines()):
        event = decode_event(line)
        if not isinstance(event, Rejection):
            arrivals.append(Arrival(RawSource("simulated", 0, i), line, event, None))
    folder.feed(arrivals)
    states = list(folder.profiles().values())
    asyncio.run(_save(settings, namespace, states))
    return states


async def _save(settings: Settings, namespace: str, states: list[ProfileState]) -> None:
    redis = make_redis(settings)
    try:
        store = ProfileStore(redis, namespace)
        for first in range(0, len(states), 500):
            await store.save([ProfileWrite(s.profile_id, ABSENT, 0, s, True) for s in states[first : first + 500]])
    finally:
        await redis.aclose()
