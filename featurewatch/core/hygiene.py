"""Leave the model exactly as we found it.

Everything featurewatch does to a user's network during training runs inside :func:`isolated`.
It is the single place that knows what "harmless" means, so every entry point gets the same
guarantees:

* per-module ``training`` flags are saved, the model is put in ``eval()`` (BatchNorm uses and never
  updates its running statistics, dropout is off) and the flags are restored afterwards;
* per-parameter ``requires_grad`` is saved, switched off (we only ever differentiate with respect
  to *inputs*, so no weight gradient is computed and ``.grad`` is never touched) and restored;
* the global torch (CPU and CUDA), NumPy and Python RNG states are restored, so the run draws the
  same random numbers as it would have without us, even if a library we call draws from them;
* every buffer is restored in place: a forward may update state even in eval mode (the
  observers of a ``torch.ao.quantization.prepare_qat`` model, a user buffer that counts calls or
  caches the last input), and such state must not count featurewatch's forwards. Values, shapes,
  and the very tensor objects come back (``copy_`` into the original tensors, so optimizers,
  ``torch.compile`` guards and user references stay valid), and a buffer a forward rebinds, adds
  or deletes is put back as it was; modules that keep ``state_dict`` state outside tensors
  (``get_extra_state``) get it back through ``set_extra_state``;
* gradient mode is on and inference mode off even when Lightning calls us from validation, and
  autocast is off (we optimize images in full precision).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "BufferState",
    "RNGState",
    "in_isolation",
    "isolated",
    "model_device_dtype",
    "outside_inference",
]

_DEPTH = [0]


def in_isolation() -> bool:
    """True while featurewatch's own work runs (inside :func:`isolated`).

    Hooks that watch the *training* forwards (e.g. dead-neuron statistics) check this to ignore the
    forwards featurewatch itself makes.
    """
    return _DEPTH[0] > 0


@dataclass
class RNGState:
    """Snapshot of every global random number generator a training run may draw from."""

    torch_cpu: torch.Tensor
    torch_cuda: list[torch.Tensor] | None
    numpy: Any
    python: Any

    @classmethod
    def capture(cls) -> RNGState:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        return cls(torch.get_rng_state(), cuda, np.random.get_state(), random.getstate())

    def restore(self) -> None:
        torch.set_rng_state(self.torch_cpu)
        if self.torch_cuda is not None:
            torch.cuda.set_rng_state_all(self.torch_cuda)
        np.random.set_state(self.numpy)
        random.setstate(self.python)


class BufferState:
    """Copies of every buffer of a model (and of any extra ``state_dict`` state), to put back.

    Cheap by design: buffers are small next to parameters (a torchvision ResNet-18 has 60 of them,
    about 38 KB, against 45 MB of weights), and parameters need no copy, because inside
    :func:`isolated` nothing differentiates or steps them.

    Every buffer is copied back unconditionally rather than only when it changed: version
    counters miss writes made through ``.data`` or a NumPy view, and comparing values would cost
    as much as the copy (and a device synchronization per buffer on a GPU).
    """

    def __init__(self, model: nn.Module) -> None:
        # per module: its buffer dict as it was (name -> tensor object) and non-persistent names
        self._modules: list[tuple[nn.Module, dict[str, torch.Tensor | None], set[str]]] = []
        self._values: list[tuple[torch.Tensor, torch.Tensor]] = []  # (original tensor, copy)
        self._extra: list[tuple[nn.Module, Any]] = []
        seen: set[int] = set()
        with torch.no_grad():
            for module in model.modules():
                buffers = dict(module._buffers)
                self._modules.append((module, buffers, set(module._non_persistent_buffers_set)))
                for tensor in buffers.values():
                    if tensor is not None and id(tensor) not in seen:
                        seen.add(id(tensor))  # a buffer shared by two modules is copied once
                        self._values.append((tensor, tensor.clone()))
                if type(module).get_extra_state is not nn.Module.get_extra_state:
                    self._extra.append((module, copy.deepcopy(module.get_extra_state())))

    def restore(self) -> None:
        """Put every buffer back: same tensor objects under the same names, same values."""
        with torch.no_grad():
            for module, buffers, non_persistent in self._modules:
                if module._buffers.keys() != buffers.keys() or any(
                    module._buffers[name] is not tensor for name, tensor in buffers.items()
                ):
                    # rebound (`self.n = self.n + 1`), added or deleted during the block
                    for name in list(module._buffers):
                        if name not in buffers:
                            del module._buffers[name]
                    module._buffers.update(buffers)
                if module._non_persistent_buffers_set != non_persistent:
                    module._non_persistent_buffers_set.clear()
                    module._non_persistent_buffers_set.update(non_persistent)
            for tensor, saved in self._values:
                _copy_back(tensor, saved)
            for module, state in self._extra:
                module.set_extra_state(state)


def _copy_back(tensor: torch.Tensor, saved: torch.Tensor) -> None:
    """Make ``tensor`` equal to ``saved`` in place (observers ``resize_`` their buffers)."""
    if tensor.dtype != saved.dtype or tensor.device != saved.device:
        tensor.data = saved  # `.data` was reassigned with another dtype or device
        return
    if tensor.shape != saved.shape:
        tensor.resize_(saved.shape)
    if tensor.is_inference():
        with torch.inference_mode():
            tensor.copy_(saved)
    else:
        tensor.copy_(saved)


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first floating parameter (or buffer).

    Falls back to CPU/float32 for a parameter-free model.
    """
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


@contextmanager
def outside_inference() -> Iterator[None]:
    """Enable autograd even inside ``torch.inference_mode`` / ``torch.no_grad``.

    Tensors created under inference mode cannot enter autograd: ``.clone()`` them inside this block.
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextmanager
def isolated(model: nn.Module, *, eval_mode: bool = True) -> Iterator[nn.Module]:
    """Run featurewatch work on ``model`` without any lasting effect on it or on the run.

    Args:
        model: the user's network; it is modified only for the duration of the block.
        eval_mode: put every module in eval mode for the block (default). ``False`` keeps the
            current flags, e.g. for statistics that must see the training-mode forward.

    Yields:
        The same ``model``.

    Example:
        >>> with isolated(model):
        ...     image = render(model, objective)
    """
    flags = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    rng = RNGState.capture()
    buffers: BufferState | None = None
    with ExitStack() as stack:
        _DEPTH[0] += 1
        try:
            stack.enter_context(outside_inference())
            # copied outside inference mode, so the copies are ordinary tensors
            buffers = BufferState(model)
            for device_type in _autocast_device_types(model):
                stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
            if eval_mode:
                model.eval()
            for p, _ in grads:
                p.requires_grad_(False)
            yield model
        finally:
            for m, training in flags:
                m.training = training
            for p, requires_grad in grads:
                p.requires_grad_(requires_grad)
            if buffers is not None:
                buffers.restore()
            rng.restore()
            _DEPTH[0] -= 1


def _autocast_device_types(model: nn.Module) -> list[str]:
    device, _ = model_device_dtype(model)
    types = {"cpu", device.type}
    return sorted(t for t in types if t in ("cpu", "cuda", "mps", "xpu", "hpu"))
