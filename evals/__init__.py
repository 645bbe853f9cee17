"""Evaluation suites (kb eval) — measure answer and retrieval quality offline."""
