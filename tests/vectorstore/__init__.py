"""Tests of the stores (vectorstore/)."""
