"""HL7 v2 as French producers send it (ANS CI-SIS document transmission, PAM FR), through
the whole pipeline: one outcome per message with the right status, INS and type."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from pipeline.acks import ack_code, build_ack
from pipeline.ingest import ingest_sources
from pipeline.model import Reason, Status
from pipeline.settings import Settings

FR = Path(__file__).parent / "samples" / "hl7" / "fr"


def copy_samples(names: list[str], to: Path) -> Path:
    folder = to / "feed"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(FR / name, folder / name)
    return folder


def test_non_document_messages_are_rejected_unsupported_message_with_an_ae_ack(
        tmp_path: Path) -> None:
    folder = copy_samples(["09_not_documents.hl7"], tmp_path)
    summary = ingest_sources([str(folder)], Settings(data_dir=tmp_path / "carnet"))
    assert [o.source.rsplit("/", 1)[1] for o in summary.outcomes] == [
        f"09_not_documents.hl7#{n}" for n in (1, 2, 3, 4)]
    for outcome, kind in zip(summary.outcomes, ["ACK^R01", "ADT^A04", "QRY^A19", "ZAM^Z01"],
                             strict=True):
        assert outcome.status is Status.REJECTED
        assert [r.code for r in outcome.reasons] == [Reason.UNSUPPORTED_MESSAGE]
        assert kind in outcome.reasons[0].message
        assert ack_code(outcome) == "AE"
        ack = build_ack(outcome, receiving_facility="hopital", at=dt.datetime(2024, 1, 1))
        assert f"MSA|AE|{outcome.message_control_id}|" in ack and "unsupported_message" in ack
