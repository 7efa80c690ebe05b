"""Data sources: each returns one normalized frame per trading day (see common.store.COLUMNS)."""
