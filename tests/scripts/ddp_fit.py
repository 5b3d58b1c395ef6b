"""Run by tests under 2-process DDP (gloo, CPU). Lightning re-launches this script for rank 1.

Usage: python tests/scripts/ddp_fit.py OUT_DIR
Writes OUT_DIR/rank<k>.json with what each rank saw.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

from featurewatch import ActivationGrid, AttributionMaps, DatasetExamples, FilterWeights
from tests._models import LitClassifier, digits_loaders


def main(out: Path) -> None:
    pl.seed_everything(0, verbose=False)
    train, val = digits_loaders(n=128, batch_size=16)
    callbacks = [
        FilterWeights(),
        ActivationGrid(layers=["net.features.2"], num_images=2),
        # backward passes on rank zero only: must not reach DDP's gradient all-reduce
        AttributionMaps(methods=("saliency", "gradcam"), num_images=2),
        DatasetExamples(["net.features.6"], max_channels=2, k=2, pool_size=16),
    ]
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        logger=TensorBoardLogger(str(out), name="tb", version=0),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(out),
    )
    trainer.fit(LitClassifier(), train, val)
    report = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
        "calls": [cb.calls for cb in callbacks],
        "failures": [cb.failures for cb in callbacks],
    }
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
