"""Checkpoints without pickle: safetensors for tensors, JSON for everything else, written atomically.

A checkpoint is a folder ``RUN/checkpoints/step_<env steps>/`` holding

* ``model.safetensors``: the policy's ``state_dict``;
* ``optimizer.safetensors``: the optimizer's per-parameter state tensors (e.g. Adam's moments) and torch's RNG
  state, keyed ``state.<param index>.<name>`` and ``rng.torch``;
* ``state.json``: the config, env id, policy spec, env step, iteration, optimizer hyperparameters, the numpy
  seed generator's state, normalisation statistics (or null) and package versions.

The folder is written under a temporary name and renamed into place, and ``RUN/checkpoints/latest`` (a text file
with the folder name) is replaced atomically after it, so a crash mid-save leaves the previous checkpoint intact.
Nothing is ever unpickled: a file that is not safetensors is refused before it is read.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from rlopt.runs import CHECKPOINT_DIR, read_json, versions, write_json_atomic

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
LATEST_FILE = "latest"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or not in rlopt's format."""


def _check_safetensors(path: Path) -> None:
    """Refuse anything that is not a safetensors file (pickles, zip archives from torch.save) before reading it.

    A safetensors file starts with its JSON header's length (8 bytes, little-endian), then the header, which opens
    with ``{``. That layout is checked first: the length's low byte can itself be 0x80 (a header of 3,200 bytes),
    which alone would look like a pickle's opcode, so the pickle and zip signatures are only looked for in files
    that are not laid out as safetensors.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
        size = path.stat().st_size
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    if len(head) == 9 and head[8:9] == b"{":
        if 0 < int.from_bytes(head[:8], "little") <= size - 8:
            return
        raise CheckpointError(f"{path} is not a safetensors file (corrupt or cut short: its header runs past its end)")
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise CheckpointError(
            f"{path} is a pickle/torch.save file; rlopt refuses to load pickled objects (they can run code). "
            "Convert the weights to safetensors or point at an rlopt checkpoint folder."
        )
    raise CheckpointError(f"{path} is not a safetensors file (corrupt or cut short)")


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    step: int,
    policy: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
) -> Path:
    """Save a checkpoint for env step ``step`` and point ``latest`` at it. Returns its folder."""
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:012d}"
    final = root / name
    temporary = root / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()

    save_file(
        {key: value.detach().contiguous().cpu() for key, value in policy.state_dict().items()},
        str(temporary / MODEL_FILE),
    )
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    optimizer_meta: dict[str, Any] | None = None
    if optimizer is not None:
        optimizer_state = optimizer.state_dict()
        for index, parameter_state in optimizer_state["state"].items():
            for key, value in parameter_state.items():
                tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
                tensors[f"state.{index}.{key}"] = tensor.detach().contiguous().cpu()
        optimizer_meta = {"param_groups": optimizer_state["param_groups"]}
    save_file(tensors, str(temporary / OPTIMIZER_FILE))
    payload = {**state, "step": int(step), "optimizer": optimizer_meta, "versions": versions()}
    write_json_atomic(temporary / STATE_FILE, payload)

    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    write_json_atomic(root / f"{LATEST_FILE}.json", {"name": name})
    return final


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint folder from a run folder, a ``checkpoints/`` folder, a checkpoint folder or a file inside it."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".safetensors" and path.name != STATE_FILE:
            _check_safetensors(path)
        path = path.parent
    if (path / STATE_FILE).exists():
        return path
    for root in (path / CHECKPOINT_DIR, path):
        latest = root / f"{LATEST_FILE}.json"
        if latest.exists():
            try:
                name = read_json(latest)["name"]
            except (ValueError, KeyError, TypeError):
                name = None
            # a plain folder name: a latest.json that points elsewhere (../other_run/...) is not followed
            plain = isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name
            if not plain or not (root / name / STATE_FILE).is_file():
                raise CheckpointError(
                    f'{latest} does not name a checkpoint in {root} (expected {{"name": "step_..."}}); pass '
                    "one of its step_* folders instead"
                )
            return root / name
    raise CheckpointError(
        f"no rlopt checkpoint at {path}: expected a run folder, its checkpoints/ folder, or a step_* folder "
        f"containing {STATE_FILE} and {MODEL_FILE}"
    )


def checkpoint_step(run_dir: str | os.PathLike[str]) -> int | None:
    """The env step of the latest usable rlopt checkpoint in ``run_dir`` (the one a resume loads), else None."""
    try:
        folder = resolve_checkpoint(run_dir)
        step = int(read_json(folder / STATE_FILE)["step"])
    except (OSError, ValueError, KeyError, TypeError):  # CheckpointError is a ValueError
        return None
    return step if (folder / MODEL_FILE).is_file() else None


def check_state(state: Any, path: str | os.PathLike[str]) -> None:
    """Refuse a state.json without what every reader of a checkpoint relies on (an edited or foreign file).

    Raises:
        CheckpointError: naming the file and the first field that is missing or of the wrong type.
    """
    if not isinstance(state, dict):
        kind = type(state).__name__
        raise CheckpointError(f"{path} is not an rlopt checkpoint's state: it holds a {kind}, not an object")
    expected = {"env_id": str, "policy_spec": dict, "step": int}
    for key, kind in expected.items():
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            found = "nothing" if key not in state else repr(value)
            raise CheckpointError(
                f"{path} is not a usable rlopt checkpoint's state: {key} should be a {kind.__name__}, found {found}"
            )
    if not isinstance(state.get("config", {}), dict):
        raise CheckpointError(f"{path}: config should be an object, found {state['config']!r}")


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint. Returns ``(state, model_state_dict, optimizer_tensors)``; nothing is unpickled."""
    folder = resolve_checkpoint(path)
    try:
        state = read_json(folder / STATE_FILE)
    except (FileNotFoundError, ValueError) as error:
        raise CheckpointError(str(error)) from None
    check_state(state, folder / STATE_FILE)
    for name in (MODEL_FILE, OPTIMIZER_FILE):
        _check_safetensors(folder / name)
    try:
        model_state = load_file(str(folder / MODEL_FILE))
        optimizer_tensors = load_file(str(folder / OPTIMIZER_FILE))
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{folder} holds a corrupt safetensors file: {error}") from None
    return state, model_state, optimizer_tensors


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any], tensors: dict[str, Any]) -> None:
    """Load the optimizer state saved by :func:`save_checkpoint` into ``optimizer``."""
    meta = state.get("optimizer")
    if meta is None:
        return
    per_parameter: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if not key.startswith("state."):
            continue
        _, index, name = key.split(".", 2)
        per_parameter.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": per_parameter, "param_groups": meta["param_groups"]})


def restore_torch_rng(tensors: dict[str, Any]) -> None:
    """Restore torch's CPU RNG state saved with the checkpoint."""
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
