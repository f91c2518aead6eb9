"""The Batch API (``/v1/files``, ``/v1/batches``): work that can wait, run by the gateway.

- :mod:`~gateway.batch.wire`: OpenAI's File and Batch objects, input lines and result lines.
- :mod:`~gateway.batch.store` (SQLite) and :mod:`~gateway.batch.redis_store`: the objects'
  and lines' state, shared by replicas; :mod:`~gateway.batch.files`: the bytes, on disk.
- :mod:`~gateway.batch.runner`: each replica runs unfinished batches' lines, at most once;
  :mod:`~gateway.batch.line`: one line through its door and the pipeline;
  :mod:`~gateway.runtime.live`: the live traffic that batch work yields to.
- :mod:`~gateway.batch.cli`: ``gateway batch submit|status|results`` over HTTP.

The HTTP handlers are :mod:`gateway.api.files` and :mod:`gateway.api.batches`.
"""
