"""Replay of quarantined documents after a parser fix or a rule change.

Quarantine records are selected by producer, reason code, quarantine date and/or their
quarantine ids (an id the quarantine does not hold is an error: the record may have been
released or purged meanwhile); each raw
file is run through the pipeline again once (an HL7 file's messages together). A document
that now passes leaves quarantine; one that fails again keeps its record, with the new
attempt appended to its history. One refused before its content was judged (a link,
an unreadable file, a manifest mismatch: ``NOT_REPLAYABLE``) is left as it is, named as
such: the producer must send it again. One whose bytes no key opens any more (its patient's
key destroyed) keeps its record and is not replayed. A document released that came in a
feed batch has that batch's report entry and ACK rewritten (``acknowledge_replay``).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import defaultdict

from pydantic import field_validator, model_validator

from pipeline.acks import Header, looks_like_hl7, message_headers
from pipeline.errors import UnknownQuarantineRecord
from pipeline.feeds import printable_name
from pipeline.ingest.batch import acknowledge_replay
from pipeline.ingest.run import Pipeline
from pipeline.ingest.stages import InputFile
from pipeline.model import Frozen, Outcome, Reason, Status
from pipeline.settings import Settings
from pipeline.store import QuarantineRecord

log = logging.getLogger(__name__)

_QUARANTINE_ID = re.compile(r"[0-9a-f]{32}")


def is_quarantine_id(value: str) -> bool:
    """Whether ``value`` has the form of a quarantine id (``QuarantineRecord.make_id``)."""
    return bool(_QUARANTINE_ID.fullmatch(value))


class ReplayFilter(Frozen):
    """Which quarantine records to replay. A selection that can match nothing (an unknown
    reason code, a window ending before it starts) is refused, not run empty."""

    producer: str | None = None
    reason: Reason | None = None
    since: dt.date | None = None
    until: dt.date | None = None
    ids: tuple[str, ...] = ()  # quarantine ids (``QuarantineRecord.quarantine_id``)

    @field_validator("ids")
    @classmethod
    def _ids(cls, ids: tuple[str, ...]) -> tuple[str, ...]:
        for qid in ids:
            if not is_quarantine_id(qid):
                raise ValueError(f"not a quarantine id (32 hex digits): {qid!r}")
        return ids

    @model_validator(mode="after")
    def _window(self) -> ReplayFilter:
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError(f"since {self.since} is after until {self.until}: no day is in that window")
        return self

    def matches(self, q: QuarantineRecord) -> bool:
        day = q.first_quarantined_at.date()
        return (
            (not self.ids or q.quarantine_id in self.ids)
            and (self.producer is None or q.producer == self.producer)
            and (self.reason is None or any(r.code is self.reason for r in q.reasons))
            and (self.since is None or day >= self.since)
            and (self.until is None or day <= self.until)
        )


# Refused before their content was judged: a link or special file never read, a file
# Carnet could not read (no bytes kept), bytes that disagree with their batch manifest
# (which the producer never vouched for). Replaying the kept bytes cannot redo that check:
# their fix is the producer's new drop.
NOT_REPLAYABLE = frozenset({Reason.UNSAFE_PATH, Reason.UNREADABLE_FILE, Reason.MANIFEST_MISMATCH})


def replayable(q: QuarantineRecord) -> bool:
    """Whether a replay can decide this record again (see ``NOT_REPLAYABLE``)."""
    return not any(r.code in NOT_REPLAYABLE for r in q.reasons if r.blocking)


class ReplayResult(Frozen):
    selected: tuple[QuarantineRecord, ...]
    released: tuple[str, ...] = ()  # quarantine ids that now pass
    still_rejected: tuple[str, ...] = ()
    not_replayable: tuple[str, ...] = ()  # kept as they are: the producer must send them again
    outcomes: tuple[Outcome, ...] = ()
    dry_run: bool = False


def _file_source(q: QuarantineRecord) -> str:
    return q.source if q.part is None else q.source.rsplit("#", 1)[0]


def _acknowledge(
    settings: Settings, pipe: Pipeline, released: list[QuarantineRecord], headers: dict[str, Header]
) -> None:
    """Rewrite the report and ACKs of each feed batch a released record came in."""
    by_batch: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
    outcomes = [o for o in pipe.outcomes if o.status is not Status.REJECTED]
    for q in released:
        if q.batch is None:  # a folder given to ``carnet ingest``: no report to rewrite
            continue
        # A file rejected whole may now be messages ("file#n"), each its own entry.
        whole = f"{q.source}#" if q.part is None else None
        by_batch[(q.producer, q.batch)] += [
            o for o in outcomes if o.source == q.source or (whole and o.source.startswith(whole))
        ]
    for (producer, batch), found in by_batch.items():
        acknowledge_replay(settings, pipe.ledger, producer, batch, found, headers)


def replay_quarantine(settings: Settings, selection: ReplayFilter, *, dry_run: bool = False) -> ReplayResult:
    """Reprocess the quarantined documents ``selection`` matches (or only list them).
    Raises ``UnknownQuarantineRecord`` when an id it names is not in the quarantine."""
    with Pipeline(settings) as pipe:
        held = list(pipe.store.list_quarantine())
        unknown = sorted(set(selection.ids) - {q.quarantine_id for q in held})
        if unknown:
            raise UnknownQuarantineRecord(f"no quarantine record with the id {', '.join(unknown)}")
        selected = tuple(q for q in held if selection.matches(q))
        if dry_run:
            return ReplayResult(selected=selected, dry_run=True)
        run_id = pipe.start_run("replay", selection.model_dump_json(exclude_none=True), exclusive=True)
        by_file: dict[tuple[str, str, str], list[QuarantineRecord]] = defaultdict(list)
        not_replayable = tuple(q.quarantine_id for q in selected if not replayable(q))
        for q in selected:
            if not replayable(q):
                log.warning(
                    "quarantined input %s (%s): refused before its content was judged; not "
                    "replayed, the producer must send it again",
                    q.quarantine_id,
                    ", ".join(r.code.value for r in q.reasons),
                )
                continue
            by_file[(q.content_sha256, q.producer, _file_source(q))].append(q)
        released, still = [], []
        headers: dict[str, Header] = {}
        for (sha, producer, source), records in by_file.items():
            try:
                data = pipe.store.get(sha)
            except KeyError:
                # Its patient's key destroyed (crypto-shredding): no key opens these bytes
                # any more. The record stays for the operator; the other inputs replay.
                log.warning(
                    "quarantined input %s: no key opens its bytes (shredded); not replayed",
                    ", ".join(q.quarantine_id for q in records),
                )
                continue
            # Messages selected one by one: only they are decided again; a record of the whole
            # file (nothing of it read then) replays all of it.
            numbers = [q.part for q in records]
            parts = frozenset(n for n in numbers if n is not None) if None not in numbers else None
            pipe.process(
                InputFile(data=data, source=source, producer=producer, batch=records[0].batch, parts=parts)
            )
            if records[0].batch is not None and looks_like_hl7(data):
                for n, header in enumerate(message_headers(data), start=1):
                    if header is not None:  # what a rewritten ACK echoes
                        headers[f"{printable_name(source)}#{n}"] = header
        pipe.flush()
        accepted = {o.source for o in pipe.outcomes if o.status is not Status.REJECTED}
        # A file rejected whole (q.part None) may now yield messages, sources "file#n".
        accepted_files = {s.rpartition("#")[0] for s in accepted if "#" in s}
        for q in selected:
            if q.quarantine_id in not_replayable:
                continue
            if q.source in accepted or (q.part is None and q.source in accepted_files):
                pipe.store.remove_quarantine(q.quarantine_id)  # if the flush has not already
                released.append(q.quarantine_id)
            else:
                still.append(q.quarantine_id)
        pipe.sync()  # the producers are told only what a power cut cannot take back
        _acknowledge(settings, pipe, [q for q in selected if q.quarantine_id in released], headers)
        pipe.ledger.finish_run(run_id, pipe.metrics(), reported=True, took_over=pipe.took_over)
        return ReplayResult(
            selected=selected,
            released=tuple(released),
            still_rejected=tuple(still),
            not_replayable=not_replayable,
            outcomes=tuple(pipe.outcomes),
        )
