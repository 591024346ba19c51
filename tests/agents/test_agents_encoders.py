"""Encoders chosen from observation spaces, and obs_to_tensor's dtypes and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents import obs_to_tensor
from agents.encoders import (
    DictEncoder,
    FlattenEncoder,
    GridEncoder,
    MultiOneHotEncoder,
    OneHotEncoder,
    TokenEncoder,
    box_kind,
    make_encoder,
)

MINIGRID_IMAGE = spaces.Box(0, 255, (7, 7, 3), np.uint8)


def _encoder(space: spaces.Space, embedding_dim: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return make_encoder(space, embedding_dim, (8, 8), "relu")


@pytest.mark.parametrize(
    ("space", "kind"),
    [
        (spaces.Box(-1.0, 1.0, (4,), np.float32), "vector"),
        (spaces.Box(0.0, 255.0, (7, 7, 3), np.float32), "vector"),  # float grid: read as numbers
        (MINIGRID_IMAGE, "grid"),
        (spaces.Box(0, 1000, (7, 7, 3), np.int64), "vector"),  # codes above 255: not a Minigrid-style grid
        (spaces.Box(0, 99, (32,), np.int64), "tokens"),
        (spaces.Box(-5, 5, (3,), np.int64), "vector"),  # negative integers are not token ids
        (spaces.Box(0, 3, (2, 2), np.int64), "vector"),
    ],
)
def test_box_kind(space: spaces.Box, kind: str) -> None:
    assert box_kind(space) == kind


def test_encoder_choice_and_widths() -> None:
    assert (
        isinstance(_encoder(spaces.Box(-1, 1, (2, 3))), FlattenEncoder)
        and _encoder(spaces.Box(-1, 1, (2, 3))).out_dim == 6
    )
    grid = _encoder(MINIGRID_IMAGE)
    assert isinstance(grid, GridEncoder) and grid.out_dim == 8 * 5 * 5  # two 2x2 convs: 7x7 -> 5x5
    tokens = _encoder(spaces.Box(0, 9, (5,), np.int32), embedding_dim=3)
    assert isinstance(tokens, TokenEncoder) and tokens.out_dim == 15 and tokens.vocab_size == 10
    assert isinstance(_encoder(spaces.Discrete(4)), OneHotEncoder)
    assert isinstance(_encoder(spaces.MultiDiscrete([2, 3])), MultiOneHotEncoder)
    assert _encoder(spaces.MultiBinary(3)).out_dim == 3
    mixed = _encoder(spaces.Dict({"a": spaces.Discrete(4), "b": spaces.Box(-1, 1, (2,))}))
    assert isinstance(mixed, DictEncoder) and mixed.out_dim == 6


def test_large_grid_is_pooled_to_bounded_size() -> None:
    encoder = _encoder(spaces.Box(0, 10, (20, 12, 3), np.uint8))
    assert encoder.out_dim == 8 * 8 * 8
    features = encoder(torch.randint(0, 11, (2, 20, 12, 3)))
    assert features.shape == (2, encoder.out_dim)


def test_too_small_grid_raises() -> None:
    with pytest.raises(ValueError, match="too small for 2 2x2 conv layers"):
        _encoder(spaces.Box(0, 10, (2, 5, 3), np.uint8))


def test_grid_channels_have_separate_code_tables() -> None:
    encoder = _encoder(spaces.Box(0, 10, (3, 3, 2), np.uint8))
    assert encoder.embedding.num_embeddings == 22  # 11 codes per channel
    same_code_other_channel = torch.zeros(2, 3, 3, 2, dtype=torch.long)
    same_code_other_channel[0, 1, 1, 0] = 5
    same_code_other_channel[1, 1, 1, 1] = 5
    features = encoder(same_code_other_channel)
    assert not torch.allclose(features[0], features[1])
    # uint8 input works as well as long (buffers may keep the env's dtype).
    torch.testing.assert_close(encoder(same_code_other_channel.to(torch.uint8)), features)


def test_token_padding_is_zero_and_positions_matter() -> None:
    encoder = _encoder(spaces.Box(0, 9, (4,), np.int64))
    all_pad = encoder(torch.zeros(1, 4, dtype=torch.long))
    assert torch.count_nonzero(all_pad) == 0
    swapped = encoder(torch.tensor([[3, 7, 0, 0], [7, 3, 0, 0]]))
    assert not torch.allclose(swapped[0], swapped[1])
    # A token's features are its embedding at its position.
    torch.testing.assert_close(swapped[0, :4], encoder.embedding.weight[3])


def test_one_hot_encoders_handle_start_offsets() -> None:
    one_hot = OneHotEncoder(3, start=-1)
    torch.testing.assert_close(one_hot(torch.tensor([-1, 1])), torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]))
    multi = _encoder(spaces.MultiDiscrete([2, 3], start=[1, 0]))
    expected = torch.tensor([[0.0, 1, 0, 0, 1], [1.0, 0, 1, 0, 0]])
    torch.testing.assert_close(multi(torch.tensor([[2, 2], [1, 0]])), expected)


# --- obs_to_tensor ------------------------------------------------------------------------------------------------


def test_obs_to_tensor_dtypes() -> None:
    box = obs_to_tensor(np.zeros((2, 4), dtype=np.float64), spaces.Box(-1, 1, (4,)))
    assert box.dtype == torch.float32
    grid = obs_to_tensor(np.ones((2, 7, 7, 3), dtype=np.uint8), MINIGRID_IMAGE)
    assert grid.dtype == torch.long and grid.shape == (2, 7, 7, 3)
    tokens = obs_to_tensor(np.ones((2, 5), dtype=np.int32), spaces.Box(0, 9, (5,), np.int32))
    assert tokens.dtype == torch.long
    discrete = obs_to_tensor(np.array([0, 3]), spaces.Discrete(4))
    assert discrete.dtype == torch.long and discrete.shape == (2,)
    binary = obs_to_tensor(np.array([[1, 0, 1]], dtype=np.int8), spaces.MultiBinary(3))
    assert binary.dtype == torch.float32
    unsigned = obs_to_tensor(np.array([[3, 1]], dtype=np.uint32), spaces.MultiDiscrete([4, 4]))
    assert unsigned.dtype == torch.long and unsigned.tolist() == [[3, 1]]
    dict_space = spaces.Dict({"image": MINIGRID_IMAGE, "direction": spaces.Discrete(4)})
    converted = obs_to_tensor({"image": np.zeros((3, 7, 7, 3), np.uint8), "direction": np.array([0, 1, 2])}, dict_space)
    assert set(converted) == {"image", "direction"} and converted["direction"].dtype == torch.long
    from_tensor = obs_to_tensor(torch.zeros(2, 4, dtype=torch.float64), spaces.Box(-1, 1, (4,)))
    assert from_tensor.dtype == torch.float32


@pytest.mark.parametrize(
    ("observation", "space", "error", "message"),
    [
        (np.zeros((2, 5)), spaces.Box(-1, 1, (4,)), ValueError, r"shape \(2, 5\); expected \(B, 4\)"),
        (np.zeros(4), spaces.Box(-1, 1, (4,)), ValueError, "expected"),
        (np.full((1, 7, 7, 3), 3, np.int64) * 100, MINIGRID_IMAGE, ValueError, "outside"),
        (np.array([4]), spaces.Discrete(4), ValueError, r"codes in \[4, 4\]"),
        (np.array([[0, 10]]), spaces.Box(0, 9, (2,), np.int64), ValueError, "accepted"),
        (np.zeros((1, 7, 7, 3)), spaces.Dict({"image": MINIGRID_IMAGE}), TypeError, "must be a dict"),
        ({"other": np.zeros(1)}, spaces.Dict({"image": MINIGRID_IMAGE}), KeyError, "image"),
        (np.zeros((1, 2)), spaces.Tuple((spaces.Discrete(2),)), TypeError, "does not support"),
    ],
)
def test_obs_to_tensor_errors(observation, space, error, message) -> None:
    with pytest.raises(error, match=message):
        obs_to_tensor(observation, space)


def test_obs_to_tensor_checks_tensor_codes_too() -> None:
    with pytest.raises(ValueError, match=r"codes in \[0, 12\]"):
        obs_to_tensor(torch.tensor([[0, 12]]), spaces.Box(0, 9, (2,), np.int64))
    assert (
        obs_to_tensor(torch.tensor([[0, 9]], dtype=torch.uint8), spaces.Box(0, 9, (2,), np.int64)).dtype == torch.long
    )


@pytest.mark.parametrize(
    ("batch", "space"),
    [
        (np.array([[0, 10]], np.uint8), spaces.Box(0, 9, (2,), np.uint8)),  # above a uniform bound (max path)
        (np.array([[-1, 3]], np.int8), spaces.Box(0, 9, (2,), np.int8)),  # below a uniform bound (min path)
        (np.array([[2, 2]], np.int64), spaces.MultiDiscrete([3, 2])),  # per-element bounds: 2 >= nvec[1]
        (np.array([[0, 2]], np.int64), spaces.MultiDiscrete([3, 3], start=[0, 3])),  # below a per-element start
        (np.array([-2], np.int64), spaces.Discrete(3, start=-1)),  # below a negative start
        (np.array([[0.0, 12.0]], np.float32), spaces.Box(0, 9, (2,), np.int64)),  # float codes, compared elementwise
    ],
)
@pytest.mark.parametrize("copies", [1, 20_000])  # small batches compare elementwise, large ones by min/max
def test_code_check_catches_every_side_and_layout(batch: np.ndarray, space: spaces.Space, copies: int) -> None:
    valid = np.broadcast_to(space.sample(), batch.shape[1:]).astype(batch.dtype)
    batch = np.concatenate([np.repeat(valid[None], copies - 1, axis=0), batch])  # the bad code comes last
    with pytest.raises(ValueError, match="outside"):
        obs_to_tensor(batch, space)
    # the collector's path for the env's own observations skips only this check; the conversion is the same
    assert obs_to_tensor(batch, space, check_codes=False).shape == batch.shape
    obs_to_tensor(batch[:-1], space)  # the valid rows alone pass


def test_unchecked_conversion_equals_checked_and_still_checks_shapes() -> None:
    dict_space = spaces.Dict({"image": MINIGRID_IMAGE, "direction": spaces.Discrete(4)})
    batch = {
        "image": np.random.default_rng(0).integers(0, 11, (5, 7, 7, 3), dtype=np.uint8),
        "direction": np.arange(5) % 4,
    }
    checked, unchecked = obs_to_tensor(batch, dict_space), obs_to_tensor(batch, dict_space, check_codes=False)
    for key in batch:
        assert unchecked[key].dtype == checked[key].dtype and torch.equal(unchecked[key], checked[key])
    with pytest.raises(ValueError, match="expected"):
        obs_to_tensor({"image": np.zeros((5, 7, 7), np.uint8), "direction": np.zeros(5)}, dict_space, check_codes=False)
