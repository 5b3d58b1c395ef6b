"""Fixed probe images: the same inputs at every call, so what changes in the pictures is the
network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from featurewatch.core.hygiene import outside_inference
from featurewatch.core.images import Normalize, load_images
from featurewatch.core.validation import check_int

__all__ = ["Normalize", "ProbeImages"]  # Normalize: the core's, for the callbacks' signatures

#: the convolutions that can see an input of each rank ((N, C, L), (N, C, H, W), ...)
CONV_BY_RANK: dict[int, type[nn.Module]] = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}


class ProbeImages:
    """Holds the probe batch of a callback.

    Sources, in order: an explicit tensor (``(N, C, H, W)`` images, ``(N, F)`` feature vectors, or
    a 3-D tensor: one ``(C, H, W)`` image, or ``N`` signals ``(N, C, L)`` when the model's inputs
    turn out to be 3-D at the first batch, :meth:`check_input`); a path (image file, folder of
    images or ``.pt`` tensor; only a ``.pt`` tensor of the inputs' rank for signals or feature
    vectors), resized to the training input size and normalized with ``normalize``; or, when
    neither is given,
    the first ``num_images`` inputs of the validation dataloader (the training one if there is no
    validation), captured once and kept for the whole run (and in checkpoints). The probe is fixed
    at the first call: the sanity check (on by default) shows validation batches before it, but
    with ``num_sanity_val_steps=0`` and ``at_start=True`` only training batches have been seen, and
    those are kept.
    """

    def __init__(
        self,
        probe: torch.Tensor | str | None,
        num_images: int,
        normalize: Normalize | None = None,
        *,
        argument: str = "probe",
    ) -> None:
        check_int("num_images", num_images)
        #: the callback argument the images came from, for messages
        self.argument = argument
        if probe is not None and not isinstance(probe, (torch.Tensor, str, Path)):
            raise TypeError(f"`probe` must be a tensor, a path or None, got {type(probe).__name__}")
        if isinstance(probe, (str, Path)) and not Path(probe).exists():
            raise FileNotFoundError(f"`probe` path {str(probe)!r} does not exist")
        #: a 3-D tensor probe as given: ``(C, H, W)`` for an image model, ``(N, C, L)`` signals
        #: for a 1-D one; which of the two is decided at the first batch (:meth:`check_input`)
        self.signals: torch.Tensor | None = None
        if isinstance(probe, torch.Tensor):
            if probe.dim() == 3:
                self.signals = probe.detach().cpu().clone()
                probe = probe[None]
            if probe.dim() not in (2, 4) or probe.numel() == 0:
                raise ValueError(
                    "`probe` tensor must be (N, C, H, W) or (C, H, W) images, (N, C, L) signals or "
                    f"(N, F) feature vectors, got shape {tuple(probe.shape)}"
                )
        self.source = probe
        self.num_images = num_images
        self.normalize = normalize
        self.fixed: torch.Tensor | None = (
            probe.detach().cpu().clone() if isinstance(probe, torch.Tensor) else None
        )
        self._seen: dict[str, list[torch.Tensor]] = {"val": [], "train": []}

    def _count(self, split: str) -> int:
        return sum(t.shape[0] for t in self._seen[split])

    def observe(self, x: torch.Tensor, split: str) -> None:
        """Keep the first inputs of each split until ``num_images`` are held (cheap afterwards)."""
        if self.fixed is not None or self.source is not None:
            return
        need = self.num_images - self._count(split)
        if need <= 0:
            return
        with outside_inference():
            self._seen[split].append(x[:need].detach().to("cpu", copy=True))

    def seen(self, split: str) -> int:
        """How many inputs of ``split`` are held while the probe is not fixed yet."""
        return self._count(split)

    def drop(self, split: str) -> None:
        """Forget the inputs held for ``split`` (e.g. the sanity check's, which the first validation
        epoch shows again); no effect once the probe is fixed."""
        if self.fixed is None:
            self._seen[split] = []

    def peek(self) -> torch.Tensor:
        """The probe as held so far, without fixing it (a large pool fills over a whole epoch).

        Falls back to :meth:`get` when nothing is held (a tensor or path probe, or the "no probe
        images yet" error).
        """
        if self.fixed is not None:
            return self.fixed
        split = "val" if self._seen["val"] else "train"
        if not self._seen[split]:
            return self.get()
        return torch.cat(self._seen[split])[: self.num_images]

    def resolve_path(self, like: torch.Tensor) -> None:
        """Load a path probe at the size and channel count of a real input batch ``like``."""
        if self.fixed is not None or not isinstance(self.source, (str, Path)):
            return
        if like.dim() != 4:  # signals or feature vectors: only a saved tensor of their rank
            self.fixed = _saved_tensor(Path(self.source), like)[: self.num_images]
            return
        images = load_images(
            self.source, channels=like.shape[1], size=(int(like.shape[-2]), int(like.shape[-1]))
        )
        if self.normalize is not None:
            mean, std = (
                torch.as_tensor(v, dtype=images.dtype).reshape(1, -1, 1, 1) for v in self.normalize
            )
            images = (images - mean) / std
        self.fixed = images[: self.num_images] if images.shape[0] > self.num_images else images

    def get(self) -> torch.Tensor:
        """The probe batch, fixed from now on.

        Raises:
            RuntimeError: if no batch has been seen and no probe was given.
        """
        if self.fixed is None:
            split = "val" if self._seen["val"] else "train"
            if not self._seen[split]:
                raise RuntimeError("no probe images yet: pass `probe=` or let a batch pass first")
            self.fixed = torch.cat(self._seen[split])[: self.num_images]
            self._seen = {"val": [], "train": []}
        return self.fixed

    def check_model(self, owner: str, model: nn.Module) -> None:
        """At ``setup``: a given tensor's channel count must be one that some convolution of the
        model takes (the one that sees the pixels is among them). Sure to be wrong when none does;
        anything else waits for the first batch (:meth:`check_input`).

        Raises:
            ValueError: naming ``owner``, the argument and the channel counts.
        """
        if self.fixed is None:
            return
        views = [self.fixed] if self.signals is None else [self.fixed, self.signals]
        found = [(v, self._convs(model, v)) for v in views]
        found = [(v, convs) for v, convs in found if convs]  # the views some convolution sees
        if found and all(all(m.in_channels != v.shape[1] for _, m in convs) for v, convs in found):
            view, convs = found[0]
            channels = view.shape[1]
            name, first = convs[0]
            raise ValueError(
                f"{owner}: `{self.argument}` has {channels} channels (shape "
                f"{tuple(view.shape)}), but no convolution of the model takes {channels} "
                f"(the first, {name!r}, takes {first.in_channels}); pass "
                f"{first.in_channels}-channel {'signals' if view.dim() == 3 else 'images'} "
                "normalized like the training inputs"
            )

    @staticmethod
    def _convs(model: nn.Module, view: torch.Tensor) -> list[tuple[str, Any]]:
        """The convolutions of ``model`` that can see inputs of ``view``'s rank."""
        kind = CONV_BY_RANK.get(view.dim())
        return [(n, m) for n, m in model.named_modules() if kind and isinstance(m, kind)]

    def check_input(self, owner: str, x: torch.Tensor) -> None:
        """At the first batch: a given tensor must look like the inputs (rank and channels).

        A 3-D tensor probe becomes ``N`` signals ``(N, C, L)`` here when the inputs ``x`` are 3-D
        (a 1-D net); otherwise it stays the one ``(C, H, W)`` image it was taken for.

        Raises:
            ValueError: naming ``owner``, the argument and both shapes.
        """
        if self.fixed is None or not isinstance(self.source, torch.Tensor):
            return
        if self.signals is not None and x.dim() == 3:
            self.fixed = self.signals.clone()
        if self.fixed.dim() != x.dim() or self.fixed.shape[1] != x.shape[1]:
            raise ValueError(
                f"{owner}: `{self.argument}` has shape {tuple(self.fixed.shape)}, but the model's "
                f"inputs are {tuple(x.shape)} (N, C, ...); pass {_kind(x)} with {x.shape[1]} "
                f"{'features' if x.dim() == 2 else 'channels'}, normalized like the training "
                "inputs"
            )

    def state(self) -> dict[str, Any]:
        return {"probe": self.fixed} if self.fixed is not None else {}

    def load_state(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("probe"), torch.Tensor):
            self.fixed = state["probe"].cpu()


def _kind(x: torch.Tensor) -> str:
    """What a batch of the model's inputs holds, in words."""
    return {2: "feature vectors", 3: "signals"}.get(x.dim(), "images")


def _saved_tensor(path: Path, like: torch.Tensor) -> torch.Tensor:
    """A ``.pt`` probe of the inputs' rank, for models whose inputs are not images."""
    t = torch.load(path, map_location="cpu", weights_only=True) if path.suffix == ".pt" else None
    if not isinstance(t, torch.Tensor) or t.dim() != like.dim() or t.shape[1] != like.shape[1]:
        shape = ("N", *like.shape[1:])
        raise ValueError(
            f"`probe` path {str(path)!r}: this model's inputs are {_kind(like)} "
            f"{tuple(like.shape)}, so a path probe must be a .pt file holding a tensor of shape "
            f"{shape} (image files are probes of image models); or pass the tensor as `probe=`"
        )
    return t.float()
