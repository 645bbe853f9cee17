"""Tests of deployment: replicas, several hosts, compose files, the examples."""
