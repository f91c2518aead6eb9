"""``python -m local_engine serve ...``, the same as the ``local-engine`` script."""

from local_engine.cli import main

main()
