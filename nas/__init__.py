"""NAS jobs: ingest, scan, alert, request, sync, ops cycle."""
