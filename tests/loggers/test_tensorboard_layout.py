"""TensorBoardSink's Custom Scalars layout and caption tables, read back by TensorBoard itself.

The layout is checked the way the Custom Scalars tab gets it: TensorBoard's own
``CustomScalarsPlugin`` over a ``MultiplexerDataProvider`` (``layout_impl`` is what the tab's
``/layout`` route returns, ``scalars_impl`` which tags a chart's regex pulls in).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard import context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins import base_plugin
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar.custom_scalars_plugin import CustomScalarsPlugin
from tensorboard.plugins.scalar.scalars_plugin import ScalarsPlugin

from featurewatch.callbacks.base import FeatureWatchCallback
from featurewatch.loggers import Event, TensorBoardSink, sinks_for
from featurewatch.loggers.tensorboard import LAYOUT_TAG, CustomScalarsLayout
from tests.loggers.conftest import fit

# Layer names with regex metacharacters: unescaped, "(1)" would be a group, "[0]" a class, "." any.
LAYERS = ("features.2", "block(1)[0]+x")
DEAD = ("dead_fraction", "dying_fraction", "dormant_fraction")
DRIFT = ("cka_previous", "cka_first")


def dead_event(step: int, epoch: int) -> Event:
    event = Event(step=step, epoch=epoch)
    for layer in LAYERS:
        for i, metric in enumerate(DEAD):
            event.add_scalar(f"featurewatch/dead/{layer}/{metric}", i / 10 + step / 100)
    event.add_scalar("featurewatch/dead/seconds", 0.5)
    return event


def drift_event(step: int, epoch: int) -> Event:
    event = Event(step=step, epoch=epoch)
    for layer in LAYERS:
        for metric in DRIFT:
            event.add_scalar(f"featurewatch/drift/{layer}/{metric}", 0.9)
    event.add_scalar("featurewatch/drift/seconds", 0.25)
    return event


class TensorBoardView:
    """What TensorBoard's server would show for one log folder."""

    def __init__(self, logdir: Path) -> None:
        multiplexer = plugin_event_multiplexer.EventMultiplexer()
        multiplexer.AddRunsFromDirectory(str(logdir))
        multiplexer.Reload()
        tb = base_plugin.TBContext(
            logdir=str(logdir),
            multiplexer=multiplexer,
            data_provider=data_provider.MultiplexerDataProvider(multiplexer, str(logdir)),
            plugin_name_to_instance={},
        )
        tb.plugin_name_to_instance["scalars"] = ScalarsPlugin(tb)
        self.plugin = CustomScalarsPlugin(tb)
        self.ctx = context.RequestContext()
        self.runs = sorted(multiplexer.Runs())

    def layout(self) -> dict:
        """The JSON the Custom Scalars tab's ``/layout`` route answers (``{}`` for none)."""
        answer = self.plugin.layout_impl(self.ctx, "")
        return json.loads(answer) if isinstance(answer, str) else answer

    def charts(self) -> dict[tuple[str, str], list[str]]:
        """``{(category, chart title): regexes}`` of the layout the Custom Scalars tab gets."""
        layout = self.layout()
        return {
            (category["title"], chart["title"]): chart["multiline"]["tag"]
            for category in layout.get("category", [])
            for chart in category["chart"]
        }

    def tags_of(self, regex: str) -> set[str]:
        """The scalar tags TensorBoard plots for ``regex`` (over every run)."""
        tags: set[str] = set()
        for run in self.runs:
            answer = self.plugin.scalars_impl(self.ctx, run, regex, "")
            assert answer["regex_valid"], regex
            tags |= set(answer["tag_to_events"])
        return tags


def expected_charts(callbacks: dict[str, tuple[str, ...]]) -> dict[tuple[str, str], set[str]]:
    charts: dict[tuple[str, str], set[str]] = {
        ("featurewatch", "seconds (all callbacks)"): {
            f"featurewatch/{name}/seconds" for name in callbacks
        }
    }
    for name, metrics in callbacks.items():
        for metric in metrics:
            charts[(f"featurewatch/{name}", f"{metric} (all layers)")] = {
                f"featurewatch/{name}/{layer}/{metric}" for layer in LAYERS
            }
    return charts


@pytest.fixture
def logged(tmp_path):
    """Dead-neuron statistics at steps 3 and 7, drift (a callback's first call) at step 5, and a
    look-alike tag written past the sink (``featuresX2`` would match an unescaped ``features.2``).
    """
    logger = TensorBoardLogger(tmp_path)
    sink = TensorBoardSink(logger.experiment)
    logger.experiment.add_scalar("featurewatch/dead/featuresX2/dead_fraction", 1.0, 1)
    sink.write(dead_event(3, 0))
    sink.write(drift_event(5, 0))
    sink.write(dead_event(7, 1))
    return logger.log_dir


