"""Plain helpers shared by the test packages (and the benchmarks): no fixtures, no tests.

Fixtures and pytest hooks live in ``tests/conftest.py``; test modules import helpers from here, never
from another test module or from conftest.
"""
