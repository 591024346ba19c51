from __future__ import annotations

import torch


def pytest_configure(config) -> None:
    # Two cores: one torch thread per process keeps tests from fighting each other and makes timings stable.
    torch.set_num_threads(1)
