"""What every service of the local stack has in common: PID file, start, stop, status."""

from __future__ import annotations

import logging
import signal
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from deploy.localstack import process
from deploy.localstack.errors import StackError, StartupError
from deploy.localstack.net import LOOPBACK, port_open

log = logging.getLogger(__name__)

# How long a server that we did not start may take to answer before `up` gives up on it.
EXTERNAL_ANSWER_TIMEOUT_S = 15.0
# How long a stopped process's listening socket may linger (see _wait_until_port_released).
PORT_RELEASE_TIMEOUT_S = 5.0


class NodeState(StrEnum):
    RUNNING = "running"  # started by us (PID file) and answering
    STARTING = "starting"  # our process is alive but does not answer yet
    EXTERNAL = "external"  # not started by us, but something answers on the port
    STOPPED = "stopped"


class Outcome(StrEnum):
    """What ``start()`` did."""

    STARTED = "started"
    REUSED = "reused"  # our process from an earlier `up` was already running
    EXTERNAL = "external"  # a server we did not start already answers on the port; left alone


@dataclass(frozen=True)
class NodeStatus:
    name: str
    state: NodeState
    address: str
    pid: int | None  # only for processes we started
    node_dir: Path
    log_files: tuple[Path, ...]

    @property
    def owned(self) -> bool:
        return self.pid is not None


class ManagedNode(ABC):
    """One service process of the stack, identified by ``<state_dir>/<name>/<name>.pid``."""

    name: str

    def __init__(self, *, state_dir: Path, port: int, start_timeout_s: float, stop_timeout_s: float = 30.0) -> None:
        self.node_dir = state_dir / self.name
        self.log_dir = self.node_dir / "logs"
        self.pid_file = self.node_dir / f"{self.name}.pid"
        self.stdout_log = self.log_dir / f"{self.name}.out"
        self.port = port
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s

    # -- what each service defines ------------------------------------------------------------

    @abstractmethod
    def _prepare(self) -> list[str]:
        """Install, configure and initialise whatever is needed; return the argv to launch."""

    @abstractmethod
    def _is_our_process(self, cmdline: str) -> bool:
        """Whether a process with this command line is this node (guards against reused PIDs)."""

    @abstractmethod
    def probe(self) -> bool:
        """Whether the service answers a real protocol request on its port (not just TCP)."""

    @property
    @abstractmethod
    def log_files(self) -> tuple[Path, ...]:
        """The files worth reading when the service misbehaves, most useful first."""

    # -- shared behaviour ---------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The PID of our running process, or None (no PID file, process gone, or PID reused)."""
        pid = process.read_pid(self.pid_file)
        if pid is None or not process.is_alive(pid):
            return None
        return pid if self._is_our_process(process.cmdline(pid)) else None

    def is_running(self) -> bool:
        """Whether the process we started is alive (it may still be starting up)."""
        return self.pid is not None

    def status(self) -> NodeStatus:
        pid = self.pid
        answering = port_open(self.port) and self.probe()
        if pid is not None:
            state = NodeState.RUNNING if answering else NodeState.STARTING
        else:
            state = NodeState.EXTERNAL if answering else NodeState.STOPPED
        return NodeStatus(self.name, state, self.address, pid, self.node_dir, self.log_files)

    def start(self) -> Outcome:
        """Make the service answer on its port, starting it only if neither we nor anyone else runs it."""
        pid = self.pid
        if pid is not None:
            self._wait_until_answering(pid, self.start_timeout_s)
            return Outcome.REUSED
        self.pid_file.unlink(missing_ok=True)  # stale: its process is gone or is something else
        if self._external_server_answers():
            log.info("%s: a server we did not start already answers on %s; using it", self.name, self.address)
            return Outcome.EXTERNAL
        argv = self._prepare()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log.info("%s: starting on %s", self.name, self.address)
        pid = process.start_detached(argv, log_file=self.stdout_log, cwd=self.node_dir)
        process.write_pid(self.pid_file, pid)
        try:
            self._wait_until_answering(pid, self.start_timeout_s)
        except StartupError:
            self.stop()  # a half-started process would be reused by the next `up`
            raise
        return Outcome.STARTED

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """Stop the process we started (SIGKILL after the stop timeout); return its PID, if any.

        Returns once the process is gone and its port is free, so a restart can follow at once. A
        server we did not start is never touched. The PID file goes; data stays.
        """
        pid = self.pid
        if pid is not None:
            log.info("%s: sending %s to pid %d", self.name, sig.name, pid)
            process.stop_pid(pid, sig, self.stop_timeout_s)
            self._wait_until_port_released()
        self.pid_file.unlink(missing_ok=True)
        return pid

    def kill(self) -> int | None:
        """SIGKILL the process we started, as a crash would; return its PID, if any."""
        return self.stop(signal.SIGKILL)

    def _wait_until_port_released(self) -> None:
        # The kernel closes a dead process's sockets asynchronously, so a listener can outlive the
        # reaped process by a few milliseconds; a restart in that window would see a foreign server.
        deadline = time.monotonic() + PORT_RELEASE_TIMEOUT_S
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _external_server_answers(self) -> bool:
        """Whether a server we did not start holds the port; it gets a while to answer like ours would.

        A port that closes meanwhile was held by a dying process (say, ours, just killed): not external.
        """
        deadline = time.monotonic() + EXTERNAL_ANSWER_TIMEOUT_S
        while port_open(self.port):
            if self.probe():
                return True
            if time.monotonic() >= deadline:
                raise StackError(
                    f"{self.name}: port {self.port} is in use by a process we did not start, and it does "
                    f"not answer like {self.name} within {EXTERNAL_ANSWER_TIMEOUT_S:.0f} s. Stop it or "
                    f"choose another port in the stack settings."
                )
            time.sleep(0.5)
        return False

    def _wait_until_answering(self, pid: int, timeout_s: float) -> None:
        """Poll until our process answers; fail early, with its log, if it exits."""
        deadline = time.monotonic() + timeout_s
        while not (port_open(self.port) and self.probe()):
            if not process.is_alive(pid):
                raise StartupError(self._failure(f"exited while starting (pid {pid})"))
            if time.monotonic() >= deadline:
                raise StartupError(self._failure(f"did not answer on {self.address} within {timeout_s:.0f} s"))
            time.sleep(0.5)

    def _failure(self, what: str) -> str:
        parts = [f"{self.name} {what}."]
        for path in self.log_files:
            text = process.tail(path)
            if text:
                parts.append(f"--- last lines of {path} ---\n{text}")
        return "\n".join(parts)
