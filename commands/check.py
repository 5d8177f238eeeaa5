"""`enrich check`: validate the settings and print them as a program would read them.

Connects to nothing. Secrets print as `**********`, so the output may be
pasted into a ticket. Exits 2 with the usual message on a bad setting.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from config.base import ENV_PREFIX, EnrichSettings, exit_on_bad_settings
from dataflows.settings import Settings, check_dataflow, load_settings
from reference.settings import PublisherSettings
from telemetry.logging import REDACTED


def effective(settings: EnrichSettings) -> dict[str, Any]:
    """Every setting by its variable, as JSON values; each secret (however deep) masked."""
    dumped = settings.model_dump(mode="json")  # pydantic writes a SecretStr as its mask
    return {f"{ENV_PREFIX}{name.upper()}": value for name, value in dumped.items()}


def lines(settings: EnrichSettings) -> list[str]:
    """`ENRICH_NAME=value` lines; values in JSON, as the variables take them."""
    out = []
    for name, value in effective(settings).items():
        text = value if isinstance(value, str) else json.dumps(value)
        out.append(f"{name}={text}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="enrich check",
        description="Validate the ENRICH_* settings and print the effective configuration, "
        f"secrets shown as {REDACTED}; connects to nothing.",
    )
    parser.add_argument(
        "--publisher",
        action="store_true",
        help="check the reference publisher's settings instead of the dataflow's",
    )
    args = parser.parse_args(argv)
    with exit_on_bad_settings():
        settings: EnrichSettings
        if args.publisher:
            settings = load_settings(PublisherSettings)
        else:
            settings = dataflow = load_settings(Settings)
            check_dataflow(dataflow)
    print("\n".join(lines(settings)))
    return 0
