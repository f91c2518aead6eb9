"""Offline training and evaluation: never imported while serving.

- :mod:`~gateway.training.router`: ``gateway router train``, ``eval``, ``score`` and
  ``calibrate`` (the difficulty head and the policy's thresholds).
- :mod:`~gateway.training.cache`: ``gateway cache eval`` and ``train-guard`` (the semantic
  cache's threshold and the meaning guard's verifier).
"""


class MissingTrainExtra(ImportError):
    """Fitting needs scikit-learn, which serving does not: it lives in the ``train`` extra so that
    a gateway install stays free of it. Raised by the fitting modules on import; the CLIs print
    it."""

    def __init__(self, cause: ModuleNotFoundError) -> None:
        super().__init__(f"training needs scikit-learn ({cause}): pip install 'llm-gateway[train]'")
