"""The cost ledger: one record per request, stored without loss, summed into reports.

``open_ledger(redis_url, data_dir, ledger_url=...)`` gives the store the settings ask for
(PostgreSQL, else Redis, else a SQLite file); the app's lifespan starts it and closes it, the
pipeline calls ``record`` after each response, budgets call ``spend``, and reports come from
``report``.
"""

from gateway.ledger.record import LedgerRecord
from gateway.ledger.report import Report, Row
from gateway.ledger.store import Ledger, LedgerUnavailable, open_ledger

__all__ = ["Ledger", "LedgerRecord", "LedgerUnavailable", "Report", "Row", "open_ledger"]
