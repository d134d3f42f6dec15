"""Helpers shared by the test tiers and the benchmarks, one module per concern:

- ``images``: class-coloured images, image trees and a small MindRecord set;
- ``data_cases``: awkward real-world image trees (broken, rotated, odd formats);
- ``training``: the smoke recipe, the training CLI and rank checks;
- ``ports`` / ``processes``: free loopback ports, served processes and process groups;
- ``seaweedfs`` / ``postgres`` / ``prefect_server``: real servers on loopback ports;
- ``nodes_cluster``: the multi-node cluster of work pools and workers;
- ``prerequisites``: the one rule for a missing prerequisite (skip, or fail with CI set).

Importable as ``support``: pytest puts ``tests/`` on ``sys.path`` when it loads
``tests/conftest.py``; the benchmarks add ``tests/`` themselves. Test files import helpers from
here, never from ``conftest``.
"""
