"""Image parametrizations: ``nn.Module``\\ s whose ``forward()`` returns images in ``[0, 1]``.

What the optimizer changes is not the pixels themselves but a parametrization of them. The choice
matters more than any other setting (Olah et al., 2017; Mordvintsev et al., 2018):

* :class:`PixelImage` - raw pixels; high frequencies dominate quickly (adversarial noise).
* :class:`FourierImage` - coefficients of ``torch.fft.rfft2`` scaled by ``1/f`` (or by a spectrum
  profile fitted from the user's data, :mod:`featurewatch.core.fit_stats`), so every frequency
  gets a comparable learning rate and images come out natural.

Both take any number of image channels, optionally *decorrelate* them with a colour matrix (for RGB
Lucid's ImageNet matrix by default, or one fitted from data for any channel count) and map the
result to ``[0, 1]`` with a sigmoid. Every batch element is initialized from its own seed, so an
element's image does not depend on which other elements share its batch.

Example:
    >>> spec = ImageSpec(channels=3, size=(64, 64))
    >>> param = spec.build(seeds=[0, 1, 2, 3])
    >>> param().shape
    torch.Size([4, 3, 64, 64])
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from featurewatch.core.fit_stats import ImageStats, radial_frequencies

__all__ = [
    "IMAGENET_COLOR",
    "FourierImage",
    "ImageParam",
    "ImageSpec",
    "PixelImage",
    "color_matrix",
]

#: Square root of ImageNet's RGB colour correlation (Lucid), before normalization.
IMAGENET_COLOR = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])


def color_matrix(
    channels: int, decorrelate: bool | torch.Tensor, stats: ImageStats | None = None
) -> torch.Tensor | None:
    """The ``(C, C)`` matrix mapping decorrelated values to channel values, or ``None``.

    ``decorrelate`` may be a matrix; ``True`` picks the fitted matrix of ``stats`` when given, else
    ImageNet's for 3 channels and none otherwise; ``False`` gives ``None``.
    """
    if isinstance(decorrelate, torch.Tensor):
        m = decorrelate.float()
        if m.shape != (channels, channels):
            raise ValueError(
                f"colour matrix must be ({channels}, {channels}), got {tuple(m.shape)}"
            )
        return m
    if not decorrelate:
        return None
    if stats is not None:
        if stats.channels != channels:
            raise ValueError(
                f"fitted statistics are for {stats.channels} channels, the images have {channels}"
            )
        return stats.color.float()
    if channels == 3:
        m = IMAGENET_COLOR
        return m / m.norm(dim=0).max()
    return None


def _randn(seeds: Sequence[int], shape: Sequence[int], sd: float) -> torch.Tensor:
    out = []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        out.append(torch.randn(*shape, generator=g) * sd)
    return torch.stack(out)


class ImageParam(nn.Module, ABC):
    """Base class: ``forward() -> (N, C, H, W)`` in ``[0, 1]``; ``blur_(sigma)`` smooths in
    place."""

    def __init__(self, color: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer(
            "color", color if color is not None else torch.empty(0), persistent=False
        )

    @abstractmethod
    def raw(self) -> torch.Tensor:
        """Unconstrained ``(N, C, H, W)`` values, before the colour mix and the sigmoid."""

    def forward(self) -> torch.Tensor:
        t = self.raw()
        if self.color.numel():
            # a 1x1 convolution: the fastest channel mix on CPU and GPU (einsum lowers to bmm)
            t = F.conv2d(t, self.color[:, :, None, None].to(t.dtype))
        return torch.sigmoid(t)

    @abstractmethod
    def blur_(self, sigma: float) -> None:
        """Smooth the parameters in place with a Gaussian of std ``sigma`` pixels (no autograd)."""


class PixelImage(ImageParam):
    """Pixels as parameters (``(N, C, H, W)``, initialized ``N(0, sd)``), then colour + sigmoid."""

    def __init__(
        self,
        seeds: Sequence[int],
        channels: int,
        size: tuple[int, int],
        *,
        sd: float = 0.01,
        color: torch.Tensor | None = None,
    ) -> None:
        super().__init__(color)
        self.pixels = nn.Parameter(_randn(seeds, (channels, *size), sd))

    def raw(self) -> torch.Tensor:
        return self.pixels

    @torch.no_grad()
    def blur_(self, sigma: float) -> None:
        """Periodic Gaussian blur of the pixels (Yosinski et al., 2015)."""
        r = max(1, math.ceil(2 * sigma))
        k = torch.exp(
            -(torch.arange(-r, r + 1, dtype=self.pixels.dtype, device=self.pixels.device) ** 2)
            / (2 * sigma**2)
        )
        k = k / k.sum()
        n, c, h, w = self.pixels.shape
        x = self.pixels.reshape(n * c, 1, h, w)
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="circular"), k.reshape(1, 1, 1, -1))
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="circular"), k.reshape(1, 1, -1, 1))
        self.pixels.copy_(x.reshape(n, c, h, w))


class FourierImage(ImageParam):
    """Spectral parametrization: ``rfft2`` coefficients scaled by ``1/f^decay_power`` (Lucid).

    Args:
        seeds: one seed per batch element (initial coefficients ``N(0, sd)``).
        channels, size: image channels and ``(H, W)``.
        sd: initial standard deviation of the coefficients.
        decay_power: exponent of the ``1/f`` scaling.
        stats: fitted statistics; their spectrum profile replaces ``1/f`` (rescaled to the same
            root-mean-square, so learning rates carry over).
        color: colour matrix (see :func:`color_matrix`).
    """

    def __init__(
        self,
        seeds: Sequence[int],
        channels: int,
        size: tuple[int, int],
        *,
        sd: float = 0.01,
        decay_power: float = 1.0,
        stats: ImageStats | None = None,
        color: torch.Tensor | None = None,
    ) -> None:
        super().__init__(color)
        h, w = size
        self.size = (h, w)
        freqs = radial_frequencies(h, w)
        scale = 1.0 / freqs.clamp_min(1.0 / max(h, w)) ** decay_power
        if stats is not None:
            fitted = stats.spectrum_scale(h, w)
            fitted[0, 0] = fitted.flatten()[1:].max()  # DC: as the strongest fitted frequency
            scale = fitted * (scale.pow(2).mean().sqrt() / fitted.pow(2).mean().sqrt())
        # sqrt(h w) undoes irfft2's 1/(h w) up to sqrt; the 1/4 is Lucid's output scale, folded in
        self.register_buffer("scale", (scale * math.sqrt(h * w) / 4.0).float(), persistent=False)
        self.register_buffer("freqs", freqs.float(), persistent=False)
        self.spectrum = nn.Parameter(_randn(seeds, (channels, h, w // 2 + 1, 2), sd))

    def raw(self) -> torch.Tensor:
        coeffs = torch.view_as_complex(self.spectrum) * self.scale
        return torch.fft.irfft2(coeffs, s=self.size)

    @torch.no_grad()
    def blur_(self, sigma: float) -> None:
        """Periodic Gaussian blur, exactly: multiply the coefficients by
        ``exp(-2 pi^2 sigma^2 f^2)``."""
        gain = torch.exp(-2 * math.pi**2 * sigma**2 * self.freqs**2)
        self.spectrum.mul_(gain[..., None])


@dataclass
class ImageSpec:
    """How to build the parametrization of a batch of images (one seed per element).

    Attributes:
        channels: image channels (1 for grayscale, 3 for RGB, any other count).
        size: ``(H, W)`` of the rendered images.
        fft: spectral (:class:`FourierImage`) if true, else :class:`PixelImage`.
        decorrelate: colour decorrelation (``True``: fitted or ImageNet, see :func:`color_matrix`).
        stats: fitted :class:`~featurewatch.core.fit_stats.ImageStats` (colour and spectrum).
        fitted_spectrum: use the spectrum profile of ``stats`` instead of ``1/f`` (with ``stats``).
            For blurry data (e.g. upsampled 8x8 digits) the fitted profile is very steep and gives
            smooth blobs with lower activations; ``False`` keeps the fitted colours with ``1/f``.
        sd: initial standard deviation.
        decay_power: ``1/f`` exponent of the spectral parametrization (ignored with ``stats``).
    """

    channels: int
    size: tuple[int, int]
    fft: bool = True
    decorrelate: bool | torch.Tensor = True
    stats: ImageStats | None = None
    fitted_spectrum: bool = True
    sd: float = 0.01
    decay_power: float = 1.0

    def __post_init__(self) -> None:
        if (
            isinstance(self.channels, bool)
            or not isinstance(self.channels, int)
            or self.channels < 1
        ):
            raise ValueError(f"`channels` must be a positive int, got {self.channels!r}")
        size = (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)
        if len(size) != 2 or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 2 for s in size
        ):
            raise ValueError(f"`size` must be an int >= 2 or (H, W), got {self.size!r}")
        self.size = (int(size[0]), int(size[1]))

    def build(self, seeds: Sequence[int], device: torch.device | str = "cpu") -> ImageParam:
        color = color_matrix(self.channels, self.decorrelate, self.stats)
        if self.fft:
            spectrum = self.stats if self.fitted_spectrum else None
            p: ImageParam = FourierImage(
                seeds,
                self.channels,
                self.size,
                sd=self.sd,
                decay_power=self.decay_power,
                stats=spectrum,
                color=color,
            )
        else:
            p = PixelImage(seeds, self.channels, self.size, sd=self.sd, color=color)
        return p.to(device)
