"""Chains of lookups, driven through the pure steps: each lookup's enricher, then `advance`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from operators.chain import Stage, advance, finish
from operators.enrichment import EnrichConfig, Output, ShardEnricher
from operators.records import (
    DeadLetter,
    Event,
    Joined,
    MissReason,
    Outcome,
    RefUpdate,
    Status,
)

SECURITY = Stage("security", ("name", "exchange_id"))
EXCHANGE = Stage("exchange", ("exchange_country",))
COUNTRY = Stage("country", ("region",))


def quote(event_id: str, security_id: str) -> Event:
    fields = {"event_id": event_id, "security_id": security_id, "price": 1.0}
    return Event(event_id, security_id, None, fields, f"events/0/{event_id}")


def row(key: str, *values: Any, version: int = 1) -> RefUpdate:
    return RefUpdate(key, values, version, f"refs/{key}")


@dataclass
class Chain:
    """Lookups in order, each with its stage, enricher and the key field of the next one."""

    stages: list[tuple[Stage, ShardEnricher, str | None]]
    out: list[Joined] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)

    def feed(self, index: int, items: list[Event | RefUpdate], now: float) -> None:
        self._pass_on(index, self.stages[index][1].process(items, now), now)

    def expire(self, now: float) -> None:
        for index, (_, enricher, _) in enumerate(self.stages):
            self._pass_on(index, enricher.expire(now), now)

    def _pass_on(self, index: int, outputs: list[Output], now: float) -> None:
        stage, _, next_key = self.stages[index]
        handed: list[Event | RefUpdate] = []
        for rec in outputs:
            if type(rec) is DeadLetter:
                self.dead.append(rec)
            elif next_key is None:
                earlier = tuple(c for s, _, _ in self.stages[:-1] for c in s.columns)
                self.out.append(finish(rec, stage, earlier, "security_id"))
            else:
                handed.append(advance(rec, stage, next_key))
        if handed:
            self.feed(index + 1, handed, now)


def config(stage: Stage, **changes: Any) -> EnrichConfig:
    """Ten seconds to wait, and a defaults row as wide as the stage's columns."""
    return EnrichConfig(
        **{"timeout_seconds": 10.0, "defaults": (None,) * len(stage.columns), **changes}
    )


def two_stage(**exchange: Any) -> Chain:
    return Chain(
        [
            (SECURITY, ShardEnricher(config(SECURITY)), "exchange_id"),
            (EXCHANGE, ShardEnricher(config(EXCHANGE, **exchange)), None),
        ]
    )


def test_advance_adds_the_row_and_keys_the_event_by_the_next_field() -> None:
    rec = Joined(quote("q1", "S1"), ("Acme", "XLON", 3), 3, Status.ENRICHED, None, 0.0)
    event = advance(rec, SECURITY, "exchange_id")
    assert event.lookup_id == "XLON"
    assert event.fields["name"] == "Acme"
    assert event.fields["price"] == 1.0
    assert event.stages == (Outcome("security", Status.ENRICHED, None, 0.0, 3),)
    assert "name" not in rec.event.fields, "the earlier record is left as it was"


def test_advance_gives_an_empty_key_when_the_next_key_is_missing_or_unusable() -> None:
    missed = Joined(quote("q1", "S1"), None, None, Status.LOOKUP_MISS, MissReason.TIMEOUT, 5.0)
    assert advance(missed, SECURITY, "exchange_id").lookup_id == ""
    flagged = Joined(quote("q2", "S1"), ("Acme", True, 1), 1, Status.ENRICHED, None, 0.0)
    assert advance(flagged, SECURITY, "exchange_id").lookup_id == ""
    numbered = Joined(quote("q3", "S1"), ("Acme", 44, 1), 1, Status.ENRICHED, None, 0.0)
    assert advance(numbered, SECURITY, "exchange_id").lookup_id == "44"


def test_two_stages_hit_and_the_record_holds_both_rows_and_outcomes() -> None:
    chain = two_stage()
    chain.feed(1, [row("XLON", "GB", version=7)], 0.0)
    chain.feed(0, [row("S1", "Acme", "XLON", version=3), quote("q1", "S1")], 1.0)
    (rec,) = chain.out
    assert rec.event.lookup_id == "S1", "the record is about the first lookup's id"
    assert rec.row == ("Acme", "XLON", "GB", 3)
    assert (rec.status, rec.version, rec.waited_ms) == (Status.ENRICHED, 3, 0.0)
    assert rec.event.stages == (
        Outcome("security", Status.ENRICHED, None, 0.0, 3),
        Outcome("exchange", Status.ENRICHED, None, 0.0, 7),
    )


