"""Ingest-level guarantees that do not need a generated feed."""

from __future__ import annotations

from pathlib import Path

from pipeline.ingest import ingest_sources
from pipeline.model import Reason, Status
from pipeline.settings import Settings


def test_a_file_with_no_document_inside_is_still_accounted_for(tmp_path: Path) -> None:
    # An HL7 batch envelope with no message in it: sniffed as HL7, yet holds nothing.
    empty_batch = tmp_path / "in" / "empty.hl7"
    empty_batch.parent.mkdir()
    empty_batch.write_bytes(b"FHS|^~\\&|LAB|LAB\rBHS|^~\\&|LAB|LAB\rBTS|0\rFTS|1\r")
    summary = ingest_sources([str(empty_batch.parent)], Settings(data_dir=tmp_path / "carnet"))
    assert len(summary.outcomes) == 1
    outcome = summary.outcomes[0]
    assert outcome.status is Status.REJECTED and outcome.source == str(empty_batch)
    assert outcome.reasons and outcome.reasons[0].code in {Reason.EMPTY_DOCUMENT, Reason.PARSE_ERROR}


class _FindsNothing:
    """A parser that accepts a file yet returns no document (what a buggy parser may do)."""

    name = "finds-nothing"

    def score(self, head: bytes) -> int:
        return 1

    def parse(self, data: bytes, *, source: str) -> list:
        return []


def test_no_document_vanishes_even_when_a_parser_returns_nothing(tmp_path: Path) -> None:
    from parsers.registry import ParserRegistry
    from pipeline.ingest import InputFile, Pipeline

    settings = Settings(data_dir=tmp_path / "carnet")
    with Pipeline(settings, registry=ParserRegistry([_FindsNothing()])) as pipe:
        outcomes = pipe.process(InputFile(data=b"something", source="x.bin", producer="p"))
    assert [(o.status, o.reasons[0].code) for o in outcomes] == [(Status.REJECTED, Reason.EMPTY_DOCUMENT)]


def test_unreadable_source_is_an_error_not_an_empty_run(tmp_path: Path) -> None:
    import pytest

    from pipeline.errors import SourceError

    with pytest.raises(SourceError):
        ingest_sources([str(tmp_path / "missing")], Settings(data_dir=tmp_path / "carnet"))
