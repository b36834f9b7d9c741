"""Quarantine: a rejected document's reasons kept beside its stored bytes (every attempt
recorded), and its release once a later run (a replay, a resend after a fix) accepts it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pipeline.crypto import patient_ref
from pipeline.ledger import Ledger
from pipeline.model import Outcome, Problem, Status
from pipeline.store import DocumentStore, QuarantineAttempt, QuarantineRecord


class Quarantine:
    """The quarantine records of one store; ``ref_key`` hashes the INS they name."""

    def __init__(self, store: DocumentStore, ledger: Ledger, ref_key: bytes) -> None:
        self.store = store
        self.ledger = ledger
        self._ref_key = ref_key

    def keep(
        self,
        producer: str,
        batch: str | None,
        source_ref: str,
        raw_sha: str,
        part: int | None,
        problems: Sequence[Problem],
        *,
        exception: str | None = None,
        patient_id: str | None = None,
        named: Sequence[str] = (),
    ) -> None:
        """Keep a rejected document's reasons beside its stored bytes, history included.

        ``named``: every INS the document names; kept as keyed hashes, so erasure finds the
        record by any of them without the record holding them in clear.
        """
        qid = QuarantineRecord.make_id(producer, source_ref, raw_sha)
        now = dt.datetime.now(dt.UTC)
        attempt = QuarantineAttempt(at=now, reasons=tuple(problems), exception=exception)
        previous = self.store.get_quarantine(qid)
        record = QuarantineRecord(
            quarantine_id=qid,
            source=source_ref,
            producer=producer,
            batch=batch,
            content_sha256=raw_sha,
            part=part,
            patient_id=patient_id,
            patient_refs=tuple(sorted({patient_ref(self._ref_key, n) for n in named})),
            reasons=tuple(problems),
            exception=exception,
            first_quarantined_at=previous.first_quarantined_at if previous else now,
            attempts=(previous.attempts if previous else ()) + (attempt,),
        )
        self.store.put_quarantine(record)

    def release(self, outcomes: Sequence[Outcome], raw_shas: dict[int, str]) -> None:
        """Take out of quarantine every document these outcomes accept (a replay, or a
        resend after a fix): an input ends in one state, not accepted and quarantined.

        ``raw_shas``: position in ``outcomes`` -> the input's raw bytes."""
        accepted: list[tuple[str, str, str]] = []  # (producer, source, raw sha)
        for i, o in enumerate(outcomes):
            if o.status is Status.REJECTED or i not in raw_shas or not o.producer:
                continue
            accepted.append((o.producer, o.source, raw_shas[i]))
            file_source, sep, part = o.source.rpartition("#")
            if sep and part.isdigit():
                # An HL7 file once rejected whole (nothing parsed) now yields messages: its
                # file-level record goes, each message having its own outcome now.
                accepted.append((o.producer, file_source, raw_shas[i]))
        if not accepted:
            return
        was_rejected = self.ledger.was_rejected(source for _, source, _ in accepted)
        for producer, source, raw_sha in dict.fromkeys(accepted):
            if source in was_rejected:
                self.store.remove_quarantine(QuarantineRecord.make_id(producer, source, raw_sha))
