"""Observation encoders chosen from a Gymnasium observation space, and numpy -> torch conversion for them.

Every encoder maps a batch of observations to flat features ``(B, F)`` and exposes ``out_dim = F``; the trunk
(MLP or Mixture-of-Experts) comes after. Which encoder a space gets:

=========================================================  ============================================
space                                                      encoder
=========================================================  ============================================
``Box`` of floats (any shape), or any other ``Box``         flatten to ``(B, prod(shape))`` floats
``Box`` 3-D integer, ``0 <= low``, ``high <= 255``           :class:`GridEncoder` (Minigrid-style codes)
``Box`` 1-D integer, ``0 <= low``                           :class:`TokenEncoder` (token ids, PAD = 0)
``Discrete``                                               one-hot
``MultiDiscrete``                                          one-hot per component, concatenated
``MultiBinary``                                            flatten to floats
``Dict``                                                   each key encoded, features concatenated
=========================================================  ============================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor, nn

from agents.layers import activation_class

__all__ = [
    "DictEncoder",
    "FlattenEncoder",
    "GridEncoder",
    "MultiOneHotEncoder",
    "OneHotEncoder",
    "TokenEncoder",
    "box_kind",
    "make_encoder",
    "obs_to_tensor",
]

# A token Box whose vocabulary exceeds this is almost certainly not a token sequence; refuse to build the table.
MAX_VOCAB = 1_000_000
# Grids larger than this (after the convolutions) are average-pooled down to it, bounding the feature size.
MAX_GRID_CELLS = 8


def box_kind(space: spaces.Box) -> str:
    """How a ``Box`` is encoded: ``"grid"``, ``"tokens"`` or ``"vector"`` (see the module table)."""
    if np.issubdtype(space.dtype, np.integer) and space.low.min() >= 0:
        if len(space.shape) == 3 and space.high.max() <= 255:
            return "grid"
        if len(space.shape) == 1 and space.high.max() < MAX_VOCAB:
            return "tokens"
    return "vector"


class FlattenEncoder(nn.Module):
    """Flatten a ``(B, *shape)`` observation to ``(B, prod(shape))`` float features (no parameters)."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.out_dim = int(np.prod(shape, dtype=np.int64))

    def forward(self, observation: Tensor) -> Tensor:
        """``(B, *shape)`` -> ``(B, F)`` float."""
        return observation.flatten(1).float()


class OneHotEncoder(nn.Module):
    """One-hot of a ``Discrete(n, start)`` observation: ``(B,)`` -> ``(B, n)``."""

    def __init__(self, n: int, start: int = 0) -> None:
        super().__init__()
        self.n, self.start, self.out_dim = n, start, n

    def forward(self, observation: Tensor) -> Tensor:
        """``(B,)`` integer codes in ``[start, start + n)`` -> ``(B, n)`` float."""
        index = observation.long().reshape(-1)
        return F.one_hot(index - self.start if self.start else index, self.n).float()


class MultiOneHotEncoder(nn.Module):
    """Concatenated one-hots of a ``MultiDiscrete(nvec, start)`` observation: ``(B, *shape)`` -> ``(B, sum(nvec))``."""

    def __init__(self, nvec: np.ndarray, start: np.ndarray) -> None:
        super().__init__()
        nvec_flat = np.asarray(nvec, dtype=np.int64).reshape(-1)
        offsets = np.concatenate([[0], np.cumsum(nvec_flat)[:-1]])
        # Shifting component i by the sizes of the components before it turns K one-hots into one lookup.
        self.register_buffer("shift", torch.as_tensor(offsets - np.asarray(start).reshape(-1)), persistent=False)
        self.out_dim = int(nvec_flat.sum())

    def forward(self, observation: Tensor) -> Tensor:
        """``(B, *shape)`` codes -> ``(B, sum(nvec))`` float."""
        index = observation.long().flatten(1) + self.shift
        return F.one_hot(index, self.out_dim).sum(dim=1).float()


