"""Defects injected into a ``rapport`` subprocess (tests only; Python imports this module at start-up when its
directory is on ``PYTHONPATH``).

With ``RAPPORT_TEST_UNFOLDABLE_EVENT`` set, folding the event whose JSON contains that text changes the
profile in place and then raises, as a real defect could: the worker and the replay must set the record
aside, fold the rest from the stored states, and never keep the half-changed profile.

With ``RAPPORT_TEST_UNRESOLVABLE_EVENT`` set, resolving the event whose id contains that text raises: the
worker must refuse that record alone as ``resolve_error`` and resolve the rest of its batch.

With ``RAPPORT_TEST_UNLEARNABLE_EXAMPLE`` set, a trainer learning the example of that id raises: the trainer
must skip it and go on learning.

With ``RAPPORT_TEST_FAILING_PROFILE`` set, the API's read of that profile id raises: it must answer a 500
with its error body and go on serving.

With ``RAPPORT_TEST_REDRIVE_DIES`` set to ``before_send`` or ``after_send``, ``rapport dlq redrive`` dies
(``os._exit``, like SIGKILL: no clean-up) at its first send, or once its sends are acknowledged and before
it records them: a later redrive must send each dead letter exactly once.

With ``RAPPORT_TEST_REDRIVE_FREEZES`` set to a lock holder's name, ``rapport dlq redrive`` sends one dead
letter a batch under a lock of 900 ms, and after recording its first batch it is held up for 1.2 s while that
holder (another host's redrive) takes its lock: it must stop before its next batch.
"""

from __future__ import annotations

import os
from typing import Any

_marker = os.environ.get("RAPPORT_TEST_UNFOLDABLE_EVENT", "").encode()

if _marker:
    import profiles.batch

    _module = vars(profiles.batch)  # the name the fold calls, not profiles.apply's
    _original = _module["apply_resolved"]

    def _defective(state: Any, record: Any, **kwargs: Any) -> Any:
        result = _original(state, record, **kwargs)
        if record.event is not None and _marker in record.event:
            raise ZeroDivisionError("injected defect")
        return result

    _module["apply_resolved"] = _defective

_unresolvable = os.environ.get("RAPPORT_TEST_UNRESOLVABLE_EVENT", "")

if _unresolvable:
    import streams.resolution

    _resolution = vars(streams.resolution)  # the name the resolver calls, not profiles.erasure's
    _event_ids = _resolution["event_ids"]

    def _defective_ids(event: Any) -> Any:
        if _unresolvable in event.event_id:
            raise ZeroDivisionError("injected defect")
        return _event_ids(event)

    _resolution["event_ids"] = _defective_ids

_example_id = os.environ.get("RAPPORT_TEST_UNLEARNABLE_EXAMPLE", "")

if _example_id:
    from profiles.models.trainer import ModelTrainer

    _learn = ModelTrainer.learn

    def _defective_learn(self: Any, example: Any) -> Any:
        if example.example_id == _example_id:
            raise ZeroDivisionError("injected defect")
        return _learn(self, example)

    ModelTrainer.learn = _defective_learn  # type: ignore[method-assign]

_failing_profile = os.environ.get("RAPPORT_TEST_FAILING_PROFILE", "")

if _failing_profile:
    import services.api.routes.profiles

    _profiles_routes = vars(services.api.routes.profiles)  # the name answer_profile calls
    _read = _profiles_routes["_read"]

    async def _defective_read(ctx: Any, served: Any, ids: Any, *args: Any, **kwargs: Any) -> Any:
        if _failing_profile in ids:
            raise ZeroDivisionError("injected defect")
        return await _read(ctx, served, ids, *args, **kwargs)

    _profiles_routes["_read"] = _defective_read

_redrive_dies = os.environ.get("RAPPORT_TEST_REDRIVE_DIES", "")

if _redrive_dies:
    import services.dlq

    _dlq = vars(services.dlq)  # the names redrive calls

    def _exit(*args: Any, **kwargs: Any) -> Any:
        os._exit(137)

    async def _die(*args: Any, **kwargs: Any) -> Any:
        _exit()

    if _redrive_dies == "after_send":
        _dlq["_settle"] = _die
    else:
        _make_producer = _dlq["make_producer"]

        def _dying_producer(*args: Any, **kwargs: Any) -> Any:
            producer = _make_producer(*args, **kwargs)
            producer.send = _exit
            return producer

        _dlq["make_producer"] = _dying_producer

_redrive_freezes = os.environ.get("RAPPORT_TEST_REDRIVE_FREEZES", "")

if _redrive_freezes:
    import asyncio

    import services.dlq

    _frozen_dlq = vars(services.dlq)  # the names redrive reads when it runs
    _frozen_dlq["BATCH"], _frozen_dlq["LOCK_MS"] = 1, 900
    _settle = _frozen_dlq["_settle"]
    _batches_settled: list[Any] = []

    async def _settle_then_freeze(redis: Any, sent_key: str, intent_key: str, positions: Any) -> Any:
        await _settle(redis, sent_key, intent_key, positions)
        _batches_settled.append(positions)
        if len(_batches_settled) == 1:
            await redis.set(sent_key.removesuffix(":sent") + ":lock", _redrive_freezes, px=60_000)
            await asyncio.sleep(1.2)  # several refreshes, each finding the lock taken

    _frozen_dlq["_settle"] = _settle_then_freeze
