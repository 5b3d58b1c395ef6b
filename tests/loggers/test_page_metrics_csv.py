"""The run's metrics.csv as FilesSink embeds it in index.html (the page's curves)."""

from __future__ import annotations

import json
import re

import numpy as np

from featurewatch.loggers import Event, FilesSink
from featurewatch.loggers._page import METRIC_POINTS_ON_PAGE, find_metrics_csv, read_metrics_csv


def page_data(sink: FilesSink) -> dict:
    """The data embedded in the sink's index.html."""
    html = sink.index_html.read_text(encoding="utf-8")
    match = re.search(
        r'<script type="application/json" id="fw-data">(.*?)</script>', html, re.DOTALL
    )
    assert match, "index.html has no embedded data"
    return json.loads(match.group(1))


def test_columns_against_step_with_empty_text_and_nonfinite_cells_left_out(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(
        "epoch,step,train_loss,val_acc,note\n0,0,2.5,,a\n0,1,nan,,b\n1,2,1.5,0.5,\n1,3,inf,0.75,c\n"
    )
    metrics = read_metrics_csv(path)

    assert metrics == {
        "path": str(path),
        "columns": {
            "train_loss": [[0, 2.5, 0], [2, 1.5, 1]],
            "val_acc": [[2, 0.5, 1], [3, 0.75, 1]],
        },
    }


def test_long_columns_are_thinned_keeping_first_and_last(tmp_path):
    path = tmp_path / "metrics.csv"
    n = 5 * METRIC_POINTS_ON_PAGE + 3
    path.write_text("step,loss\n" + "".join(f"{i},{i / 2}\n" for i in range(n)))
    (points,) = read_metrics_csv(path)["columns"].values()

    assert len(points) == METRIC_POINTS_ON_PAGE
    assert points[0] == [0, 0.0, None] and points[-1] == [n - 1, (n - 1) / 2, None]
    assert [p[0] for p in points] == sorted({p[0] for p in points})  # in order, no repeats


def test_unreadable_or_curveless_files_give_no_metrics(tmp_path):
    cases = {
        "binary": b"\xff\xfe\x00bad",
        "header only": b"step,loss\n",
        "no numbers": b"a,b\nx,y\n",
    }
    for name, content in cases.items():
        path = tmp_path / f"{name}.csv"
        path.write_bytes(content)
        assert read_metrics_csv(path) is None, name
    assert read_metrics_csv(tmp_path / "missing.csv") is None


def test_the_sink_embeds_the_metrics_csv_next_to_its_folder_only_when_present(tmp_path):
    run = tmp_path / "version_0"
    sink = FilesSink(run / "featurewatch", page_every=0)
    event = Event(step=0, epoch=0)
    event.add_image("featurewatch/probe/layer", np.zeros((2, 2, 3), np.uint8))
    sink.write(event)
    assert find_metrics_csv(sink.root) is None and "metrics" not in page_data(sink)

    (run / "metrics.csv").write_text("epoch,step,loss\n0,0,1.0\n0,1,0.5\n")
    event = Event(step=1, epoch=0)
    event.add_scalar("featurewatch/probe/value", 1.0)
    sink.write(event)
    assert find_metrics_csv(sink.root) == run / "metrics.csv"
    assert page_data(sink)["metrics"]["columns"] == {"loss": [[0, 1.0, 0], [1, 0.5, 0]]}