def test_an_event_waiting_in_stage_two_was_already_enriched_by_stage_one() -> None:
    chain = two_stage()
    chain.feed(0, [row("S1", "Acme", "XLON"), quote("q1", "S1")], 1.0)
    assert chain.out == []
    (waiting,) = chain.stages[1][1].waiting()
    assert waiting.event.fields["name"] == "Acme"
    assert waiting.event.stages[0].status is Status.ENRICHED
    chain.feed(1, [row("XLON", "GB")], 1.25)
    (rec,) = chain.out
    assert rec.status is Status.LATE_ENRICHED
    assert rec.waited_ms == 250.0
    assert [s.status for s in rec.event.stages] == [Status.ENRICHED, Status.LATE_ENRICHED]


def test_timeouts_and_policies_are_per_stage() -> None:
    chain = two_stage(timeout_seconds=0.5, miss_policy="defaults", defaults=("ZZ",))
    chain.feed(0, [row("S1", "Acme", "XNOWHERE"), quote("q1", "S1")], 1.0)
    chain.expire(1.4)
    assert chain.out == [], "stage two's own timeout has not passed yet"
    chain.expire(1.5)
    (rec,) = chain.out
    assert rec.row == ("Acme", "XNOWHERE", "ZZ", 1)
    assert (rec.status, rec.miss_reason) == (Status.LOOKUP_MISS, MissReason.TIMEOUT)
    assert [s.status for s in rec.event.stages] == [Status.ENRICHED, Status.LOOKUP_MISS]


def test_a_miss_in_stage_one_leaves_stage_two_without_a_key() -> None:
    chain = two_stage(miss_policy="dead_letter")
    chain.feed(0, [quote("q1", "S404")], 1.0)
    chain.expire(11.0)
    assert chain.out == []
    (letter,) = chain.dead
    assert letter.reason == "lookup_miss"
    assert "missing_key" in letter.detail


def test_a_missing_key_is_a_miss_at_once_under_the_stage_policy() -> None:
    enricher = ShardEnricher(config(EXCHANGE, miss_policy="defaults", defaults=("ZZ",)))
    event = quote("q1", "S1")._replace(lookup_id="")
    (rec,) = enricher.process([event], 2.0)
    assert (rec.status, rec.miss_reason, rec.row) == (
        Status.LOOKUP_MISS,
        MissReason.MISSING_KEY,
        ("ZZ", None),
    )
    assert enricher.snapshot() == []


def test_a_stage_one_update_changes_the_key_stage_two_uses() -> None:
    chain = two_stage()
    chain.feed(1, [row("XLON", "GB"), row("XPAR", "FR")], 0.0)
    chain.feed(0, [row("S1", "Acme", "XLON", version=1), quote("q1", "S1")], 1.0)
    chain.feed(0, [row("S1", "Acme", "XPAR", version=2), quote("q2", "S1")], 2.0)
    assert [(r.event.event_id, r.row) for r in chain.out] == [
        ("q1", ("Acme", "XLON", "GB", 1)),
        ("q2", ("Acme", "XPAR", "FR", 2)),
    ]


def test_three_stages_chain_on_columns_of_the_stage_before() -> None:
    chain = Chain(
        [
            (SECURITY, ShardEnricher(config(SECURITY)), "exchange_id"),
            (EXCHANGE, ShardEnricher(config(EXCHANGE)), "exchange_country"),
            (COUNTRY, ShardEnricher(config(COUNTRY, join_type="inner")), None),
        ]
    )
    chain.feed(2, [row("GB", "EMEA")], 0.0)
    chain.feed(1, [row("XLON", "GB"), row("XTKS", "JP")], 0.0)
    chain.feed(0, [row("S1", "Acme", "XLON"), row("S2", "Nippon", "XTKS")], 0.0)
    chain.feed(0, [quote("q1", "S1"), quote("q2", "S2")], 1.0)
    (rec,) = chain.out
    assert rec.row == ("Acme", "XLON", "GB", "EMEA", 1)
    assert [s.lookup for s in rec.event.stages] == ["security", "exchange", "country"]
    chain.expire(12.0)
    assert [r.event.event_id for r in chain.out] == ["q1"], "the inner join keeps q2 out"


def test_one_stage_keeps_its_record_and_adds_its_outcome() -> None:
    rec = Joined(quote("q1", "S1"), ("Acme", "XLON", 3), 3, Status.ENRICHED, None, 0.0)
    done = finish(rec, SECURITY, (), "security_id")
    assert done._replace(event=rec.event) == rec
    assert done.event.stages == (Outcome("security", Status.ENRICHED, None, 0.0, 3),)
