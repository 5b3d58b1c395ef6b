"""How fast is featurewatch's render loop, and how close to the floor?

For 16 channels of a torchvision ResNet-18 (random init) at ``layer1`` and ``layer3``, 128 px,
this measures in one run:

(a) **ours** - :func:`featurewatch.core.render.render`: all channels in one batch, forward pass
    truncated after the layer, parameters frozen (no weight gradients), vs **naive** - what most
    tools do: one channel at a time through the *full* model with parameters requiring grad and
    ``loss.backward()``. Same parametrization (spectral, decorrelated), same seeds, same
    transforms, same steps, same size, Adam at the same learning rate.
(b) **ours** vs **floor** - a bare forward/backward loop of the truncated, frozen model on a
    ready-made batch of the same size (no parametrization, transforms, hooks or optimizer).

It also reports the mean final activation of the channels (objective on the untransformed final
images) for ours and naive (equal up to float rounding: same optimization), and for ours with the
callbacks' default ``polish_steps`` (last quarter of the steps without transforms), same cost.

On a shared 2-core machine, run it with ``--threads 1`` too: with 2 threads every busy neighbour
stalls each OpenMP region, which hurts the many small ops of a render loop more than the few big
convolutions of the floor.

Run:  python bench/render_bench.py [--steps 32] [--threads 2] [--device cpu] [--repeats 3]
Times are wall-clock seconds for the whole call (ours includes its set-up: the probe forward that
counts module calls, and the final evaluation); ours and floor are the fastest of ``--repeats``
alternating runs, naive runs once (it is the slow one).
Not a test: it prints ratios measured in this run.
"""

from __future__ import annotations

import argparse
import time
from contextlib import suppress

import torch
from torch import nn
from torchvision.models import resnet18

from featurewatch.core.objectives import channel
from featurewatch.core.param import ImageSpec
from featurewatch.core.render import _transform_seed, render, unit_seed
from featurewatch.core.transforms import compose, standard_transforms

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def normalizer(device: torch.device):  # type: ignore[no-untyped-def]
    mean = torch.tensor(IMAGENET[0], device=device).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET[1], device=device).reshape(1, 3, 1, 1)
    return lambda x: (x - mean) / std


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def naive(
    model: nn.Module,
    layer: str,
    channels: list[int],
    spec: ImageSpec,
    steps: int,
    lr: float,
    device: torch.device,
) -> tuple[float, torch.Tensor]:
    """One channel at a time, full model, parameters requiring grad, loss.backward()."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    norm = normalizer(device)
    transform = compose(standard_transforms(spec.size))
    acts: dict[str, torch.Tensor] = {}
    handle = model.get_submodule(layer).register_forward_hook(
        lambda m, i, o: acts.__setitem__("out", o)
    )
    values = []
    sync(device)
    start = time.perf_counter()
    try:
        for c in channels:
            seed = unit_seed(0, c)
            param = spec.build([seed], device)
            gens = [torch.Generator().manual_seed(_transform_seed(seed))]
            opt = torch.optim.Adam(param.parameters(), lr=lr)
            for _ in range(steps):
                opt.zero_grad()
                model(norm(transform(param(), gens)))
                loss = -acts["out"][:, c].mean()
                loss.backward()
                opt.step()
            with torch.no_grad():
                model(norm(param()))
                values.append(acts["out"][:, c].mean().item())
        sync(device)
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    return time.perf_counter() - start, torch.tensor(values)


def trunk(model: nn.Module, layer: str) -> nn.Module:
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    return nn.Sequential(*[model.get_submodule(n) for n in names[: names.index(layer) + 1]])


def floor(
    model: nn.Module, layer: str, channels: list[int], size: int, steps: int, device: torch.device
) -> float:
    """Bare forward/backward of the truncated frozen model on a fixed batch, per step."""
    net = trunk(model, layer).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(len(channels), 3, size, size, generator=g).to(device).requires_grad_(True)
    idx = torch.tensor(channels, device=device)
    rows = torch.arange(len(channels), device=device)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        out = net(x)
        loss = -out[rows, idx].mean((1, 2)).sum()
        (_grad,) = torch.autograd.grad(loss, [x])
    sync(device)
    return time.perf_counter() - start


def ours(
    model: nn.Module,
    layer: str,
    channels: list[int],
    spec: ImageSpec,
    steps: int,
    lr: float,
    polish: int = 0,
) -> tuple[float, torch.Tensor]:
    for p in model.parameters():
        p.requires_grad_(True)  # as in training: render() freezes them for the call and restores
    start = time.perf_counter()
    result = render(
        model,
        channel(layer, channels),
        spec,
        seeds=[unit_seed(0, c) for c in channels],
        steps=steps,
        lr=lr,
        normalize=IMAGENET,
        polish_steps=polish,
    )
    sync(next(model.parameters()).device)
    return time.perf_counter() - start, result.values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layers", nargs="+", default=["layer1", "layer3"])
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="ours and floor run this often, alternating; the fastest counts",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = resnet18(weights=None).to(device)
    spec = ImageSpec(channels=3, size=args.size)
    chans = list(range(args.channels))
    # warm-up (allocator, first-call overheads) so no variant pays for it
    render(model, channel("layer1", [0, 1]), spec, steps=2, normalize=IMAGENET)
    print(
        f"ResNet-18 (random init), {args.channels} channels, {args.size} px, {args.steps} steps, "
        f"{args.threads} threads, {device}"
    )
    print(
        f"{'layer':8} {'naive s':>8} {'ours s':>7} {'floor s':>8} {'naive/ours':>11} "
        f"{'ours/floor':>11} {'act naive':>10} {'act ours':>9}"
    )
    polished: list[tuple[str, float, float]] = []
    for layer in args.layers:
        t_naive, v_naive = naive(model, layer, chans, spec, args.steps, args.lr, device)
        t_ours, t_floor = float("inf"), float("inf")
        for _ in range(args.repeats):  # alternate, so a busy neighbour slows both alike
            t, v_ours = ours(model, layer, chans, spec, args.steps, args.lr)
            t_ours = min(t_ours, t)
            t_floor = min(t_floor, floor(model, layer, chans, args.size, args.steps, device))
        t_pol, v_pol = ours(model, layer, chans, spec, args.steps, args.lr, polish=args.steps // 4)
        print(
            f"{layer:8} {t_naive:8.2f} {t_ours:7.2f} {t_floor:8.2f} {t_naive / t_ours:10.2f}x "
            f"{t_ours / t_floor:10.2f}x "
            f"{v_naive.mean().item():10.4f} {v_ours.mean().item():9.4f}"
        )
        polished.append((layer, t_pol, v_pol.mean().item()))
    print(
        f"\nours with the callbacks' default polish_steps = steps // 4 = {args.steps // 4} (same "
        "steps; the last ones untransformed):"
    )
    for layer, t_pol, v_pol in polished:
        print(f"{layer:8} ours+polish {t_pol:7.2f} s, mean final activation {v_pol:.4f}")
    # sanity: the benchmark left the model's parameters without gradients
    assert all(p.grad is None for p in model.parameters())


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        main()
