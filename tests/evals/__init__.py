"""Tests of the eval suites (evals/)."""
