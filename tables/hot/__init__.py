"""The fold's hot path: the common inputs folded on JSON dicts with orjson, byte for byte what
the pydantic path (``models.codec`` + ``tables.fold``) writes, at a third of its CPU.

Pure like the rest of ``tables`` (no I/O, no clock). The pydantic models stay the contract:

- ``schema``: input and record checkers generated from the models when imported. They accept
  a subset of what pydantic accepts (JSON's own types, canonical time texts), with the same
  values; for anything else the input takes the pydantic path, which accepts or refuses it
  with its own dead-letter reason.
- ``codec``: decoders per input kind, :class:`~.codec.HotRecord` (the record's canonical dict
  and its ``encode_record`` bytes), the output encoders, and a digest of every model the hot
  path reads or writes: a model change switches the hot path off until it is reviewed.
- ``fold``: :class:`~.fold.HotFold`, ``tables.fold`` for send results, ``UpdateStatus``, due
  checks, observations and correlated reports; it declines the rest (held commands, markers,
  other commands, record expiries, personal-data hashing and masking, API failover).
- ``batch``: :func:`~.batch.fold_batch`, the pure part of the engine's per-partition fold
  (``streams.engine.batch.BatchFold.fold``/``fold_one`` and ``Router.fold_outputs``): hot
  path per input, pydantic path where it declines, refusals as (reason, detail). This is what
  the engine's batch fold would call.

``tests/unit/tables/test_hot_equivalence.py`` and ``tests/unit/streams/
test_hot_engine_equivalence.py`` show the two paths write the same bytes.
"""
