"""``featurewatch render CHECKPOINT --model MODULE:NAME -o OUT.png``: what one checkpoint's units
and classes respond to, as one labelled picture.

For a run that had no featurewatch callback (or one checkpoint you want to look at now): channel
visualizations of the layers given with ``--layer`` (the render engine of
:class:`~featurewatch.ChannelVisualization`: spectral, decorrelated images, transformation
robustness, all channels of a layer in one batched, truncated optimization) and class model images
of ``--classes`` (:class:`~featurewatch.ClassModelVisualization`'s), each tile titled with its
channel or class (and the class name when the model has ``class_names``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from featurewatch.cli.common import CLIError, parse_normalize, progress
from featurewatch.cli.models import image_channels, load_model

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``render``'s arguments to its subparser."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a .ckpt or state_dict file")
    parser.add_argument(
        "--model",
        required=True,
        metavar="MODULE:NAME",
        help="the LightningModule class of a .ckpt, or a function returning the nn.Module of a "
        "state_dict (MODULE is imported with the current folder on the path)",
    )
    parser.add_argument(
        "--layer",
        action="append",
        default=[],
        metavar="L",
        help="a layer whose channels to render, as in model.named_modules() (repeatable)",
    )
    parser.add_argument(
        "--channels",
        type=int,
        default=16,
        metavar="N",
        help="channels per layer: the first N (default: %(default)s)",
    )
    parser.add_argument(
        "--classes",
        type=int,
        nargs="*",
        default=None,
        metavar="C",
        help="classes to render class model images of; without values: the model's first 10; "
        "default: none if --layer is given, else the first 10",
    )
    parser.add_argument("--size", type=int, default=64, help="image size (default: %(default)s)")
    parser.add_argument(
        "--steps", type=int, default=64, help="optimization steps (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default: %(default)s)")
    parser.add_argument(
        "--normalize",
        nargs=2,
        metavar=("MEAN", "STD"),
        default=None,
        help="the normalization the model expects, comma-separated per input channel, e.g. "
        "0.485,0.456,0.406 0.229,0.224,0.225 (default: none)",
    )
    parser.add_argument(
        "-o", "--output", default="render.png", metavar="OUT.png", help="default: %(default)s"
    )


def run(args: argparse.Namespace) -> int:
    """Render and write the picture; print one line saying what and where."""
    for name in ("channels", "size", "steps"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name} must be a positive number, got {getattr(args, name)}")
    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise CLIError(f"--output {str(output)!r}: give a .png file name")
    if not output.parent.resolve().is_dir():
        raise CLIError(
            f"cannot write {str(output)!r}: folder {str(output.parent)!r} does not exist"
        )
    normalize = parse_normalize(args.normalize)
    model = load_model(args.model, args.checkpoint)
    channels = image_channels(model)
    # None: no class images; []: the model's first 10 classes; else those classes
    classes = args.classes if args.classes is not None else (None if args.layer else [])
    sections = _plan(model, args.layer, args.channels, classes, args.size, channels)
    from featurewatch.core.render import class_model_images, visualize_channels

    drawn = []
    for title, labels, what in progress(sections, desc="render", unit="section"):
        options = {"size": args.size, "steps": args.steps, "seed": args.seed}
        if what[0] == "layer":
            images = visualize_channels(
                model,
                what[1],
                what[2],
                normalize=normalize,
                image_channels=channels,
                **options,
            )
        else:
            images = class_model_images(
                model, what[2], normalize=normalize, image_channels=channels, **options
            )
        drawn.append((title, labels, images))
    _draw(drawn, output, Path(args.checkpoint).name)
    tiles = sum(len(labels) for _, labels, _ in drawn)
    print(f"wrote {output}: {tiles} images in {len(drawn)} section(s) of {args.checkpoint}")
    return 0


def _plan(
    model: nn.Module,
    layers: Sequence[str],
    max_channels: int,
    classes: Sequence[int] | None,
    size: int,
    image_channels: int,
) -> list[tuple[str, list[str], tuple[str, str, list[int]]]]:
    """What to render, checked before any optimization: layers exist, classes are in range."""
    from featurewatch.core.inspect import activation_maps
    from featurewatch.core.layers import resolve_layer

    for layer in layers:
        try:
            resolve_layer(model, layer)
        except (ValueError, KeyError, AttributeError) as err:
            raise CLIError(f"--layer {layer!r}: {str(err).strip(chr(39))}") from err
    probe = torch.zeros(1, image_channels, size, size)
    with torch.no_grad():
        maps = activation_maps(model, probe, list(layers)) if layers else {}
        out = model(probe) if classes is not None else None
    plan: list[tuple[str, list[str], tuple[str, str, list[int]]]] = []
    for layer in layers:
        shape = tuple(maps[layer].shape)
        if len(shape) != 4:
            raise CLIError(f"--layer {layer!r} outputs shape {shape}; name a conv or activation")
        chans = list(range(min(max_channels, shape[1])))
        plan.append(
            (f"{layer} ({shape[1]} channels)", [f"ch {c}" for c in chans], ("layer", layer, chans))
        )
    if classes is not None:
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            raise CLIError("class model images need a model returning (N, classes) logits")
        count = int(out.shape[1])
        classes = list(classes) or list(range(min(10, count)))
        bad = [c for c in classes if not 0 <= c < count]
        if bad:
            raise CLIError(f"--classes {bad}: the model has {count} classes (0..{count - 1})")
        names = getattr(model, "class_names", None)
        labels = [
            f"{c}: {names[c]}" if isinstance(names, Sequence) and c < len(names) else f"class {c}"
            for c in classes
        ]
        plan.append(("class model images", labels, ("classes", "", list(classes))))
    if not plan:
        raise CLIError("nothing to render: give --layer L and/or --classes")
    return plan


def _draw(sections: list[tuple[str, list[str], torch.Tensor]], output: Path, source: str) -> None:
    """One figure: per section a title and rows of up to 8 titled tiles."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    cols = 8
    rows = [
        (title, labels[i : i + cols], images[i : i + cols], i == 0)
        for title, labels, images in sections
        for i in range(0, len(labels), cols)
    ]
    fig = Figure(figsize=(cols * 1.3, 0.3 + sum(1.55 if first else 1.35 for *_, first in rows)))
    grid = fig.add_gridspec(len(rows), cols, hspace=0.55, wspace=0.08, left=0.02, right=0.98)
    for r, (title, labels, images, first) in enumerate(rows):
        for c in range(cols):
            ax = fig.add_subplot(grid[r, c])
            ax.set_axis_off()
            if c < len(labels):
                image = images[c].detach().float().cpu().clamp(0, 1)
                pixels = image.permute(1, 2, 0).numpy()
                ax.imshow(
                    pixels[..., 0] if pixels.shape[-1] == 1 else pixels,
                    cmap="gray",
                    vmin=0,
                    vmax=1,
                    interpolation="nearest",
                )
                ax.set_title(labels[c], fontsize=7.5, pad=2)
            if first and c == 0:  # the section's title, above its first row
                ax.text(0.0, 1.32, title, transform=ax.transAxes, fontsize=9, weight="bold")
    height = fig.get_figheight()
    fig.suptitle(
        f"featurewatch render · {source}", fontsize=10, x=0.02, y=1 + 0.55 / height, ha="left"
    )
    fig.savefig(output, dpi=100, bbox_inches="tight")
