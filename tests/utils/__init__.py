"""Tests of amqs.utils."""
