"""A command stopped by Ctrl-C or SIGTERM stops at once, says so, and the same command finishes the job.

Python 3.11's ``asyncio.wait_for``, which redis-py awaits for every command it sends, can swallow the one
cancellation ``asyncio.run`` sends on Ctrl-C (gh-86296): before session 37, one `rapport namespace drop`
in five went on to its end after a Ctrl-C (``services.cli.signals``).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import uuid

import pytest
import redis

from tests.kafka_support import Topics, interruptible, rapport

pytestmark = pytest.mark.integration

KEYS = 1_500_000


def test_a_namespace_drop_stops_at_ctrl_c_or_sigterm_and_the_same_command_finishes_it(topics: Topics) -> None:
    namespace = f"t{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(topics.settings.redis.url)
    try:
        keys = [f"rapport:{namespace}:k{n}" for n in range(KEYS)]
        pipe = client.pipeline(transaction=False)
        for n, key in enumerate(keys, 1):
            pipe.set(key, b"x")
            if n % 20_000 == 0:
                pipe.execute()
        pipe.execute()
        sample = random.Random(5).sample(keys, 2_000)
        command = [sys.executable, "-m", "services.cli.main", "namespace", "drop", namespace, "--yes"]
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGINT):
            proc = subprocess.Popen(
                interruptible(command), env=topics.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            before, deadline = client.exists(*sample), time.monotonic() + 60
            while client.exists(*sample) == before:  # until this drop has begun
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the drop never began"
                time.sleep(0.01)
            proc.send_signal(sig)
            sent = time.monotonic()
            out, err = proc.communicate(timeout=60)
            took = time.monotonic() - sent
            assert proc.returncode == 128 + sig, (sig.name, proc.returncode, out, err)
            assert f"the drop of {namespace!r} was interrupted: the same command finishes it" in err, err
            assert "Traceback" not in err, err
            assert took < 5, f"{sig.name}: the drop took {took:.1f} s to stop"
            assert client.exists(*sample), f"{sig.name}: the drop went on to its end"
        finished = rapport("namespace", "drop", namespace, "--yes", env=topics.env)
        assert finished.returncode == 0, finished.stderr
        assert client.exists(*sample) == 0
        assert next(client.scan_iter(match=f"rapport:{namespace}:*", count=10_000), None) is None
    finally:
        left = list(client.scan_iter(match=f"rapport:{namespace}:*", count=10_000))
        for at in range(0, len(left), 10_000):
            client.unlink(*left[at : at + 10_000])
        client.close()
