"""services.cli.signals.run_stoppable: a command stopped by a signal says so and exits 128 + it, even if its
task swallows cancellations; one that had finished when the signal came reports its result."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
import typer

from services.cli.signals import run_stoppable


def test_a_command_stopped_by_sigterm_says_so_and_exits_143(capsys: pytest.CaptureFixture[str]) -> None:
    swallowed = 0

    async def main() -> None:
        nonlocal swallowed
        os.kill(os.getpid(), signal.SIGTERM)
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1  # as Python 3.11's asyncio.wait_for can (gh-86296), three times
                if swallowed > 3:
                    raise

    with pytest.raises(typer.Exit) as exited:
        run_stoppable(main(), "the test was interrupted")
    assert exited.value.exit_code == 128 + signal.SIGTERM
    assert swallowed == 4
    assert capsys.readouterr().err == "rapport: the test was interrupted\n"


def test_a_command_that_finished_when_the_signal_came_reports_its_result(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return 7  # its last reply had arrived: it finished
        return 0

    assert run_stoppable(main()) == 7
    assert capsys.readouterr().err == ""
