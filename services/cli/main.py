"""The ``rapport`` command line: one entry point for the stack, topics, traffic, workers and operations.

Each subcommand's module is imported only when that subcommand runs. Importing them all (River, SciPy,
FastAPI, Faust) took ~2 s before anything happened, on every invocation: `rapport keys create` or
`rapport segments list` paid for the models and the API server. ``rapport --help`` still imports every
module, to show each command's help line.
"""

from __future__ import annotations

import importlib
import sys
from typing import Final

import typer
from typer._click.core import Command, Context  # Typer vendors its own click
from typer.core import TyperGroup

#: command → (module under ``services.cli``, attribute): a Typer app (a group of commands) or a function.
#: In the order ``rapport --help`` lists them.
COMMANDS: Final = {
    "stack": ("stack", "app"),
    "topics": ("topics", "app"),
    "schemas": ("schemas", "app"),
    "demo": ("demo", "app"),
    "profile": ("profile", "app"),
    "simulate": ("simulate", "simulate"),
    "produce": ("produce", "produce"),
    "tail": ("tail", "tail"),
    "dlq": ("dlq", "app"),
    "worker": ("worker", "worker"),
    "api": ("api", "api"),
    "deliver": ("deliver", "deliver"),
    "webhooks": ("webhooks", "app"),
    "keys": ("keys", "app"),
    "segments": ("segments", "app"),
    "namespace": ("namespace", "app"),
    "models": ("models", "app"),
    "scores": ("scores", "app"),
    "trainer": ("models", "trainer"),
    "eval": ("eval", "evaluate"),
    "replay": ("replay", "replay"),
}


def load_command(name: str) -> Command:
    """The click command ``rapport NAME`` runs, built as ``add_typer`` / ``command`` would build it."""
    module, attribute = COMMANDS[name]
    target = getattr(importlib.import_module(f"services.cli.{module}"), attribute)
    holder = typer.Typer(add_completion=False, callback=lambda: None)
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name)
    else:
        holder.command(name)(target)
    group = typer.main.get_command(holder)
    assert isinstance(group, TyperGroup)  # a holder with a callback is always a group
    return group.commands[name]


class _LazyGroup(TyperGroup):
    def list_commands(self, ctx: Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            self.add_command(load_command(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    name="rapport",
    cls=_LazyGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def rapport() -> None:
    """Rapport: real-time customer profiles on Kafka, Faust, Redis and River."""


#: The exit status of a command that could not reach Redis or Kafka (sysexits' EX_TEMPFAIL: try again later).
UNREACHABLE: Final = 75
#: The exit status of a command whose settings are invalid (sysexits' EX_CONFIG).
MISCONFIGURED: Final = 78


def main() -> None:
    """The ``rapport`` script. A command that cannot reach Redis or Kafka says so in one line and exits with
    ``UNREACHABLE``, instead of a traceback. (The long-running processes wait such outages out themselves.)"""
    if (garbled := not_text(sys.argv[1:])) is not None:
        print(f"rapport: argument {garbled!r} is not UTF-8 text", file=sys.stderr)
        raise SystemExit(2)
    try:
        app()
    except Exception as exc:
        if (wrong := misconfigured(exc)) is not None:
            print("rapport: invalid settings (environment or .env):", *wrong, sep="\n  ", file=sys.stderr)
            raise SystemExit(MISCONFIGURED) from None
        if missing_topics(exc):
            print(f"rapport: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        what = unreachable(exc)
        if what is None:
            raise
        why = str(exc).rstrip(".")
        print(
            f"rapport: {what} is unreachable ({why}); is it running? `rapport stack up` starts the local one",
            file=sys.stderr,
        )
        raise SystemExit(UNREACHABLE) from None


def not_text(args: list[str]) -> str | None:
    """The first argument that is not UTF-8 text: Python hands such bytes over as lone surrogates, which every
    id, name and rule would carry into Redis or Kafka and fail to encode there, with a traceback.

    >>> not_text(["profile", "get", "c-1"]), not_text(["profile", "get", "c-\\udcff"])
    (None, 'c-\\udcff')
    """
    for arg in args:
        try:
            arg.encode()
        except UnicodeEncodeError:
            return arg
    return None


def misconfigured(exc: BaseException) -> list[str] | None:
    """One line per invalid setting, named by its environment variable, when ``exc`` is the settings'
    validation error; else None. The inputs pydantic attaches are left out: a secret could be among them.

    >>> from services.settings import Settings
    >>> try:
    ...     Settings(stream={"max_poll_records": "many"})
    ... except Exception as exc:
    ...     misconfigured(exc)
    ['RAPPORT_STREAM__MAX_POLL_RECORDS: Input should be a valid integer, unable to parse string as an integer']
    >>> misconfigured(ValueError("not a setting")) is None
    True
    """
    from pydantic import ValidationError  # noqa: PLC0415 - only a failing command needs it

    if not isinstance(exc, ValidationError) or exc.title != "Settings":
        return None
    lines = []
    for error in exc.errors():
        name = f"RAPPORT_{'__'.join(str(part) for part in error['loc']).upper()}" if error["loc"] else "settings"
        lines.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
    return lines


def missing_topics(exc: BaseException) -> bool:
    """Whether ``exc`` says that topics a command needs do not exist."""
    from services.kafka_clients import MissingTopicsError  # noqa: PLC0415 - as in ``unreachable``

    return isinstance(exc, MissingTopicsError)


def unreachable(exc: BaseException) -> str | None:
    """``"Redis"`` or ``"Kafka"`` when ``exc`` says that one cannot be reached, else None."""
    # Imported here: the three clients' packages take ~0.2 s, which a command that never fails (or a light one,
    # like `rapport keys`) would pay at every start.
    from aiokafka.errors import KafkaConnectionError as AsyncKafkaConnectionError  # noqa: PLC0415
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError  # noqa: PLC0415
    from redis.exceptions import ConnectionError as RedisConnectionError  # noqa: PLC0415
    from redis.exceptions import TimeoutError as RedisTimeoutError  # noqa: PLC0415

    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return "Redis"
    if isinstance(exc, AsyncKafkaConnectionError | KafkaConnectionError | KafkaTimeoutError):
        return "Kafka"
    return None


if __name__ == "__main__":
    main()
