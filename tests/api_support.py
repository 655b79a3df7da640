"""The real API in a subprocess (`rapport api` on a free loopback port), for integration tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_api(env: dict[str, str], log: Path) -> Iterator[str]:
    """Start `rapport api`, wait for /healthz, yield its base URL; SIGTERM it afterwards."""
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
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


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
