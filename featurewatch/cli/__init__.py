"""The ``featurewatch`` command line (also ``python -m featurewatch``).

Subcommands live one per module and register in :data:`featurewatch.cli.main.COMMANDS`:

* ``report`` (:mod:`featurewatch.cli.report`): a self-contained HTML page of a run's evolution,
  from its files-sink folder or its TensorBoard event files.
* ``replay`` (:mod:`featurewatch.cli.replay`): the callbacks over a run's checkpoints, into a
  files-sink folder (for runs trained without them).
* ``render`` (:mod:`featurewatch.cli.render`): channel and class images of one checkpoint, as one
  labelled PNG.

``report`` reads a run through :mod:`featurewatch.cli.readers` (one in-memory model whatever the
back-end); ``replay`` and ``render`` load checkpoints through :mod:`featurewatch.cli.models`. All
report bad input as one line (:class:`featurewatch.cli.common.CLIError`) and show a
progress bar on long work when stderr is a terminal. Nothing here is imported by
``import featurewatch``.
"""
