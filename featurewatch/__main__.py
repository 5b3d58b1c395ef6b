"""``python -m featurewatch``: the same as the ``featurewatch`` command."""

from featurewatch.cli.main import main

raise SystemExit(main())
