"""Detached service processes tracked by PID files.

The services must outlive the ``rapport stack up`` command, so they run in their own session with
output sent to log files, and the only link back to them is a PID file. A PID file can go stale (the
process died, or the PID was reused by something unrelated), so callers always combine the PID
with a check of ``/proc/<pid>/cmdline`` before trusting it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

# Popen handles of the services this Python process started. Holding them keeps Popen.__del__ from
# warning about still-running children, and lets is_alive() reap a child that died: an unreaped
# child is a zombie that signal 0 and /proc would otherwise still report.
_children: dict[int, subprocess.Popen[bytes]] = {}


def read_pid(pid_file: Path) -> int | None:
    """The PID recorded in ``pid_file``, or None if there is no (readable) PID file."""
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def write_pid(pid_file: Path, pid: int) -> None:
    """Record ``pid`` atomically, so a concurrent reader never sees a half-written file."""
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = pid_file.with_name(pid_file.name + ".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(pid_file)


def is_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) process."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The command name in field 2 may contain spaces and parentheses; the state follows the last ')'.
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in {"Z", "X"}


def cmdline(pid: int) -> str:
    """The command line of ``pid`` with arguments joined by spaces ("" if the process is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def start_detached(argv: Sequence[str], *, log_file: Path, cwd: Path) -> int:
    """Start ``argv`` in a new session with stdout and stderr appended to ``log_file``; return its PID.

    A new session keeps the service alive when the terminal that ran ``stack up`` closes, and keeps
    Ctrl-C in that terminal from reaching it.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )
    _children[child.pid] = child
    return child.pid


def wait_for_exit(pid: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for ``pid`` to exit; True if it did."""
    deadline = time.monotonic() + timeout_s
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop_pid(pid: int, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 30.0) -> None:
    """Send ``sig`` to ``pid`` and wait for it to exit, escalating to SIGKILL after ``timeout_s``."""
    if not is_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if wait_for_exit(pid, timeout_s):
        return
    if sig != signal.SIGKILL:
        log.warning("pid %d ignored %s for %.0f s; sending SIGKILL", pid, sig.name, timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # SIGKILL cannot be caught; the wait only covers the kernel tearing the process down.
    if not wait_for_exit(pid, 10.0):
        raise RuntimeError(f"pid {pid} survived SIGKILL")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` so concurrent ``stack up``/``down`` calls serialise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ("" if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
