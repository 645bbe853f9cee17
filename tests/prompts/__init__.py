"""Tests of the versioned prompts (prompts/)."""
