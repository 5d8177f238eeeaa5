"""`python -m recovery_store DIR [--json] [--key K]`."""

import sys

from recovery_store.cli import main

sys.exit(main())
