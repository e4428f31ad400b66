"""Watch: budgets with burn rate and forecast, anomaly detectors, and alerts delivered where people work.

Kept import-light: the ledger schema imports `watch.tables` from here.
"""
