"""LightningCLI configuration from YAML (every forwarded argument typed, with its default), and use
from `lightning.pytorch` as well as `pytorch_lightning`."""

import textwrap

import pytest
import torch
import torch.nn.functional as F
from jsonargparse import ArgumentError, ArgumentParser
from pytorch_lightning.cli import LightningCLI

import featurewatch as fw
from featurewatch import ActivationGrid, FilterWeights
from tests._models import DigitsDataModule, LitClassifier, SmallCNN, digits_loaders


def test_lightning_cli_yaml_attaches_callbacks(tmp_path):
    probe = tmp_path / "probe.pt"
    torch.save(torch.randn(2, 1, 16, 16), probe)
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            trainer:
              max_epochs: 1
              logger: false
              enable_checkpointing: false
              enable_progress_bar: false
              default_root_dir: {tmp_path}
              callbacks:
                - class_path: featurewatch.FilterWeights
                  init_args:
                    layer: net.features.0
                    every_n_epochs: 1
                - class_path: featurewatch.ActivationGrid
                  init_args:
                    layers: [net.features.2, net.features.6]
                    probe: {probe}
                    max_channels: 4
                    at_start: true
            """
        )
    )
    cli = LightningCLI(
        LitClassifier,
        DigitsDataModule,
        args=["fit", "--config", str(config)],
        save_config_callback=None,
    )
    ours = [cb for cb in cli.trainer.callbacks if isinstance(cb, (FilterWeights, ActivationGrid))]
    assert [type(cb).__name__ for cb in ours] == ["FilterWeights", "ActivationGrid"]
    assert ours[0].layer == "net.features.0" and ours[1].layers == [
        "net.features.2",
        "net.features.6",
    ]
    # the schedule keywords reach the base through `**schedule`: at_start adds a call
    assert [cb.calls for cb in ours] == [1, 2] and all(cb.failures == 0 for cb in ours)
    assert ours[1].at_start and not ours[0].at_start
    assert torch.equal(ours[1]._probe.fixed, torch.load(probe))


SCHEDULE = {
    "every_n_epochs": 1,
    "every_n_train_steps": None,
    "at_start": False,
    "at_end": True,
    "strict": False,
}
#: a few arguments each callback forwards to a parent, with their defaults
FORWARDED = {
    "ChannelVisualization": {"steps": 64, "lr": 0.1, "redirect_steps": 8, "normalize": "data"},
    "ClassModelVisualization": {"steps": 64, "redirect_steps": 0, "time_budget": None},
}


@pytest.mark.parametrize(
    "cls",
    [
        fw.FilterWeights,
        fw.ActivationGrid,
        fw.ChannelVisualization,
        fw.ClassModelVisualization,
        fw.DeepDream,
        fw.DeadNeuronMonitor,
        fw.AttributionMaps,
        fw.DatasetExamples,
    ],
    ids=lambda cls: cls.__name__,
)
def test_cli_sees_every_forwarded_argument_with_its_type_and_default(cls):
    """jsonargparse (LightningCLI's parser) follows `**schedule` / `**settings` up to the class that
    declares each argument: the schedule keywords and the render settings appear with their
    defaults, and a value of the wrong type is refused when the config is parsed."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "cb")
    defaults = vars(parser.get_defaults().cb)
    expected = {**SCHEDULE, **FORWARDED.get(cls.__name__, {})}
    assert {k: defaults.get(k, "missing") for k in expected} == expected
    assert not any(k in defaults for k in ("schedule", "settings"))  # no raw **kwargs argument
    required = ["--cb.layer=x"] if cls is fw.DeepDream else []
    if cls in (fw.ChannelVisualization, fw.DatasetExamples):
        required = ["--cb.layers=[x]"]
    ok = parser.parse_args([*required, "--cb.every_n_epochs=3", "--cb.at_end=false"])
    assert (ok.cb.every_n_epochs, ok.cb.at_end) == (3, False)
    for bad in ("--cb.every_n_epochs=three", "--cb.strict=maybe"):
        with pytest.raises(ArgumentError, match="every_n_epochs|strict"):
            parser.parse_args([*required, bad])


def test_callbacks_work_with_lightning_pytorch_trainer(tmp_path):
    import lightning.pytorch as L

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = SmallCNN()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    train, _ = digits_loaders(n=64)
    cbs = [FilterWeights(), ActivationGrid(layers=["net.features.2"], num_images=2)]
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=list(cbs),
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(Module(), train)
    assert [cb.calls for cb in cbs] == [1, 1]
    ckpt = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    saved = [k for k in ckpt["callbacks"] if k.startswith(("FilterWeights", "ActivationGrid"))]
    assert len(saved) == 2  # our state travels in lightning.pytorch checkpoints too
