"""Helpers shared by the test tiers and the benchmarks: real servers started on loopback ports
(``seaweedfs``, ``postgres``) and the one rule for a missing prerequisite (``prerequisites``).

Importable as ``support``: pytest puts ``tests/`` on ``sys.path`` when it loads
``tests/conftest.py`` (the same way ``from conftest import ...`` works); the benchmarks add
``tests/`` themselves.
"""
