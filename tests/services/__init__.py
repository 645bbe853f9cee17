"""Tests of keys, audit, feedback, knowledge gaps, single sign-on, backup, errors and settings (app/*.py, app/sso)."""