class GridEncoder(nn.Module):
    """Small embedding + conv net for Minigrid-style grids of integer codes ``(B, H, W, C)``.

    Each channel has its own code table; a cell's embedding is the sum of its channels' code embeddings (the
    "bag of words" image embedding of BabyAI, Hui et al. 2020), so object, colour and state each get a learned
    vector instead of being read as magnitudes. Then 2x2 convolutions without padding (as in the rl-starter-files
    Minigrid model; 3x3 with padding cost 3x the time for no gain on a 7x7 view) with ``conv_channels``, an
    activation after each, an average pool to at most 8x8 for large grids, and flatten. A 7x7 view gives
    ``conv_channels[-1] * 5 * 5`` features.

    Args:
        space: the 3-D integer ``Box`` (channels last).
        embedding_dim: width of the code embeddings (the first conv's input channels).
        conv_channels: output channels of each conv layer.
        activation: activation name.

    Raises:
        ValueError: if the grid is too small for the convolutions (each removes one row and one column).
    """

    def __init__(self, space: spaces.Box, embedding_dim: int, conv_channels: Sequence[int], activation: str) -> None:
        super().__init__()
        height, width, channels = space.shape
        if min(height, width) <= len(conv_channels):
            raise ValueError(
                f"grid observation {space} is too small for {len(conv_channels)} 2x2 conv layers (conv_channels="
                f"{tuple(conv_channels)}); use at most {min(height, width) - 1} conv layers"
            )
        codes_per_channel = space.high.reshape(-1, channels).max(axis=0).astype(np.int64) + 1
        offsets = np.concatenate([[0], np.cumsum(codes_per_channel)[:-1]])
        self.register_buffer("offsets", torch.as_tensor(offsets), persistent=False)
        self.channels = channels
        self.embedding = nn.Embedding(int(codes_per_channel.sum()), embedding_dim)
        layers: list[nn.Module] = []
        in_channels = embedding_dim
        for out_channels in conv_channels:
            layers += [nn.Conv2d(in_channels, out_channels, kernel_size=2), activation_class(activation)()]
            in_channels = out_channels
        height, width = height - len(conv_channels), width - len(conv_channels)
        pooled = (min(height, MAX_GRID_CELLS), min(width, MAX_GRID_CELLS))
        if pooled != (height, width):
            layers.append(nn.AdaptiveAvgPool2d(pooled))
        self.conv = nn.Sequential(*layers)
        self.out_dim = in_channels * pooled[0] * pooled[1]

    def forward(self, observation: Tensor) -> Tensor:
        """``(B, H, W, C)`` integer codes (any dtype) -> ``(B, F)`` float."""
        batch, height, width, _ = observation.shape
        codes = (observation.long() + self.offsets).reshape(-1, self.channels)
        # embedding_bag sums the C code embeddings of each cell in one kernel (about 3x faster than lookup + sum).
        cells = F.embedding_bag(codes, self.embedding.weight, mode="sum").reshape(batch, height, width, -1)
        return self.conv(cells.permute(0, 3, 1, 2)).flatten(1)


class TokenEncoder(nn.Module):
    """Token sequences ``(B, L)`` -> embedding of every position, flattened to ``(B, L * embedding_dim)``.

    Token 0 is PAD: its embedding is fixed at zero (``padding_idx``), so padded positions contribute nothing.
    Flattening keeps each position's own weights in the first trunk layer, so the features are position-aware
    without a separate position embedding.
    """

    def __init__(self, space: spaces.Box, embedding_dim: int) -> None:
        super().__init__()
        (length,) = space.shape
        self.vocab_size = int(space.high.max()) + 1
        self.embedding = nn.Embedding(self.vocab_size, embedding_dim, padding_idx=0)
        self.out_dim = length * embedding_dim

    def forward(self, observation: Tensor) -> Tensor:
        """``(B, L)`` token ids (any integer or float dtype) -> ``(B, L * D)`` float."""
        return self.embedding(observation.long()).flatten(1)


