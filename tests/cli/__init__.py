"""Tests of the kb command line (app/cli)."""
