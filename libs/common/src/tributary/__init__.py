"""Tributary shared library."""