class DictEncoder(nn.Module):
    """Encode each key of a ``Dict`` observation with its own encoder and concatenate the features."""

    def __init__(self, encoders: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.out_dim = sum(encoder.out_dim for encoder in self.encoders.values())

    def forward(self, observation: Mapping[str, Tensor]) -> Tensor:
        """Dict of ``(B, ...)`` tensors -> ``(B, sum of F)``, in the space's key order."""
        missing = set(self.encoders) - set(observation)
        if missing:
            raise KeyError(f"observation dict lacks keys {sorted(missing)}; expected keys {list(self.encoders)}")
        return torch.cat([encoder(observation[key]) for key, encoder in self.encoders.items()], dim=-1)


def make_encoder(
    space: spaces.Space,
    embedding_dim: int,
    conv_channels: Sequence[int],
    activation: str,
    _path: str = "observation",
    flat: bool = False,
) -> nn.Module:
    """Build the encoder for ``space`` (see the module table). ``flat`` flattens every Box as numbers, as
    stable-baselines3's MlpPolicy / MultiInputPolicy do (no grid convolutions, no token embeddings).

    Raises:
        TypeError: for a space with no encoder (Text, Tuple, Graph, Sequence, ...), naming the space and its path.
    """
    if isinstance(space, spaces.Box):
        kind = "vector" if flat else box_kind(space)
        if kind == "grid":
            return GridEncoder(space, embedding_dim, conv_channels, activation)
        if kind == "tokens":
            return TokenEncoder(space, embedding_dim)
        return FlattenEncoder(space.shape)
    if isinstance(space, spaces.Discrete):
        return OneHotEncoder(int(space.n), int(space.start))
    if isinstance(space, spaces.MultiDiscrete):
        return MultiOneHotEncoder(space.nvec, space.start)
    if isinstance(space, spaces.MultiBinary):
        return FlattenEncoder(space.shape)
    if isinstance(space, spaces.Dict):
        return DictEncoder(
            {
                key: make_encoder(subspace, embedding_dim, conv_channels, activation, f"{_path}[{key!r}]", flat)
                for key, subspace in space.spaces.items()
            }
        )
    hint = ""
    if isinstance(space, spaces.Text):
        hint = " (for Minigrid's 'mission' text, wrap the env with minigrid.wrappers.ImgObsWrapper)"
    raise TypeError(
        f"no encoder for {_path} space {space}{hint}; supported: Box, Discrete, MultiDiscrete, MultiBinary "
        "and Dict of those"
    )


# --- numpy -> torch -----------------------------------------------------------------------------------------------


def _long_codes(space: spaces.Space) -> bool:
    """Whether observations of ``space`` are integer codes fed to embeddings / one-hots (else floats)."""
    if isinstance(space, spaces.Box):
        return box_kind(space) != "vector"
    return isinstance(space, (spaces.Discrete, spaces.MultiDiscrete))


def _code_bounds(space: spaces.Space) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest valid code of a code space (elementwise arrays, broadcastable to one observation)."""
    if isinstance(space, spaces.Discrete):
        return np.asarray(space.start), np.asarray(space.start + space.n - 1)
    if isinstance(space, spaces.MultiDiscrete):
        return np.asarray(space.start), np.asarray(space.start + space.nvec - 1)
    return np.asarray(space.low), np.asarray(space.high)


# Integer batches with at least this many codes are range-checked by min/max (see _codes_out_of_range).
_MIN_MAX_CHECK_SIZE = 10_000

# dtypes torch.from_numpy takes as they are; other integer arrays go through int64, anything else through float32.
_TORCH_NATIVE = {
    np.dtype(kind) for kind in (np.float16, np.float32, np.float64, np.uint8, np.int8, np.int16, np.int32, np.int64)
}


def obs_to_tensor(
    observation: np.ndarray | Tensor | Mapping[str, Any],
    observation_space: spaces.Space,
    device: torch.device | str = "cpu",
    _path: str = "observation",
    *,
    check_codes: bool = True,
) -> Tensor | dict[str, Tensor]:
    """Convert a batch of observations ``(B, *space.shape)`` to the tensors a policy's encoder expects.

    Integer codes (grids, tokens, ``Discrete``, ``MultiDiscrete``) become ``long`` after the transfer (so a uint8
    grid crosses to the device as bytes); everything else becomes ``float32``. Codes are range-checked against
    the space, so a bad code is reported here with its value instead of failing inside an embedding lookup.

    Args:
        observation: a batch as numpy arrays (torch tensors are accepted too); a dict with the same keys for a
            ``Dict`` space.
        observation_space: the single-environment observation space.
        device: where the tensors go.
        check_codes: range-check integer codes against the space. The rollout collector passes False for the
            observations the env itself just returned (a vector env's observations are in its space by contract,
            and the check was a measurable share of each env step); anything a user hands in (``predict``,
            stored or hand-made batches) keeps the default, True. Shapes and keys are checked either way.

    Returns:
        A tensor ``(B, *shape)``, or a dict of them for a ``Dict`` space.

    Raises:
        ValueError: wrong shape, or codes outside the space.
        TypeError: a ``Dict`` space given a non-dict, or an unsupported space.
    """
    if isinstance(observation_space, spaces.Dict):
        if not isinstance(observation, Mapping):
            raise TypeError(
                f"{_path} must be a dict with keys {list(observation_space.spaces)} for {observation_space}"
            )
        missing = set(observation_space.spaces) - set(observation)
        if missing:
            raise KeyError(f"{_path} lacks keys {sorted(missing)} of {observation_space}")
        return {
            key: obs_to_tensor(observation[key], subspace, device, f"{_path}[{key!r}]", check_codes=check_codes)
            for key, subspace in observation_space.spaces.items()
        }
    if not isinstance(observation_space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        raise TypeError(f"obs_to_tensor does not support {_path} space {observation_space}")
    expected = tuple(observation_space.shape)
    shape = tuple(observation.shape) if isinstance(observation, Tensor) else np.shape(observation)
    if len(shape) != len(expected) + 1 or tuple(shape[1:]) != expected:
        raise ValueError(
            f"{_path} batch has shape {tuple(shape)}; expected (B, {', '.join(map(str, expected))}) for "
            f"{observation_space}"
        )
    long_codes = _long_codes(observation_space)
    if isinstance(observation, Tensor):
        source: np.ndarray | Tensor = observation
        tensor = observation.to(device)
    else:
        source = np.asarray(observation)
        array = source if source.dtype in _TORCH_NATIVE else source.astype(np.int64 if long_codes else np.float32)
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    if not long_codes:
        return tensor.float()
    if check_codes:
        # Checked on the source (host memory for numpy input), so a numpy batch costs no device synchronisation.
        low, high = _code_bounds(observation_space)
        if _codes_out_of_range(source, low, high):
            raise ValueError(
                f"{_path} has codes in [{int(source.min())}, {int(source.max())}] outside {observation_space} "
                f"(accepted [{int(low.min())}, {int(high.max())}])"
            )
    return tensor.long()


def _codes_out_of_range(source: np.ndarray | Tensor, low: np.ndarray, high: np.ndarray) -> bool:
    """Whether any code of the batch ``source`` ``(B, *shape)`` lies outside ``[low, high]`` (elementwise bounds).

    With one bound for every element (the usual case: a grid's ``0..10``, a vocabulary's ``0..V-1``) a large integer
    batch (an update's minibatch of thousands of grids) needs only its min and max, several times cheaper than
    elementwise comparisons; a side the dtype cannot cross (``low = 0`` for unsigned codes) is not checked at all.
    Small batches (``predict``), float or tensor batches and per-element bounds are compared elementwise, which
    costs less there than the reductions that pick the fast way.
    """
    if isinstance(source, Tensor):
        if source.numel() == 0:
            return False
        low_t, high_t = torch.as_tensor(low, device=source.device), torch.as_tensor(high, device=source.device)
        return bool((source < low_t).any()) or bool((source > high_t).any())
    if source.size < _MIN_MAX_CHECK_SIZE or not np.issubdtype(source.dtype, np.integer):
        return bool((source < low).any()) or bool((source > high).any())
    smallest, largest = low.min(), high.max()
    if smallest != low.max() or largest != high.min():
        return bool((source < low).any()) or bool((source > high).any())
    info = np.iinfo(source.dtype)
    below = info.min < smallest and source.min() < smallest
    return bool(below) or bool(info.max > largest and source.max() > largest)
