"""Test support shared by libs/common, every service and tests/ (never by production code).

A workspace member of its own (distribution ``tributary-testing``) so that it is
not in the ``tributary`` wheel: the workspace installs it as a dev dependency,
the images (``uv sync --no-dev``) do not. The root ``conftest.py`` loads
:mod:`tributary_testing.fixtures` as a pytest plugin.

- :mod:`~tributary_testing.fixtures`: isolated Redis prefixes, PostgreSQL schemas,
  MySQL databases, service process launchers (the pytest plugin)
- :mod:`~tributary_testing.infra`: where the test databases are; deleting a key prefix
- :mod:`~tributary_testing.process`: services as real subprocesses
- :mod:`~tributary_testing.waiting`: polling with a deadline instead of sleeping
- :mod:`~tributary_testing.poison`: malformed stream entries of every kind
- :mod:`~tributary_testing.sample_service`: a minimal service for the library's process tests
"""
