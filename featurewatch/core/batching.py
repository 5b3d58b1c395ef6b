"""Batches bounded by pixels as well as by count, so large images do not multiply memory.

A ``batch_size`` of 64 suits 32 px digits; at 224 px the same 64 images hold 49 times the
activations, and a pass with gradients keeps all of them for the backward: on a ResNet-18 stopped
after ``layer3``, 48 images at 224 px with gradients raise the peak resident set by about 1.4 GB.
The passes that only need results which do not depend on the batch (dataset-example maxima,
projections, receptive fields, SmoothGrad, occlusion) therefore take at most ``batch_size``
inputs *and* at most a fixed number of input positions per pass. On a CPU the smaller batches are
no slower (the same ResNet-18 pass over 256 pool images: 7.1 s at 64 per batch, 4.9 s at 4); on a
GPU, pass a larger ``pixels`` through the functions that take it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: Input positions (height x width, or length) per forward without gradients: eight 224 px images.
FORWARD_PIXELS = 8 * 224 * 224
#: Input positions per forward/backward pass: four 224 px images (their activations are kept).
BACKWARD_PIXELS = 4 * 224 * 224


def bounded_batch(batch_size: int, sample_shape: Sequence[int], pixels: int) -> int:
    """``batch_size``, lowered so that one batch holds at most ``pixels`` input positions.

    Args:
        batch_size: the most inputs per pass.
        sample_shape: one input's shape without the batch axis: ``(C, H, W)``, ``(C, L)`` or
            ``(F,)`` (a feature vector counts as one position).
        pixels: the most positions (``H * W``, ``L``) of all the batch's inputs together.

    Returns:
        At least 1, at most ``batch_size``.

    Example:
        >>> bounded_batch(64, (3, 224, 224), BACKWARD_PIXELS)
        4
        >>> bounded_batch(64, (1, 32, 32), BACKWARD_PIXELS)
        64
    """
    area = math.prod(int(s) for s in sample_shape[1:]) if len(sample_shape) > 1 else 1
    return max(1, min(int(batch_size), int(pixels) // max(1, area)))
