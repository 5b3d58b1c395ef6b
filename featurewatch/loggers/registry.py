"""The one table from Lightning logger class to featurewatch sink, and :func:`sinks_for`.

The table is keyed by class *name*, so ``pytorch_lightning.loggers.TensorBoardLogger`` and
``lightning.pytorch.loggers.TensorBoardLogger`` both match without featurewatch importing either
package, and the logger's MRO is walked, so a subclass (``class MyLogger(WandbLogger)``) gets its
parent's adapter unless it has its own entry.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from featurewatch.loggers.base import Sink
from featurewatch.loggers.files import FilesSink

__all__ = ["SinkFactory", "files_next_to", "register_sink", "sinks_for"]

#: Builds the sink for one logger: ``factory(logger, trainer)``. Return ``None`` to log nothing
#: there.
SinkFactory = Callable[[Any, Any], Sink | None]

#: Folder name of the files sink inside a logger's directory.
FILES_DIR = "featurewatch"
#: Folder of the files sink in ``trainer.default_root_dir`` when there is no logger at all. Not
#: ``featurewatch``: run from a checkout, that would be the package's own folder.
NO_LOGGER_DIR = "featurewatch_logs"


def _tensorboard(logger: Any, trainer: Any) -> Sink:
    from featurewatch.loggers.tensorboard import TensorBoardSink

    return TensorBoardSink(logger.experiment)


def _is_tensorboard(logger: Any) -> bool:
    return any(cls.__name__ == "TensorBoardLogger" for cls in type(logger).__mro__)


def _wandb(logger: Any, trainer: Any) -> Sink | None:
    from featurewatch.loggers.wandb import WandbSink

    run = logger.experiment
    settings = getattr(run, "settings", None)
    if getattr(settings, "sync_tensorboard", False) and any(
        _is_tensorboard(other) for other in trainer.loggers
    ):
        # The run mirrors every TensorBoard event file (wandb.init(sync_tensorboard=True)), so what
        # the TensorBoard sink writes reaches W&B already; a W&B sink would show everything twice.
        import logging

        logging.getLogger("featurewatch").info(
            "featurewatch: the W&B run syncs TensorBoard (sync_tensorboard=True); featurewatch's "
            "TensorBoard output reaches W&B through it, so it is not logged to W&B a second time"
        )
        return None
    return WandbSink(run)


def _mlflow(logger: Any, trainer: Any) -> Sink:
    from featurewatch.loggers.mlflow import MLflowSink

    return MLflowSink(logger.experiment, logger.run_id)


def files_next_to(logger: Any, trainer: Any) -> Sink:
    """A :class:`~featurewatch.loggers.files.FilesSink` in ``<dir>/featurewatch``.

    ``<dir>`` is the logger's ``log_dir``, else its ``save_dir``; else the sink is in
    ``<trainer.default_root_dir>/featurewatch_logs``.

    The default for loggers without an adapter (``CSVLogger``, Neptune, Comet, ...): the images
    land next to what that logger writes. Also usable with :func:`register_sink` to give a logger
    that has an adapter plain files instead, e.g. ``register_sink("MLFlowLogger", files_next_to)``.
    ``trainer.log_dir`` is never read: it is a DDP collective, and sinks are built on rank zero
    only.
    """
    folder = _logger_dir(logger)
    if folder is None:
        return FilesSink(Path(trainer.default_root_dir) / NO_LOGGER_DIR)
    return FilesSink(Path(folder) / FILES_DIR)


def _logger_dir(logger: Any) -> str | None:
    for attribute in ("log_dir", "save_dir"):
        try:
            value = getattr(logger, attribute, None)
        except Exception:  # noqa: BLE001 - a third-party property may fail (no run yet); try the next
            value = None
        if isinstance(value, (str, os.PathLike)) and str(value):
            return os.fspath(value)
    return None


def _skip(logger: Any, trainer: Any) -> None:
    return None


_FACTORIES: dict[str, SinkFactory] = {
    "TensorBoardLogger": _tensorboard,
    "WandbLogger": _wandb,
    "MLFlowLogger": _mlflow,
    "CSVLogger": files_next_to,
    # fast_dev_run swaps the loggers for this one: it means "log nothing".
    "DummyLogger": _skip,
}


def register_sink(logger_class_name: str, factory: SinkFactory) -> None:
    """Use ``factory(logger, trainer)`` to build the sink for loggers of that class (or subclasses).

    Replaces an existing entry, including a built-in one. A factory may return ``None`` to log
    nothing to such loggers. Call it before ``trainer.fit`` (sinks are built in ``setup``).

    Example::

        from featurewatch.loggers import FilesSink, register_sink

        register_sink("NeptuneLogger", lambda logger, trainer: MyNeptuneSink(logger.experiment))
        register_sink("CometLogger", lambda logger, trainer: None)  # no featurewatch output there

    Args:
        logger_class_name: the logger's class name as ``type(logger).__name__`` spells it (no
            module).
        factory: callable taking ``(logger, trainer)`` and returning a :class:`Sink` or ``None``.
    """
    if not isinstance(logger_class_name, str) or not logger_class_name.isidentifier():
        raise TypeError(
            "register_sink: `logger_class_name` must be a class name such as 'NeptuneLogger', "
            f"got {logger_class_name!r}"
        )
    if not callable(factory):
        raise TypeError(
            "register_sink: `factory` must be callable as "
            "factory(logger, trainer) -> Sink | None, "
            f"got {type(factory).__name__}"
        )
    _FACTORIES[logger_class_name] = factory


def _factory_for(logger: Any) -> SinkFactory:
    for cls in type(logger).__mro__:
        if cls.__name__ in _FACTORIES:
            return _FACTORIES[cls.__name__]
    return files_next_to


def sinks_for(trainer: Any) -> list[Sink]:
    """One sink per logger of ``trainer`` (all of ``trainer.loggers``, not just the first).

    ``TensorBoardLogger`` → :class:`~featurewatch.loggers.tensorboard.TensorBoardSink`,
    ``WandbLogger`` → :class:`~featurewatch.loggers.wandb.WandbSink`, ``MLFlowLogger`` →
    :class:`~featurewatch.loggers.mlflow.MLflowSink`; ``CSVLogger`` and loggers without an adapter →
    :class:`~featurewatch.loggers.files.FilesSink` in ``<logger dir>/featurewatch``; ``DummyLogger``
    (``fast_dev_run``) → nothing. A trainer without any logger (``logger=False``) still gets a
    :class:`FilesSink` in ``<default_root_dir>/featurewatch_logs``, so the work is never thrown
    away.
    Two loggers that would get a files sink in the same folder share one.

    Call on global rank zero only: adapters use ``logger.experiment``, which other ranks do not
    have.
    """
    loggers = list(getattr(trainer, "loggers", None) or [])
    if not loggers:
        return [FilesSink(Path(trainer.default_root_dir) / NO_LOGGER_DIR)]
    sinks: list[Sink] = []
    roots: set[Path] = set()
    for logger in loggers:
        sink = _factory_for(logger)(logger, trainer)
        if sink is None:
            continue
        if not isinstance(sink, Sink):
            raise TypeError(
                f"the sink factory for {type(logger).__name__} returned {type(sink).__name__}; "
                "it must return a featurewatch.loggers.Sink or None (see register_sink)"
            )
        if isinstance(sink, FilesSink):
            root = sink.root.resolve()
            if root in roots:
                continue
            roots.add(root)
        sinks.append(sink)
    return sinks
