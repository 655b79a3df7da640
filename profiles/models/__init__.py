"""The scores Rapport learns online, as a pure core (``docs/models.md``).

- ``specs``: what each score predicts, over which horizon, with which River pipeline, and its cold-start
  heuristic;
- ``policy``: when prediction snapshots (the features at an instant) are taken, by event time;
- ``labels``: how their delayed labels resolve, and when they are released as examples;
- ``metrics`` and ``trainer``: progressive validation against baselines, drift detection;
- ``snapshots``: signed, versioned model snapshots;
- ``scoring``: the score of a profile at an ``as_of`` instant.

No Kafka, Redis or clock here: the worker, the trainer agent and the API call these functions.
"""
