"""Shared fixtures for every test in the repository (libs/common, services, tests/)."""

pytest_plugins = ["tributary_testing.fixtures"]
