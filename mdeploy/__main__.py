"""``python -m mdeploy``: the same as the ``mdeploy`` command."""

from mdeploy.cli import main

raise SystemExit(main())
