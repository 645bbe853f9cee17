"""Tests of the model gateway (app/llm)."""
