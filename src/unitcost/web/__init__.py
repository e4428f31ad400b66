"""HTTP interfaces over the ledger for people and programs: a JSON API and a dashboard."""
