"""The unit tier's fixtures: a real store in tmp_path (it is fast) and an output writer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from daemon.outputs import OutputWriter
from daemon.store import Store


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    opened = Store(tmp_path / "s.db")
    yield opened
    opened.close()


@pytest.fixture
def outputs(tmp_path) -> Iterator[OutputWriter]:
    writer = OutputWriter(tmp_path / "out")
    yield writer
    writer.close()
