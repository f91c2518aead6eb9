"""The small models the gateway runs while serving, numpy or ONNX Runtime at inference.

- :mod:`~gateway.ml.text`: the one text that stands for a request (embedded, classified).
- :mod:`~gateway.ml.embedder` and :mod:`~gateway.ml.onnx_encoder`: the sentence embedder.
- :mod:`~gateway.ml.classifier`, :mod:`~gateway.ml.head`, :mod:`~gateway.ml.terms`: the
  difficulty classifier (a trained head over the embedding, text features and word terms).
- :mod:`~gateway.ml.rules`, :mod:`~gateway.ml.verifier`, :mod:`~gateway.ml.guard`: the semantic
  cache's meaning guard (hand-written rules, then a learned pair verifier).
- :mod:`~gateway.ml.loader`: loads them once and runs them off the event loop.
- :mod:`~gateway.ml.memo`: the guard's memos, bounded by entries and bytes.

Their weights are committed artifacts (``gateway/data``), trained by :mod:`gateway.training`,
which serving never imports.
"""
