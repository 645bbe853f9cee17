"""Tests of the answer pipeline (app/rag)."""
