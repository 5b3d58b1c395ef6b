"""Run by tests under 2-process DDP (gloo, CPU): a TimeBudget shared by a rank-zero callback
(ActivationGrid) and two with collectives on every rank (DeadNeuronMonitor; ChannelVisualization,
which splits its renders across the ranks). Lightning re-launches this script for rank 1.

Usage: python tests/scripts/ddp_budget_fit.py OUT_DIR
Writes OUT_DIR/rank<k>.json with what each rank decided.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pytorch_lightning as pl

from featurewatch import ActivationGrid, ChannelVisualization, DeadNeuronMonitor, TimeBudget
from tests._models import LitClassifier, digits_loaders


class BudgetedDeadNeuronMonitor(DeadNeuronMonitor):
    """Collectives on every rank and, unlike DeadNeuronMonitor, deferrable: the budget's decision
    must reach every rank."""

    budget_exempt = False


class SlowSteps(LitClassifier):
    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        # the ranks' clocks disagree on purpose: rank 1's steps look slower to its own budget
        time.sleep(0.02 * (1 + 3 * self.global_rank))
        return super().training_step(batch, batch_idx)


def main(out: Path) -> None:
    pl.seed_everything(0, verbose=False)
    train, val = digits_loaders(n=256, batch_size=16)
    schedule = {"every_n_epochs": None, "every_n_train_steps": 1}
    dead = BudgetedDeadNeuronMonitor(**schedule)
    channels = ChannelVisualization(["net.features.2"], max_channels=4, steps=8, **schedule)
    grid = ActivationGrid(["net.features.2"], num_images=2, **schedule)
    budget = TimeBudget(fraction=0.15)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        logger=False,
        callbacks=[channels, grid, dead, budget],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(out),
    )
    trainer.fit(SlowSteps(), train, val)
    report = {
        "rank": trainer.global_rank,
        "global_step": trainer.global_step,
        "dead_calls": dead.calls,
        "dead_deferred": budget.deferred.get("dead", 0),
        "channels_calls": channels.calls,
        "channels_deferred": budget.deferred.get("channels", 0),
        "grid_calls": grid.calls,
    }
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