def test_one_chart_per_metric_holding_every_layer_and_one_timing_chart(logged):
    view = TensorBoardView(Path(logged))
    charts = view.charts()
    expected = expected_charts({"dead": DEAD, "drift": DRIFT})
    assert set(charts) == set(expected)  # 3 dead + 2 drift + 1 timing: 6 charts
    # The categories come in a fixed order: timing across callbacks first, then each callback.
    layout = view.layout()
    assert [c["title"] for c in layout["category"]] == [
        "featurewatch",
        "featurewatch/dead",
        "featurewatch/drift",
    ]
    assert [c["title"] for c in layout["category"][1]["chart"]] == [
        f"{m} (all layers)" for m in DEAD
    ]
    for chart, regexes in charts.items():
        (regex,) = regexes
        # exactly the series logged: every layer of the metric, no look-alike, nothing else
        assert view.tags_of(regex) == expected[chart], chart


def test_the_layout_is_rewritten_only_when_it_grows_and_tensorboard_shows_the_latest(logged):
    acc = EventAccumulator(logged, size_guidance={"tensors": 0})
    acc.Reload()
    written = acc.Tensors(LAYOUT_TAG)
    assert len(written) == 2  # step 3 (dead) and step 5 (drift's first call); not again at 7
    first, last = (layout_pb2.Layout.FromString(e.tensor_proto.string_val[0]) for e in written)
    assert [c.title for c in first.category] == ["featurewatch", "featurewatch/dead"]
    assert [c.title for c in last.category] == [
        "featurewatch",
        "featurewatch/dead",
        "featurewatch/drift",
    ]
    # TensorBoard serves the last layout written, which holds the union.
    charts = TensorBoardView(Path(logged)).charts()
    assert (("featurewatch/dead", "dead_fraction (all layers)")) in charts
    assert (("featurewatch/drift", "cka_first (all layers)")) in charts


class DeadLike(FeatureWatchCallback):
    default_name = "dead"

    def visualize(self, trainer, pl_module, event: Event) -> None:
        for layer in LAYERS:
            for metric in DEAD:
                event.add_scalar(f"featurewatch/{self.name}/{layer}/{metric}", 0.0)


class DriftLike(FeatureWatchCallback):
    default_name = "drift"

    def visualize(self, trainer, pl_module, event: Event) -> None:
        for layer in LAYERS:
            for metric in DRIFT:
                event.add_scalar(f"featurewatch/{self.name}/{layer}/{metric}", 1.0)


def test_callbacks_with_sinks_of_their_own_share_one_layout_in_a_real_fit(tmp_path):
    # Every callback gets its own sinks, all on the logger's one writer: each layout written must
    # hold the charts of all of them, since TensorBoard shows only the last one.
    logger = TensorBoardLogger(tmp_path)
    trainer = fit(tmp_path, logger, [DeadLike(every_n_epochs=1), DriftLike(every_n_epochs=1)])
    assert [type(s) for s in sinks_for(trainer)] == [TensorBoardSink]
    view = TensorBoardView(Path(logger.log_dir))
    charts = view.charts()
    expected = expected_charts({"dead": DEAD, "drift": DRIFT})
    assert set(charts) == set(expected)
    for chart, (regex,) in charts.items():
        assert view.tags_of(regex) == expected[chart], chart


def test_the_layout_is_derived_from_the_key_scheme_alone():
    layout = CustomScalarsLayout()
    assert not layout and layout.as_dict() == {}
    keys = [
        "featurewatch/my.watch/conv1/gain",  # a user-chosen name= with a dot
        "featurewatch/my.watch/encoder/block.0/gain",  # a layer path with a slash
        "featurewatch/my.watch/seconds",
        "featurewatch/channels/seconds",
        "train_loss",  # not featurewatch's
        "featurewatch/alone",  # no metric
    ]
    assert layout.add(keys)
    assert not layout.add(keys)  # nothing new: no rewrite needed
    assert layout.as_dict() == {
        "featurewatch": {
            "seconds (all callbacks)": [
                "Multiline",
                [r"^featurewatch/(?:my\.watch|channels)/seconds$"],
            ]
        },
        r"featurewatch/my.watch": {
            "gain (all layers)": [
                "Multiline",
                [r"^featurewatch/my\.watch/(?:conv1|encoder/block\.0)/gain$"],
            ]
        },
    }
    regex = layout.as_dict()["featurewatch/my.watch"]["gain (all layers)"][1][0]
    assert re.match(regex, "featurewatch/my.watch/encoder/block.0/gain")
    assert not re.match(regex, "featurewatch/myXwatch/conv1/gain")
    assert not re.match(regex, "featurewatch/my.watch/conv1/gain/more")


def test_caption_tables_head_with_epoch_and_step_and_do_not_repeat_them(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    event = Event(step=24, epoch=0)
    pixels = np.zeros((2, 2, 3), np.uint8)
    event.add_image("featurewatch/dead/a", pixels, caption="step 24, epoch 0: on-rate")
    event.add_image("featurewatch/dead/b", pixels, caption="epoch 0, step 24: on-rate")
    event.add_image("featurewatch/dead/c", pixels, caption="step 10: first seen")
    TensorBoardSink(logger.experiment).write(event)

    acc = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0})
    acc.Reload()
    (entry,) = acc.Tensors("featurewatch/dead/captions/text_summary")
    assert entry.step == 24
    assert entry.tensor_proto.string_val[0].decode() == (
        "epoch 0 · step 24\n\n| image | caption |\n|---|---|\n"
        "| `a` | on-rate |\n| `b` | on-rate |\n"
        "| `c` | step 10: first seen |"  # another step: part of the message, kept
    )
