"""The shared argument checks: what they accept; messages that name the argument and the value."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from featurewatch.core.validation import (
    check_bool,
    check_channel_list,
    check_images,
    check_int,
    check_positive_float,
    is_int,
    out_of_range_message,
)


def test_check_int_refuses_bools_floats_and_small_values() -> None:
    check_int("steps", 3)
    check_int("seed", 0, 0)
    check_int("batch_size", None, allow_none=True)
    with pytest.raises(ValueError, match=r"^`steps` must be a positive int, got 0$"):
        check_int("steps", 0)
    with pytest.raises(ValueError, match=r"^`seed` must be an int >= 0, got -1$"):
        check_int("seed", -1, 0)
    with pytest.raises(ValueError, match=r"`k` must be a positive int, got True"):
        check_int("k", True)
    with pytest.raises(ValueError, match=r"`k` must be a positive int, got 2\.0"):
        check_int("k", 2.0)
    with pytest.raises(ValueError, match=r"`k` must be a positive int or None, got 'a'"):
        check_int("k", "a", allow_none=True)
    with pytest.raises(ValueError, match="got None"):
        check_int("k", None)


def test_check_bool_takes_real_bools_only() -> None:
    check_bool("at_end", True)
    check_bool("at_end", False)
    for bad in (0, 1, "yes", None):
        with pytest.raises(TypeError, match="`at_end` must be True or False"):
            check_bool("at_end", bad)


def test_check_positive_float() -> None:
    assert check_positive_float("lr", 1) == 1.0 and isinstance(check_positive_float("lr", 1), float)
    assert check_positive_float("tv", 0, allow_zero=True) == 0.0
    assert check_positive_float("time_budget", None, allow_none=True) is None
    assert check_positive_float("time_budget", math.inf) == math.inf
    with pytest.raises(ValueError, match=r"^`lr` must be a positive number, got 0$"):
        check_positive_float("lr", 0)
    with pytest.raises(ValueError, match=r"`tv` must be a non-negative number, got -1"):
        check_positive_float("tv", -1, allow_zero=True)
    for bad in (True, math.nan, "1", None):
        with pytest.raises(ValueError, match="`lr` must be a positive number"):
            check_positive_float("lr", bad)


def test_check_channel_list() -> None:
    assert check_channel_list("channels", 3) == [3]
    assert check_channel_list("channels", range(3)) == [0, 1, 2]
    assert check_channel_list("channels", (4, 1)) == [4, 1]
    with pytest.raises(TypeError, match="`channels` must be an int or a sequence of ints"):
        check_channel_list("channels", 1.5)
    with pytest.raises(TypeError, match="`channels` must be a sequence of ints, got int"):
        check_channel_list("channels", 3, allow_int=False)
    with pytest.raises(TypeError, match="got str"):
        check_channel_list("channels", "12")
    for bad in ([], [-1], [True], [0, 1.0]):
        with pytest.raises(ValueError, match="`channels` must be a non-empty list of non-negative"):
            check_channel_list("channels", bad)


def test_out_of_range_message_states_the_valid_range() -> None:
    assert out_of_range_message(8, 8, layer="features.2") == (
        "channel 8 out of range for layer 'features.2' with 8 channels (valid: 0..7)"
    )
    assert out_of_range_message(3, 2, layer="") == (
        "channel 3 out of range for the model output with 2 channels (valid: 0..1)"
    )
    assert out_of_range_message(12, 10, kind="target class") == (
        "target class 12 out of range; the model outputs 10 scores (valid: 0..9)"
    )
    assert out_of_range_message(10, 10) == (
        "class 10 out of range; the model outputs 10 scores (valid: 0..9)"
    )


def test_check_images_wants_a_non_empty_4d_tensor() -> None:
    x = torch.zeros(2, 1, 4, 4)
    assert check_images("x", x) is x
    with pytest.raises(TypeError, match=r"`pool` must be an \(N, C, H, W\) tensor, got list"):
        check_images("pool", [x])
    for bad in (torch.zeros(1, 4, 4), torch.zeros(0, 1, 4, 4)):
        with pytest.raises(ValueError, match=r"`x` must be a non-empty \(N, C, H, W\) batch"):
            check_images("x", bad)


def test_numpy_integers_are_ints_and_come_back_as_python_ints() -> None:
    """``np.argsort(...)[:8]`` or a pandas column is a natural way to pick channels (issue 11)."""
    picked = check_channel_list("channels", np.argsort(np.array([3.0, 1.0, 2.0])))
    assert picked == [1, 2, 0]
    assert all(type(c) is int for c in picked)
    check_int("steps", np.int32(4))
    assert is_int(np.int64(0)) and not is_int(np.bool_(True)) and not is_int(2.0)
    with pytest.raises(ValueError, match="non-negative ints"):
        check_channel_list("channels", np.array([0.0, 1.0]))  # floats are not indices
