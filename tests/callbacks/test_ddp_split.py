"""Work split across DDP ranks: each rank renders its share, every rank gets the whole, rank zero
logs; a failing share raises on every rank instead of leaving the others in a collective."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from featurewatch.callbacks._ranks import ShareFailedError, broadcast, gather, ranks_of, share

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def ranks_of_fit(script: str, out: Path, *args: str) -> list[dict]:
    """Run ``tests/scripts/<script>`` (2 gloo processes, one thread each); each rank's report."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / script), str(out), *args],
        capture_output=True,
        text=True,
        check=False,  # the return code is asserted, with the output
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_shares_cover_every_element_once_in_whole_groups() -> None:
    for n, size, group in [(5, 2, 1), (16, 2, 1), (12, 2, 3), (3, 4, 1), (8, 3, 2)]:
        parts = [share(n, r, size, group) for r in range(size)]
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))  # contiguous, in rank order
        assert all(lo % group == 0 and hi % group == 0 for lo, hi in parts)
        sizes = [hi - lo for lo, hi in parts]
        assert max(sizes) - min(sizes) <= group  # as even as whole groups allow
    assert share(5, 0, 2) == (0, 3) and share(5, 1, 2) == (3, 5)


@pytest.mark.parametrize(
    ("callback", "units", "tag", "shares"),
    [
        ("channels", 5, "featurewatch/channels/net.features.2", [[0, 3], [3, 5]]),
        ("class_model", 10, "featurewatch/class_model/output", [[0, 5], [5, 10]]),
    ],
)
def test_renders_split_across_two_ranks_equal_one_process(
    tmp_path: Path, callback: str, units: int, tag: str, shares: list[list[int]]
) -> None:
    ranks = ranks_of_fit("ddp_render_fit.py", tmp_path, "--channels", "5", "--callback", callback)
    for r in ranks:
        assert r["world_size"] == 2
        assert r["calls"] == 2 and r["failures"] == 0  # every rank runs the call
        # every rank holds all the units' images, exactly as one process renders them
        assert r["images"][0] == units
        assert r["max_diff"] == 0.0 and r["values_diff"] == 0.0
        assert r["shares"] == [shares[r["rank"]]] * 2  # each call rendered this rank's share
    acc = EventAccumulator(str(tmp_path / "tb" / "version_0"), size_guidance={"images": 0})
    acc.Reload()
    assert [e.step for e in acc.Images(tag)] == [4, 8]  # once per call, not once per rank
    assert len(list((tmp_path / "tb" / "version_0").glob("events.out.tfevents.*"))) == 1


def _ranks_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    report: dict[str, object] = {}
    # a process group alone splits nothing: only a trainer's all-ranks call does (ranks_of)
    report["outside"] = gather(lambda: rank)
    try:
        with ranks_of(rank, 2):
            _collectives(rank, report)
    finally:
        dist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))


def _collectives(rank: int, report: dict[str, object]) -> None:
    report["gathered"] = gather(lambda: torch.full((2,), float(rank)).tolist())
    report["broadcast"] = broadcast(f"from rank {rank}")

    def fails_on_one() -> int:
        if rank == 1:
            raise ValueError("planted failure")
        return rank

    try:
        gather(fails_on_one)
        report["error"] = None
    except ShareFailedError as err:
        report["error"] = str(err)
    # the ranks are still in step: one more collective completes
    report["after"] = gather(lambda: rank)


def test_a_failing_share_raises_on_every_rank_and_the_ranks_stay_in_step(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ranks_worker, args=(port, str(tmp_path)), nprocs=2, start_method="spawn")
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r, report in enumerate(reports):
        assert report["outside"] == [r]
        assert report["gathered"] == [[0.0, 0.0], [1.0, 1.0]]
        assert report["broadcast"] == "from rank 0"
        assert report["error"] == (
            "rank 1 of 2 failed its share of the call: ValueError: planted failure"
        )
        assert report["after"] == [0, 1]


def test_dataset_examples_split_across_two_ranks_equal_one_process(tmp_path: Path) -> None:
    ranks = ranks_of_fit("ddp_examples_fit.py", tmp_path, "--pool", "24", "--k", "4")
    for r in ranks:
        assert r["world_size"] == 2 and r["calls"] == 2 and r["failures"] == 0
        # rank zero's pool on both ranks; each searched 12 of its 24 images
        assert r["pool"] == 24 and r["pool_sum"] == ranks[0]["pool_sum"]
        assert r["same_top"]  # the merged top 4 equal one process's search of the whole pool
        assert r["projections"] == 3 * 4 and r["projection_diff"] == 0.0
    assert ranks[0]["indices"] == ranks[1]["indices"]
    found = {i for row in ranks[0]["indices"] for i in row}
    assert found & set(range(12)) and found & set(range(12, 24))  # both shares contribute
    acc = EventAccumulator(str(tmp_path / "tb" / "version_0"), size_guidance={"images": 0})
    acc.Reload()
    assert [e.step for e in acc.Images("featurewatch/examples/net.features.6")] == [8, 16]
