"""Tests of the shared SQL database (app/db)."""
