"""Fixtures for the agents tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_torch_thread() -> Iterator[None]:
    """Run each agents test on one intra-op thread (restored afterwards).

    The networks here are tiny, so a second thread buys nothing, and on the shared 2-core test machine the
    spinning worker threads made these tests 3-5x slower under load.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
