"""Prefect flows of the project (wiring only; the work is in ``tasks/`` and ``irv2_core``)."""
