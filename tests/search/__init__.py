"""Tests of amqs.search."""
