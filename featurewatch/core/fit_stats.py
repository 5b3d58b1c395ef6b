"""Image statistics fitted from the user's own data, for natural-looking visualizations.

Feature-visualization libraries hard-code ImageNet statistics: the RGB colour-correlation matrix
and a ``1/f`` amplitude spectrum (Olah et al., 2017). Grayscale digits, CIFAR, spectrograms or
multispectral images have other statistics; with the wrong ones the optimizer wastes its steps on
colours and frequencies the network never saw. :func:`fit_image_stats` estimates, from a few
training batches:

* the **pixel range** of every channel, giving the ``normalize=(mean, std)`` that maps a ``[0, 1]``
  image to the model's input range (exactly, for data normalized with any per-channel affine map);
* the **colour decorrelation** matrix: the square root of the channel covariance (``U sqrt(S)``),
  scaled to unit maximum column norm as in Lucid; any channel count;
* the **spectrum profile**: mean Fourier amplitude as a function of radial frequency (cycles per
  pixel), so a spectral parametrization of any size can use the data's ``1/f^a`` slope instead of
  ``1/f``.

Example:
    >>> stats = fit_image_stats(x_train[:256])
    >>> images = visualize_channels(model, "features.3", range(8), size=32, steps=64,
    ...                             normalize=stats.normalize, stats=stats)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["ImageStats", "fit_image_stats", "radial_frequencies"]


def radial_frequencies(h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(h, w // 2 + 1)`` radial frequency (cycles/pixel) of each ``torch.fft.rfft2``
    coefficient."""
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.rfftfreq(w, device=device)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


@dataclass
class ImageStats:
    """Statistics of a set of images, in ``[0, 1]`` pixel space.

    Attributes:
        low, high: ``(C,)`` per-channel minimum and maximum of the *model inputs* seen.
        color: ``(C, C)`` decorrelation matrix (``U sqrt(S)`` of the pixel covariance, max column
            norm 1); maps decorrelated values to correlated channel values.
        freqs: ``(B,)`` radial frequency bin centres (cycles/pixel, ``0 .. 0.5*sqrt(2)``).
        amplitude: ``(B,)`` mean amplitude per bin (relative; the DC bin is excluded from fits).
    """

    low: torch.Tensor
    high: torch.Tensor
    color: torch.Tensor
    freqs: torch.Tensor
    amplitude: torch.Tensor

    @property
    def channels(self) -> int:
        return int(self.low.numel())

    @property
    def normalize(self) -> tuple[list[float], list[float]]:
        """``(mean, std)`` such that ``(p - mean) / std`` maps pixel ``p`` in ``[0, 1]`` to
        ``[low, high]``, the range of the inputs seen."""
        span = (self.high - self.low).clamp_min(1e-6)
        return (-self.low / span).tolist(), (1.0 / span).tolist()

    def spectrum_scale(self, h: int, w: int) -> torch.Tensor:
        """``(h, w // 2 + 1)`` amplitude profile for an ``h x w`` image, interpolated from the
        fit."""
        f = radial_frequencies(h, w).clamp_min(1.0 / max(h, w))
        # piecewise-linear interpolation in log-log space
        lf, lfx = f.log(), self.freqs.clamp_min(1e-6).log()
        la = self.amplitude.clamp_min(1e-12).log()
        pos = torch.searchsorted(lfx, lf.flatten()).clamp(1, len(lfx) - 1)
        x0, x1 = lfx[pos - 1], lfx[pos]
        y0, y1 = la[pos - 1], la[pos]
        t = (lf.flatten() - x0) / (x1 - x0).clamp_min(1e-12)
        out = (y0 + t * (y1 - y0)).exp().reshape(f.shape)
        return out


def _batches(data: torch.Tensor | Iterable[object], max_images: int) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        x = data
    else:
        parts, n = [], 0
        for batch in data:
            t = (
                batch
                if isinstance(batch, torch.Tensor)
                else batch[0]
                if isinstance(batch, (tuple, list))
                else None
            )
            if not isinstance(t, torch.Tensor):
                raise TypeError(
                    "expected batches of image tensors or (images, ...) tuples, "
                    f"got {type(batch).__name__}"
                )
            parts.append(t.detach())
            n += t.shape[0]
            if n >= max_images:
                break
        if not parts:
            raise ValueError("no batches to fit image statistics from")
        x = torch.cat(parts)
    if x.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) images, got shape {tuple(x.shape)}")
    return x[:max_images].detach().float().cpu()


def fit_image_stats(
    data: torch.Tensor | Iterable[object],
    *,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    max_images: int = 512,
    bins: int = 24,
) -> ImageStats:
    """Fit :class:`ImageStats` from model inputs.

    Args:
        data: ``(N, C, H, W)`` model inputs, or an iterable of such batches / ``(images, ...)``
            tuples (e.g. a DataLoader; iteration stops after ``max_images``).
        normalize: the ``(mean, std)`` the inputs were normalized with; when given, pixels are
            recovered as ``x * std + mean`` before fitting colour and spectrum. When ``None``,
            each channel's observed range is mapped to ``[0, 1]``.
        max_images: use at most this many images.
        bins: number of radial frequency bins of the spectrum profile.

    Returns:
        The fitted statistics (CPU tensors).
    """
    x = _batches(data, max_images)
    _n, c, h, w = x.shape
    low = x.transpose(0, 1).reshape(c, -1).amin(1)
    high = x.transpose(0, 1).reshape(c, -1).amax(1)
    if normalize is not None:
        mean = torch.as_tensor(normalize[0], dtype=torch.float32).reshape(1, -1, 1, 1)
        std = torch.as_tensor(normalize[1], dtype=torch.float32).reshape(1, -1, 1, 1)
        pix = x * std + mean
    else:
        pix = (x - low.reshape(1, -1, 1, 1)) / (high - low).clamp_min(1e-6).reshape(1, -1, 1, 1)
    # colour: sqrt of the channel covariance
    flat = pix.transpose(0, 1).reshape(c, -1)
    flat = flat - flat.mean(1, keepdim=True)
    cov = flat @ flat.T / max(1, flat.shape[1] - 1)
    evals, evecs = torch.linalg.eigh(cov.double())
    color = (evecs * evals.clamp_min(0).sqrt()[None, :]).float()
    # eigenvectors have arbitrary signs: make each column's largest entry positive (deterministic)
    signs = torch.sign(color.gather(0, color.abs().argmax(0, keepdim=True))).clamp_min(0) * 2 - 1
    color = color * signs
    norm = color.norm(dim=0).max()
    color = color / norm if norm > 0 else torch.eye(c)
    # spectrum: mean amplitude per radial frequency bin
    centred = pix - pix.mean(dim=(2, 3), keepdim=True)
    amp = torch.fft.rfft2(centred).abs().mean(dim=(0, 1))  # (h, w//2+1)
    f = radial_frequencies(h, w)
    edges = torch.linspace(0.0, float(f.max()) + 1e-6, bins + 1)
    centres, values = [], []
    for i in range(bins):
        m = (f >= edges[i]) & (f < edges[i + 1]) & (f > 0)
        if m.any():
            centres.append(float(f[m].mean()))
            values.append(float(amp[m].mean()))
    if len(centres) < 2:
        raise ValueError(f"images of size {h}x{w} are too small to fit a spectrum profile")
    return ImageStats(
        low=low,
        high=high,
        color=color,
        freqs=torch.tensor(centres),
        amplitude=torch.tensor(values).clamp_min(1e-8),
    )
