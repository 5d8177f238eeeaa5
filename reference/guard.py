"""The mass-delete guard: a full load may not tombstone a large share of the topic unasked.

A full load tombstones every live key it did not publish, so a wrong filter,
a half-finished reload or the wrong table would empty the reference topic,
and the dataflow would then miss on every event. The guard is decided before
the first record is produced: over the share, nothing is published at all.
"""

from __future__ import annotations

from dataclasses import dataclass


class MassDeleteRefused(RuntimeError):
    """A full load would have tombstoned more than the allowed share; nothing was published."""

    def __init__(self, would_delete: int, live: int, max_share: float, published: int) -> None:
        self.fields = {
            "would_delete": would_delete,
            "live_keys": live,
            "max_delete_share": max_share,
            "published": published,
        }
        done = (
            "nothing was published"
            if not published
            else f"its {published:,} rows were published (the table changed while it was "
            "read) but no tombstone was sent"
        )
        super().__init__(
            f"refused: the full load would tombstone {would_delete:,} of the topic's {live:,} "
            f"live keys ({would_delete / live:.1%}), more than ENRICH_PUBLISH_MAX_DELETE_SHARE "
            f"({max_share:.1%}); {done}, and the watermark did not move. Check "
            "the table (a reload not finished?) and ENRICH_PUBLISH_TABLE / _FILTER / "
            "_SOFT_DELETE_COLUMN; if these deletes are meant, run again with "
            "--allow-mass-delete (or ENRICH_PUBLISH_ALLOW_MASS_DELETE=true)"
        )


@dataclass(frozen=True)
class DeleteGuard:
    """`max_share` of the live keys may be tombstoned by one full load; `allowed` lifts it."""

    max_share: float
    allowed: bool = False

    def over(self, would_delete: int, live: int) -> bool:
        """Whether the deletes exceed the share; an empty topic has nothing to lose."""
        return would_delete > self.max_share * live

    def check(self, would_delete: int, live: int, published: int = 0) -> None:
        """Raise MassDeleteRefused over the share unless allowed; `published`: rows already sent."""
        if self.over(would_delete, live) and not self.allowed:
            raise MassDeleteRefused(would_delete, live, self.max_share, published)
