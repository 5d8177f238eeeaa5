"""`python -m commands SUBCOMMAND ...`: the `enrich` command without its console script."""

from commands.cli import main

raise SystemExit(main())
