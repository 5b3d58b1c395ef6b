"""The ``featurewatch`` command line (also ``python -m featurewatch``).

Subcommands live one per module and register in :data:`featurewatch.cli.main.COMMANDS`:

* ``report`` (:mod:`featurewatch.cli.report`): a self-contained HTML page of a run's evolution,
  from its files-sink folder or its TensorBoard event files.

All of them read a run through :mod:`featurewatch.cli.readers` (one in-memory model whatever the
back-end), report bad input as one line (:class:`featurewatch.cli.common.CLIError`) and show a
progress bar on long work when stderr is a terminal. Nothing here is imported by
``import featurewatch``.
"""
