"""Tests of ingestion (ingest/, app/queue.py)."""
