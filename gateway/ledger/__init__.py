"""The cost ledger: one record per request, stored without loss, summed into reports."""
