"""Run folders: naming, the JSON files every algorithm writes, and the facts a summary reports.

A run folder is ``LOGDIR/<env>__<algo>__<seed>__<time>/`` and holds the TensorBoard event files, ``config.json``
(written at the start), ``summary.json`` (written at the end; its presence marks a finished run) and
``checkpoints/``. Every algorithm (GRPO, rlopt's PPO, stable-baselines3's PPO) uses this layout, so one
``tensorboard --logdir`` and one report reader serve them all.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


def env_slug(env_id: str) -> str:
    """A file-name-safe form of a Gymnasium id: ``rlopt/GridGame-Empty-5x5-v0`` -> ``rlopt_GridGame-Empty-5x5-v0``."""
    return env_id.replace("/", "_").replace(":", "_")


def run_name(env_id: str, algo: str, seed: int, stamp: str | None = None) -> str:
    """``<env>__<algo>__<seed>__<time>``; ``stamp`` defaults to the current local time."""
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    return f"{env_slug(env_id)}__{algo}__{seed}__{stamp}"


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=_json_default)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, with an error that names the file when it is missing or corrupt."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the file is corrupt or was cut short") from None


def create_run_folder(logdir: str | os.PathLike[str], name: str, numbered: bool) -> Path:
    """Make the folder of a new run, ``logdir/name``, and return it; nothing that exists is written into.

    A folder that exists and is not empty holds another run (its config, checkpoints and curves would be mixed with
    this one's, and a later ``--resume`` or ``--init`` would read the wrong run), so it is refused, unless
    ``numbered`` (a default, time-stamped name: two runs started in the same second with the same env, algo and
    seed), where ``name-2``, ``name-3``, ... is used instead. ``mkdir`` without ``exist_ok`` claims a name atomically,
    so runs started together in several processes cannot share one.

    Raises:
        ConfigError: ``logdir/name`` holds another run (or ``logdir`` is not a folder); the message says what to do.
    """
    from rlopt.config import ConfigError

    root = Path(logdir)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"the log folder {root} is a file; pass a folder as the logdir")
    for attempt in range(1, 1000):
        path = root / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            if path.is_dir() and not any(path.iterdir()):
                return path  # an empty folder made for the run beforehand
            if not numbered:
                from rlopt.checkpoint import checkpoint_step

                if _run_algo(path) in ("grpo", "ppo") and checkpoint_step(path) is not None:
                    advice = f"continue it with --resume {path} (api.resume), or choose another --run-name"
                else:  # SB3, SFT and distillation runs do not resume, nor does a run without a checkpoint
                    advice = "choose another --run-name"
                raise ConfigError(f"{path} already holds a run; {advice} (or delete the folder)") from None
    raise ConfigError(f"{root} holds runs {name} to {name}-999; choose another --run-name")


def _run_algo(run_dir: Path) -> str | None:
    """The ``algo`` recorded in a run folder's config.json, or None when it cannot be read."""
    try:
        value = read_json(run_dir / CONFIG_FILE).get("algo")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def remove_if_only_config(run_dir: str | os.PathLike[str]) -> bool:
    """Remove ``run_dir`` when it holds nothing but its config.json: a run that failed before writing anything else
    (a bad ``--init``, an env that cannot be built) leaves no empty run behind. Returns whether it was removed."""
    run_dir = Path(run_dir)
    if run_dir.is_dir() and [path.name for path in run_dir.iterdir()] == [CONFIG_FILE]:
        shutil.rmtree(run_dir)
        return True
    return False


def is_finished(run_dir: str | os.PathLike[str]) -> bool:
    """A run is finished when its ``summary.json`` exists and says so."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.exists():
        return False
    try:
        return bool(read_json(path).get("finished", False))
    except ValueError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def versions() -> dict[str, str]:
    """Versions of the packages that decide a run's numbers, recorded in config and checkpoints."""
    import gymnasium
    import numpy
    import torch

    from rlopt import __version__

    return {
        "rlopt": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": numpy.__version__,
    }


def machine_description() -> str:
    """One line naming the machine: processor, core count, platform."""
    processor = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    processor = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{processor}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"
