"""Test support shared by libs/common and every service (a pytest plugin, see ``fixtures``)."""
