"""Batch lines sent to a provider's own batch API (``batch_api`` on a policy model), as one
upstream batch per gateway batch and model, at the provider's batch price.

- :mod:`~gateway.batch.upstream.collector`: the lines gathered, sent, polled and answered; a
  stopped replica's upstream batches resumed by another;
- :mod:`~gateway.batch.upstream.api`: what an adapter does (submit, poll, cancel) and answers;
- :mod:`~gateway.batch.upstream.openai` (``/v1/files`` and ``/v1/batches``),
  :mod:`~gateway.batch.upstream.anthropic` (Message Batches) and
  :mod:`~gateway.batch.upstream.bedrock` (batch inference, files in S3): one adapter per
  provider kind.
"""
