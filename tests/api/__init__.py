"""Tests of the HTTP API (app/api)."""
