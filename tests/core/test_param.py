"""Parametrizations and fitted image statistics."""

from __future__ import annotations

import pytest
import torch

from featurewatch.core.fit_stats import fit_image_stats
from featurewatch.core.param import FourierImage, ImageSpec, PixelImage, color_matrix
from featurewatch.core.render import total_variation
from tests._models import digits_tensors


@pytest.mark.parametrize("fft", [True, False])
@pytest.mark.parametrize("channels", [1, 3, 5])
def test_images_in_unit_range_any_channel_count(fft: bool, channels: int) -> None:
    p = ImageSpec(channels=channels, size=(12, 10), fft=fft, sd=1.0).build([0, 1])
    x = p()
    assert x.shape == (2, channels, 12, 10)
    assert x.min() >= 0 and x.max() <= 1
    assert x.std() > 0.01  # sd=1 gives visible noise


def test_element_depends_only_on_its_seed() -> None:
    spec = ImageSpec(channels=3, size=16)
    a = spec.build([5, 6, 7])()
    b = spec.build([6])()
    assert torch.equal(a[1:2], b)
    assert not torch.equal(a[0], a[1])


def test_spectral_parametrization_weights_low_frequencies() -> None:
    p = FourierImage(list(range(8)), 1, (32, 32), sd=1.0)
    raw = p.raw().detach()
    amp = torch.fft.rfft2(raw).abs().mean((0, 1))
    assert amp[1:4, 1:4].mean() > 4 * amp[12:17, 12:17].mean()


def test_blur_smooths_both_parametrizations() -> None:
    for p in (PixelImage([0], 1, (32, 32), sd=1.0), FourierImage([0], 1, (32, 32), sd=1.0)):
        before = total_variation(p()).item()
        p.blur_(1.0)
        assert total_variation(p()).item() < 0.8 * before


def test_fitted_stats_give_the_exact_input_range_and_a_decreasing_spectrum() -> None:
    x, _ = digits_tensors(n=128, size=16)  # normalized as (pixel - 0.3) / 0.4
    stats = fit_image_stats(x)
    mean, std = stats.normalize
    # (pixel - mean) / std maps [0, 1] onto exactly the observed input range
    lo = (torch.tensor(0.0) - mean[0]) / std[0]
    hi = (torch.tensor(1.0) - mean[0]) / std[0]
    assert torch.allclose(torch.stack([lo, hi]), torch.stack([x.min(), x.max()]), atol=1e-5)
    assert (
        stats.amplitude[0] > 3 * stats.amplitude[-1]
    )  # natural images: amplitude falls with frequency
    # a FourierImage built on the fitted profile works at another size
    fitted = ImageSpec(channels=1, size=24, stats=stats).build([0])
    assert fitted().shape == (1, 1, 24, 24) and torch.isfinite(fitted()).all()
    plain = FourierImage([0], 1, (24, 24))
    assert not torch.allclose(fitted.scale, plain.scale)
    # fitted colours with a 1/f spectrum
    assert torch.equal(
        ImageSpec(channels=1, size=24, stats=stats, fitted_spectrum=False).build([0]).scale,
        plain.scale,
    )
    assert torch.equal(stats.color, torch.ones(1, 1))


def test_fitted_colour_matrix_decorrelates_correlated_channels() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.rand(64, 1, 8, 8, generator=g)
    x = torch.cat(
        [
            base,
            0.8 * base + 0.2 * torch.rand(64, 1, 8, 8, generator=g),
            torch.rand(64, 1, 8, 8, generator=g),
        ],
        1,
    )
    stats = fit_image_stats(x)
    m = stats.color
    assert m.shape == (3, 3)
    # m m^T is proportional to the covariance of the pixels
    flat = x.transpose(0, 1).reshape(3, -1)
    flat = (flat - flat.amin(1, keepdim=True)) / (
        flat.amax(1, keepdim=True) - flat.amin(1, keepdim=True)
    )
    cov = torch.cov(flat)  # of the pixels as fitted: each channel's range mapped to [0, 1]
    ratio = (m @ m.T) / cov
    assert torch.allclose(ratio, ratio.mean().expand(3, 3), rtol=1e-3)
    assert color_matrix(3, True, stats) is stats.color
    assert color_matrix(1, True) is None
    with pytest.raises(ValueError, match="3 channels"):
        color_matrix(1, True, stats)
