"""Cluster fixtures: clusters of real daemons on the session's broker, each with a Messages
API server of its own; every daemon left alive at the end is killed by its pid."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from tests.cluster.harness import ClusterHarness, cluster


@pytest.fixture
def make_cluster(tmp_path, kafka_bootstrap) -> Iterator[Callable[..., ClusterHarness]]:
    """``make_cluster(CODEGEND_X=...)``: a cluster of this test, not started yet."""
    with ExitStack() as stack:

        def make(**env: str) -> ClusterHarness:
            return stack.enter_context(cluster(tmp_path, kafka_bootstrap, **env))

        yield make
