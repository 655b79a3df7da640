"""The ``rapport`` command line: one entry point for the stack, topics, traffic and (later) workers."""

from __future__ import annotations

import typer

from services.cli import (
    api,
    deliver,
    demo,
    eval,
    keys,
    models,
    namespace,
    produce,
    profile,
    replay,
    schemas,
    scores,
    segments,
    simulate,
    stack,
    tail,
    topics,
    worker,
)

app = typer.Typer(
    name="rapport",
    help="Rapport: real-time customer profiles on Kafka, Faust, Redis and River.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(stack.app, name="stack")
app.add_typer(topics.app, name="topics")
app.add_typer(schemas.app, name="schemas")
app.add_typer(demo.app, name="demo")
app.add_typer(profile.app, name="profile")
app.command("simulate")(simulate.simulate)
app.command("produce")(produce.produce)
app.command("tail")(tail.tail)
app.command("worker")(worker.worker)
app.command("api")(api.api)
app.command("deliver")(deliver.deliver)
app.add_typer(keys.app, name="keys")
app.add_typer(segments.app, name="segments")
app.add_typer(namespace.app, name="namespace")
app.add_typer(models.app, name="models")
app.add_typer(scores.app, name="scores")
app.command("trainer")(models.trainer)
app.command("eval")(eval.evaluate)
app.command("replay")(replay.replay)


if __name__ == "__main__":
    app()
