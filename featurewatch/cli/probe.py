"""The probe images of ``featurewatch replay``: a ``.pt`` file or a folder of images.

A ``.pt`` file holds model inputs as they are (normalized like the training inputs): an
``(N, C, H, W)`` tensor, an ``(images, labels)`` tuple or list, or a dict with ``"images"`` (and
``"labels"``). A folder holds image files (read with PIL, converted to the model's input channels,
resized with torchvision to ``size`` if given, scaled to [0, 1] and normalized with ``normalize``),
or one sub-folder of image files per class (the sub-folders' sorted names give the labels, as
torchvision's ``ImageFolder`` does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from featurewatch.cli.common import CLIError

__all__ = ["load_probe"]

_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_EXPECTED = (
    "expected an (N, C, H, W) tensor of model inputs, an (images, labels) tuple, or a dict with "
    "'images' (and 'labels')"
)


def load_probe(
    path: str,
    *,
    channels: int,
    size: int | None = None,
    normalize: tuple[list[float], list[float]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(images, labels)`` from ``path``: images ``(N, C, H, W)`` float, labels ``(N,)`` long or
    ``None``.

    Raises:
        CLIError: for a missing path, a file of the wrong content or shape, an empty folder,
            fewer than 2 images, or images whose channel count is not the model's.
    """
    p = Path(path)
    if not p.exists():
        raise CLIError(f"--probe {path!r} does not exist; give a .pt file or a folder of images")
    if p.is_dir():
        images, labels = _from_folder(p, channels, size)
        if normalize is not None:
            mean, std = (
                torch.tensor(v, dtype=images.dtype).reshape(1, -1, 1, 1) for v in normalize
            )
            images = (images - mean) / std
    else:
        images, labels = _from_file(p)
    if images.shape[0] < 2:
        raise CLIError(
            f"--probe {path!r} gave {images.shape[0]} image; replay needs at least 2 (drift "
            "compares how probe images relate to each other), a few dozen for stable values"
        )
    if images.shape[1] != channels:
        raise CLIError(
            f"--probe {path!r} holds {images.shape[1]}-channel images {tuple(images.shape)}, but "
            f"the model's first convolution takes {channels} channels"
        )
    return images, labels


def _from_file(p: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    try:
        data: Any = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as err:
        raise CLIError(f"--probe {str(p)!r} cannot be read with torch.load: {err}") from err
    labels: Any = None
    if isinstance(data, dict):
        if "images" not in data:
            raise CLIError(f"--probe {str(p)!r} holds a dict with keys {sorted(data)}; {_EXPECTED}")
        data, labels = data["images"], data.get("labels")
    elif isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise CLIError(
                f"--probe {str(p)!r} holds a {type(data).__name__} of {len(data)} items; "
                f"{_EXPECTED}"
            )
        data, labels = data
    if not isinstance(data, torch.Tensor):
        raise CLIError(f"--probe {str(p)!r} holds a {type(data).__name__}; {_EXPECTED}")
    if data.dim() == 3:
        data = data[None]
    if data.dim() != 4 or not data.is_floating_point():
        raise CLIError(
            f"--probe {str(p)!r} holds a {data.dtype} tensor of shape {tuple(data.shape)}; "
            f"{_EXPECTED} (float images)"
        )
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.shape[0] != data.shape[0] or labels.is_floating_point():
            raise CLIError(
                f"--probe {str(p)!r}: labels of shape {tuple(labels.shape)} ({labels.dtype}) do "
                f"not give one integer class per image ({data.shape[0]} images)"
            )
        labels = labels.long()
    return data.float(), labels


def _from_folder(
    p: Path, channels: int, size: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    from featurewatch.core.images import load_images

    files = [f for f in p.iterdir() if f.suffix.lower() in _SUFFIXES]
    classes = sorted(d for d in p.iterdir() if d.is_dir() and _has_images(d))
    if not files and not classes:
        raise CLIError(
            f"--probe folder {str(p)!r} holds no image files ({', '.join(_SUFFIXES)}) and no "
            "sub-folders of them"
        )
    shape = None if size is None else (size, size)
    try:
        if files:
            return load_images(p, channels=channels, size=shape), None
        parts = [load_images(d, channels=channels, size=shape) for d in classes]
    except (ValueError, RuntimeError) as err:  # e.g. images of different sizes
        text = str(err).replace("pass `size`", "pass --size N")
        raise CLIError(f"--probe folder {str(p)!r}: {text}") from err
    if len({tuple(t.shape[1:]) for t in parts}) > 1:
        raise CLIError(
            f"--probe folder {str(p)!r}: the class folders' images differ in size; pass --size"
        )
    labels = torch.cat([torch.full((len(t),), i, dtype=torch.long) for i, t in enumerate(parts)])
    return torch.cat(parts), labels


def _has_images(folder: Path) -> bool:
    return any(f.suffix.lower() in _SUFFIXES for f in folder.iterdir())
