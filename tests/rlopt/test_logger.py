"""RunLogger: what it writes reaches the event file, however many scalars come at once."""

from __future__ import annotations

import math

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlopt.logger import EVENT_QUEUE_SIZE, RunLogger


def test_a_burst_of_scalars_longer_than_tensorboards_default_queue_is_written_whole(tmp_path) -> None:
    logger = RunLogger(tmp_path)
    assert logger.writer.max_queue == EVENT_QUEUE_SIZE > 10
    steps = 3
    for step in range(steps):
        # 40 tags an iteration, as GRPO logs; non-finite values and None are skipped
        logger.scalars({f"train/value_{index}": step * 100 + index for index in range(40)}, step)
        logger.scalars({"train/nan": math.nan, "train/none": None}, step)
    logger.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert sorted(tags) == sorted(f"train/value_{index}" for index in range(40))
    for index in (0, 17, 39):
        values = [(event.step, event.value) for event in events.Scalars(f"train/value_{index}")]
        assert values == [(step, step * 100 + index) for step in range(steps)]
