"""The k8s_real tier's control plane, one per worker process (support/k8s_control_plane.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def plane(tmp_path_factory):
    from support.k8s_control_plane import control_plane

    with control_plane(tmp_path_factory.mktemp("k8s")) as running:
        yield running
