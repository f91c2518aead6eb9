"""Offline training and evaluation: never imported while serving.

- :mod:`~gateway.training.router`: ``gateway router train``, ``eval``, ``score`` and
  ``calibrate`` (the difficulty head and the policy's thresholds).
- :mod:`~gateway.training.cache`: ``gateway cache eval`` and ``train-guard`` (the semantic
  cache's threshold and the meaning guard's verifier).
"""
