"""Train the zstd dictionary the models' pending entries are compressed with: ``python -m
services.entry_dictionary`` writes ``profiles/dictionaries/entries-<N>.zdict``.

A pending entry (``profiles.models.view.Entry``) holds one event's JSON, ~370 bytes, and waits in Redis
until the models' watermark passes it (up to the shortest horizon, 7 days). Entries were about half of a
namespace's memory. Alone, each compresses poorly (zstd: ~280 bytes), because what repeats is between
entries: the contract's field names, event types and actions, id and timestamp shapes. A dictionary of
those, trained on simulated events, brings an entry to ~85 bytes.

The dictionary is trained once and shipped: entries compressed with it must decompress for as long as they
can be stored, so a new one is added beside it (a new number, in ``profiles.compression``), never written
over. Training is deterministic: the same seed gives the same bytes.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import zstandard

from profiles.models.view import EVENT, Entry, pack_entry
from profiles.timeutil import to_ms
from schemas.validation import Rejection, ValidationLimits, validate_event
from services.simulator import Simulation, SimulationConfig

DICTIONARIES = Path(__file__).resolve().parents[1] / "profiles" / "dictionaries"
SIZE = 16 * 1024


def samples(customers: int, days: int, seed: int) -> list[bytes | bytearray | memoryview]:
    """Entries of a simulated history, encoded as the worker stores them before compression."""
    now = datetime.now(UTC)
    out: list[bytes | bytearray | memoryview] = []
    for line in Simulation(SimulationConfig(customers=customers, days=days, seed=seed)).lines():
        event = validate_event(line, now=now, limits=ValidationLimits())
        if not isinstance(event, Rejection):
            out.append(pack_entry(Entry(to_ms(event.timestamp), EVENT, event.event_id, line)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the next zstd dictionary of the models' pending entries.")
    parser.add_argument("number", type=int, help="the dictionary's number: one more than the newest shipped")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    path = DICTIONARIES / f"entries-{args.number}.zdict"
    if path.exists():
        parser.error(f"{path} exists: entries may be stored with it, so it is never written over")
    trained = zstandard.train_dictionary(SIZE, samples(300, 30, args.seed))
    path.write_bytes(trained.as_bytes())
    print(f"{path}: {SIZE:,} bytes, dictionary id {trained.dict_id()}")


if __name__ == "__main__":
    main()
