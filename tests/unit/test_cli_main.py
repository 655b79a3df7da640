"""The ``rapport`` entry point loads a subcommand's module only when that subcommand runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.cli.main import COMMANDS, load_command

HEAVY = ("river", "scipy", "fastapi", "faust", "uvicorn")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_loads_under_its_name(name: str) -> None:
    command = load_command(name)
    assert command.name == name
    assert command.help, f"`rapport {name}` has no help line"


def test_a_light_command_imports_neither_the_models_nor_the_servers() -> None:
    code = (
        "import sys\n"
        "from services.cli.main import app\n"
        "try:\n"
        "    app(['keys', '--help'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        f"print('imported:', ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "create" in done.stdout, "the keys group's help was not shown"
    assert done.stdout.splitlines()[-1] == "imported: ", done.stdout.splitlines()[-1]
