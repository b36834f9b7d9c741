"""``generate_feed``: a synthetic producer feed written in the folder-feed layout
``root/<producer>/<batch>/<files>`` with the expected outcome of every document in it.

Batches are closed by a ``_READY`` marker, or by a ``_manifest.json`` for producers that
send one. Good documents are spread over producers and batches; with ``include_bad`` a
fixed set of problem documents is added (duplicates, new versions, identity errors,
broken and unsupported files), each with the status and reason codes Carnet must give it.
The same seed always writes the same bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from generator import formats
from generator.documents import (
    Report,
    biology_report,
    corrected_biology,
    imaging_report,
    prescription,
    revised_imaging,
)
from generator.people import (
    DEFAULT_PRODUCERS,
    Patient,
    Producer,
    ProducerKind,
    make_patients,
    with_professionals,
)
from pipeline.feeds import MANIFEST, READY_MARKER
from pipeline.model import DocClass, Format, Frozen, Reason, Status

log = logging.getLogger(__name__)

# Batches are spread over this window so every document date is in the past and after
# every patient's birth, whatever the seed or the number of batches.
FIRST_BATCH = dt.date(2024, 1, 8)
BATCH_WINDOW_DAYS = 540
DEFAULT_SCANS = 6

_BUILDERS: dict[ProducerKind, Callable[..., Report]] = {
    ProducerKind.LAB: biology_report,
    ProducerKind.RADIOLOGY: imaging_report,
    ProducerKind.GP: prescription,
    ProducerKind.HOSPITAL: biology_report,
}
# Formats each kind of producer sends, with their weights.
_FORMAT_MIX: dict[ProducerKind, tuple[tuple[str, int], ...]] = {
    ProducerKind.LAB: (("hl7", 3), ("pdf", 1)),
    ProducerKind.RADIOLOGY: (("cda", 2), ("pdf", 3)),
    ProducerKind.GP: (("pdf", 1),),
    ProducerKind.HOSPITAL: (("cda", 3), ("pdf", 2)),
}
_PRODUCER_WEIGHT = {
    ProducerKind.LAB: 3,
    ProducerKind.RADIOLOGY: 2,
    ProducerKind.GP: 2,
    ProducerKind.HOSPITAL: 2,
}
_SCAN_FORMATS = ("png", "tiff", "pdf")
# Expected documents added by the bad set (kept in step with ``_add_bad_documents``).
BAD_SET_SIZE = 21


class ExpectedDocument(Frozen):
    """One document of the feed and the outcome Carnet must give it.

    ``source_ref`` is the path relative to the feed root, with ``#n`` for the n-th
    message of an HL7 file. For rejected documents ``patient_id``, ``doc_class`` and
    ``type_code`` are None (Carnet files nothing); ``format`` is None for files no parser
    reads. ``replaced_by`` names the later version that supersedes this one.
    """

    source_ref: str
    producer: str
    batch: str
    format: Format | None
    patient_id: str | None
    doc_class: DocClass | None
    type_code: str | None
    expected_status: Status
    expected_reasons: tuple[str, ...] = ()
    key_terms: tuple[str, ...] = ()
    document_date: dt.date | None = None
    replaced_by: str | None = None


class GeneratedPatient(Frozen):
    ins: str
    family_name: str
    given_name: str
    sex: str
    birth_date: dt.date


class GeneratedFeed(Frozen):
    """What ``generate_feed`` wrote: the patients and every document's expected outcome."""

    root: str
    seed: int
    patients: tuple[GeneratedPatient, ...]
    documents: tuple[ExpectedDocument, ...]

    def write_jsonl(self, path: Path) -> None:
        """One JSON object per expected document."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as out:
            for doc in self.documents:
                out.write(doc.model_dump_json() + "\n")


@dataclass
class _Batch:
    producer: Producer
    name: str
    date: dt.date
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass
class _Good:
    """A good document planned for a producer and batch, before it is written."""

    producer: Producer
    batch: int
    fmt: str  # "pdf", "hl7", "cda", "scan-png", "scan-tiff", "scan-pdf"


class _FeedBuilder:
    def __init__(
        self,
        rng: random.Random,
        producers: list[Producer],
        patients: list[Patient],
        batches_per_producer: int,
    ) -> None:
        self.rng = rng
        self.producers = producers
        self.patients = patients
        self.batches: dict[str, list[_Batch]] = {}
        for p in producers:
            self.batches[p.producer_id] = [
                _Batch(p, f"{d:%Y-%m-%d}_{i + 1:03d}", d)
                for i, d in enumerate(_batch_dates(batches_per_producer))
            ]
        self.expected: list[ExpectedDocument] = []
        self._seq: dict[str, int] = {}
        self._prints = 0

    # -- helpers -----------------------------------------------------------------------

    def seq(self, producer: Producer) -> int:
        self._seq[producer.producer_id] = self._seq.get(producer.producer_id, 0) + 1
        return self._seq[producer.producer_id]

    def batch(self, producer: Producer, index: int) -> _Batch:
        return self.batches[producer.producer_id][index]

    def ipp(self, producer: Producer, patient: Patient) -> str:
        return f"{self.producers.index(producer) + 1}{self.patients.index(patient):06d}"

    def report(self, producer: Producer, batch: _Batch, patient: Patient | None = None) -> Report:
        patient = patient or self.rng.choice(self.patients)
        author = self.rng.choice(producer.professionals)
        date = batch.date - dt.timedelta(days=self.rng.randrange(1, 15))
        seq = self.seq(producer)
        order = f"{date:%y%m%d}{seq:05d}"
        return _BUILDERS[producer.kind](self.rng, patient, producer, author, date, order)

    def ins_line(self, patient: Patient) -> str:
        self._prints += 1
        return formats.patient_ins_line(patient, self._prints)

    def add(self, batch: _Batch, name: str, data: bytes) -> str:
        if name in batch.files:
            raise ValueError(f"file name {name!r} used twice in {batch.name}")
        batch.files[name] = data
        return f"{batch.producer.producer_id}/{batch.name}/{name}"

    def expect(
        self,
        ref: str,
        batch: _Batch,
        fmt: Format | None,
        status: Status,
        report: Report | None = None,
        reasons: tuple[Reason, ...] = (),
        replaced_by: str | None = None,
    ) -> None:
        filed = status is not Status.REJECTED and report is not None
        self.expected.append(
            ExpectedDocument(
                source_ref=ref,
                producer=batch.producer.producer_id,
                batch=batch.name,
                format=fmt,
                patient_id=report.patient.ins if filed and report else None,
                doc_class=report.doc_class if filed and report else None,
                type_code=report.type_code if filed and report else None,
                expected_status=status,
                expected_reasons=tuple(r.value for r in reasons),
                key_terms=report.key_terms if report else (),
                document_date=report.date if report else None,
                replaced_by=replaced_by,
            )
        )

    def doc_name(self, producer: Producer, report: Report, ext: str) -> str:
        prefix = {
            DocClass.BIOLOGY: "CR-BIO",
            DocClass.IMAGING: "CR-IMG",
            DocClass.PRESCRIPTION: "ORDONNANCE",
        }[report.doc_class]
        return f"{prefix}_{report.order_number}.{ext}"

    def cda(
        self, report: Report, *, version: int = 1, set_id: str | None = None, printed_ins: str | None = None
    ) -> tuple[bytes, str]:
        set_id = set_id or f"SET-{report.order_number}"
        data = formats.cda_document(
            report,
            doc_id=f"{report.order_number}-V{version}",
            set_id=set_id,
            version=version,
            ins=report.patient.ins,
            printed_ins=printed_ins,
            ipp=self.ipp(report.producer, report.patient),
        )
        return data, set_id

    def hl7(self, report: Report, ins: str | None = None) -> str:
        p = report.producer
        return formats.hl7_message(
            report,
            control_id=f"{''.join(w[0] for w in p.producer_id.split('-')).upper()}{self.seq(p):08d}",
            ipp=self.ipp(p, report.patient),
            ins=ins or report.patient.ins,
            sent_at=dt.datetime.combine(report.date, dt.time(20, 0)),
        )

    def hl7_file(self, batch: _Batch, messages: Sequence[str]) -> tuple[str, bytes]:
        p = batch.producer
        name = f"ORU_{batch.date:%Y%m%d}_{self.seq(p):05d}.hl7"
        return name, "".join(messages).encode(formats.hl7_encoding(p.hl7_charset))

    # -- good documents ----------------------------------------------------------------

    def add_good(self, plan: list[_Good]) -> None:
        hl7_groups: dict[tuple[str, int], list[Report]] = {}
        for item in plan:
            p, batch = item.producer, self.batch(item.producer, item.batch)
            if item.fmt == "hl7":
                hl7_groups.setdefault((p.producer_id, item.batch), []).append(self.report(p, batch))
                continue
            report = self.report(p, batch)
            if item.fmt == "pdf":
                ref = self.add(
                    batch,
                    self.doc_name(p, report, "pdf"),
                    formats.text_pdf(report, ins_line=self.ins_line(report.patient)),
                )
                self.expect(ref, batch, Format.PDF, Status.INDEXED, report)
            elif item.fmt == "cda":
                data, _ = self.cda(
                    report, printed_ins=self.ins_line(report.patient) if self.rng.random() < 0.5 else None
                )
                ref = self.add(batch, self.doc_name(p, report, "xml"), data)
                self.expect(ref, batch, Format.CDA, Status.INDEXED, report)
            else:
                page = formats.scan_page(
                    report, ins_line=formats.ins_print(report.patient.ins, ("INS :", "spaced"))
                )
                kind = item.fmt.removeprefix("scan-")
                stem = f"SCAN_{report.order_number}"
                if kind == "png":
                    ref = self.add(batch, f"{stem}.png", formats.png(page))
                    fmt = Format.IMAGE
                elif kind == "tiff":
                    ref = self.add(batch, f"{stem}.tif", formats.tiff(page))
                    fmt = Format.IMAGE
                else:
                    ref = self.add(batch, f"{stem}.pdf", formats.scanned_pdf(page, title=report.title))
                    fmt = Format.PDF
                # OCR may misread a rare word: the class's everyday word is searched first.
                terms = report.key_terms[-1:] + report.key_terms[:-1]
                self.expect(ref, batch, fmt, Status.INDEXED, replace(report, key_terms=terms))
        for (producer_id, index), reports in hl7_groups.items():
            batch = self.batches[producer_id][index]
            while reports:
                size = self.rng.randrange(1, 4)  # producers send 1 to 3 messages per file
                group, reports = reports[:size], reports[size:]
                name, data = self.hl7_file(batch, [self.hl7(r) for r in group])
                ref = self.add(batch, name, data)
                for n, r in enumerate(group, start=1):
                    self.expect(f"{ref}#{n}", batch, Format.HL7V2, Status.INDEXED, r)

    # -- problem documents -------------------------------------------------------------

    def add_bad(self) -> None:
        rng = self.rng
        lab = self.of_kind(ProducerKind.LAB)
        lab2 = self.of_kind(ProducerKind.LAB, skip=lab)
        radio = self.of_kind(ProducerKind.RADIOLOGY)
        gp = self.of_kind(ProducerKind.GP)
        hosp = self.of_kind(ProducerKind.HOSPITAL)
        n = len(self.batches[lab.producer_id])
        first, last = 0, n - 1

        def anywhere(p: Producer) -> _Batch:
            return self.batch(p, rng.randrange(n))

        # A byte-identical copy of an earlier PDF and of an earlier CDA, in a later batch.
        b0, b1 = self.batch(gp, first), self.batch(gp, last)
        r = self.report(gp, b0)
        data = formats.text_pdf(r, ins_line=self.ins_line(r.patient))
        self.expect(self.add(b0, self.doc_name(gp, r, "pdf"), data), b0, Format.PDF, Status.INDEXED, r)
        self.expect(
            self.add(b1, f"RENVOI_{self.doc_name(gp, r, 'pdf')}", data), b1, Format.PDF, Status.DUPLICATE, r
        )
        b0, b1 = self.batch(radio, first), self.batch(radio, last)
        r = self.report(radio, b0)
        data, _ = self.cda(r)
        self.expect(self.add(b0, self.doc_name(radio, r, "xml"), data), b0, Format.CDA, Status.INDEXED, r)
        self.expect(
            self.add(b1, f"RENVOI_{self.doc_name(radio, r, 'xml')}", data),
            b1,
            Format.CDA,
            Status.DUPLICATE,
            r,
        )

        # CDA version 2 (same setId, changed content) replaces version 1.
        r = self.report(radio, b0)
        v1, set_id = self.cda(r)
        r2 = revised_imaging(r)
        v2, _ = self.cda(r2, version=2, set_id=set_id)
        name = self.doc_name(radio, r, "xml")
        ref1 = self.add(b0, name, v1)
        ref2 = self.add(b1, name.replace(".xml", "_V2.xml"), v2)
        self.expect(ref1, b0, Format.CDA, Status.INDEXED, r, replaced_by=ref2)
        self.expect(ref2, b1, Format.CDA, Status.REPLACED, r2)

        # HL7 correction (same OBR-3 filler order number, OBR-25 = C) replaces the original.
        b0, b1 = self.batch(lab, first), self.batch(lab, last)
        r = self.report(lab, b0)
        name, data = self.hl7_file(b0, [self.hl7(r)])
        ref_orig = self.add(b0, name, data)
        rc = corrected_biology(rng, r)
        name, data = self.hl7_file(b1, [self.hl7(rc)])
        ref_corr = self.add(b1, name, data)
        self.expect(f"{ref_orig}#1", b0, Format.HL7V2, Status.INDEXED, r, replaced_by=f"{ref_corr}#1")
        self.expect(f"{ref_corr}#1", b1, Format.HL7V2, Status.REPLACED, rc)

        # Identity problems.
        b = anywhere(gp)
        r = self.report(gp, b)
        self.expect(
            self.add(b, self.doc_name(gp, r, "pdf"), formats.text_pdf(r, ins_line=None)),
            b,
            Format.PDF,
            Status.REJECTED,
            r,
            (Reason.MISSING_INS,),
        )
        b = anywhere(lab)
        r = self.report(lab, b)
        pdf = formats.text_pdf(r, ins_line=formats.ins_print(r.patient.bad_ins, ("INS :", "spaced")))
        self.expect(
            self.add(b, self.doc_name(lab, r, "pdf"), pdf),
            b,
            Format.PDF,
            Status.REJECTED,
            r,
            (Reason.INVALID_INS_KEY,),
        )
        b = anywhere(lab2)
        r = self.report(lab2, b)
        name, data = self.hl7_file(b, [self.hl7(r, ins=r.patient.bad_ins)])
        self.expect(
            f"{self.add(b, name, data)}#1", b, Format.HL7V2, Status.REJECTED, r, (Reason.INVALID_INS_KEY,)
        )
        b = anywhere(hosp)
        r = self.report(hosp, b)
        other = next(p for p in self.patients if p is not r.patient)
        data, _ = self.cda(r, printed_ins=formats.ins_print(other.ins, ("INS :", "spaced")))
        self.expect(
            self.add(b, self.doc_name(hosp, r, "xml"), data),
            b,
            Format.CDA,
            Status.REJECTED,
            r,
            (Reason.IDENTITY_CONFLICT,),
        )

        # An HL7 file whose middle message is broken: the other two are filed.
        b = anywhere(lab)
        r1, r3 = self.report(lab, b), self.report(lab, b)
        name, data = self.hl7_file(b, [self.hl7(r1), formats.broken_hl7_message(), self.hl7(r3)])
        ref = self.add(b, name, data)
        self.expect(f"{ref}#1", b, Format.HL7V2, Status.INDEXED, r1)
        self.expect(f"{ref}#2", b, Format.HL7V2, Status.REJECTED, None, (Reason.PARSE_ERROR,))
        self.expect(f"{ref}#3", b, Format.HL7V2, Status.INDEXED, r3)

        # Files that cannot be read.
        b = anywhere(radio)
        r = self.report(radio, b)
        pdf = formats.truncated(formats.text_pdf(r, ins_line=self.ins_line(r.patient)))
        self.expect(
            self.add(b, self.doc_name(radio, r, "pdf"), pdf),
            b,
            Format.PDF,
            Status.REJECTED,
            r,
            (Reason.PARSE_ERROR,),
        )
        b = anywhere(hosp)
        r = self.report(hosp, b)
        pdf = formats.text_pdf(r, ins_line=self.ins_line(r.patient), password="confidentiel")
        self.expect(
            self.add(b, self.doc_name(hosp, r, "pdf"), pdf),
            b,
            Format.PDF,
            Status.REJECTED,
            r,
            (Reason.ENCRYPTED_DOCUMENT,),
        )
        b = anywhere(gp)
        self.expect(
            self.add(b, "ORDONNANCE_vide.pdf", b""),
            b,
            None,
            Status.REJECTED,
            None,
            (Reason.EMPTY_DOCUMENT,),
        )
        b = anywhere(lab2)
        self.expect(
            self.add(b, f"export_{self.seq(lab2):05d}.bin", formats.random_bytes(rng)),
            b,
            None,
            Status.REJECTED,
            None,
            (Reason.UNSUPPORTED_FORMAT,),
        )
        b = anywhere(gp)
        self.expect(
            self.add(
                b,
                "courrier_patient.docx",
                formats.office_document("Courrier de liaison : merci de recevoir ce patient."),
            ),
            b,
            None,
            Status.REJECTED,
            None,
            (Reason.UNSUPPORTED_FORMAT,),
        )
        b = anywhere(radio)
        self.expect(
            self.add(b, f"SCAN_{self.seq(radio):05d}_vierge.png", formats.png(formats.blank_page())),
            b,
            Format.IMAGE,
            Status.REJECTED,
            None,
            (Reason.UNREADABLE_SCAN,),
        )

    def of_kind(self, kind: ProducerKind, skip: Producer | None = None) -> Producer:
        """The first producer of ``kind`` (another one than ``skip`` when there is one)."""
        matching = [p for p in self.producers if p.kind is kind]
        others = [p for p in matching if p is not skip]
        return (others or matching or self.producers)[0]

    # -- writing -----------------------------------------------------------------------

    def write(self, root: Path) -> None:
        for batches in self.batches.values():
            for batch in batches:
                if not batch.files:
                    continue  # an empty batch is never sent
                folder = root / batch.producer.producer_id / batch.name
                folder.mkdir(parents=True, exist_ok=True)
                for name, data in sorted(batch.files.items()):
                    (folder / name).write_bytes(data)
                # The marker comes last, as a producer closes a batch once uploaded.
                if batch.producer.uses_manifest:
                    files = [
                        {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                        for name, data in sorted(batch.files.items())
                    ]
                    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=2) + "\n")
                else:
                    (folder / READY_MARKER).write_bytes(b"")


def _batch_dates(count: int) -> list[dt.date]:
    step = BATCH_WINDOW_DAYS / max(count, 1)
    return [FIRST_BATCH + dt.timedelta(days=int(i * step)) for i in range(count)]


def _plan(rng: random.Random, producers: list[Producer], good: int, scans: int, batches: int) -> list[_Good]:
    """Which producer, batch and format each good document gets."""
    plan: list[_Good] = []
    scanners = [p for p in producers if p.kind in (ProducerKind.RADIOLOGY, ProducerKind.GP)]
    n_scans = min(scans, good) if scanners else 0
    for i in range(n_scans):
        plan.append(
            _Good(
                scanners[i % len(scanners)],
                rng.randrange(batches),
                f"scan-{_SCAN_FORMATS[i % len(_SCAN_FORMATS)]}",
            )
        )
    weights = [_PRODUCER_WEIGHT[p.kind] for p in producers]
    for i in range(good - n_scans):
        # Every producer sends at least one document before the weights take over.
        p = producers[i] if i < len(producers) else rng.choices(producers, weights)[0]
        mix = _FORMAT_MIX[p.kind]
        fmt = rng.choices([f for f, _ in mix], [w for _, w in mix])[0]
        plan.append(_Good(p, rng.randrange(batches), fmt))
    return plan


def generate_feed(
    root: Path,
    *,
    seed: int = 42,
    patients: int = 30,
    documents: int = 120,
    producers: Sequence[Producer] | None = None,
    batches_per_producer: int = 2,
    include_bad: bool = True,
    scans: int | None = None,
) -> GeneratedFeed:
    """Write a synthetic feed under ``root`` and return every document's expected outcome.

    ``documents`` counts expected documents (an HL7 message is one); with ``include_bad``
    it includes the fixed bad set. ``scans`` (default 6 with the bad set, 0 without)
    good documents are scans, which OCR reads slowly.
    """
    root = Path(root)
    chosen = list(producers or DEFAULT_PRODUCERS)
    if patients < 2:
        raise ValueError("patients must be at least 2")
    if batches_per_producer < 1 or (include_bad and batches_per_producer < 2):
        raise ValueError("batches_per_producer must be at least 2 with include_bad (1 without)")
    bad = BAD_SET_SIZE if include_bad else 0
    if documents < bad + len(chosen):
        raise ValueError(f"documents must be at least {bad + len(chosen)} for this feed")
    scans = (DEFAULT_SCANS if include_bad else 0) if scans is None else scans
    rng = random.Random(seed)
    chosen = [with_professionals(p, rng) for p in chosen]
    people = make_patients(rng, patients, reference=FIRST_BATCH - dt.timedelta(days=30))
    builder = _FeedBuilder(rng, chosen, people, batches_per_producer)
    if include_bad:
        builder.add_bad()
    builder.add_good(_plan(rng, chosen, documents - bad, scans, batches_per_producer))
    builder.write(root)
    expected = tuple(sorted(builder.expected, key=lambda e: _ref_key(e.source_ref)))
    log.info("generated %d documents under %s (seed %d)", len(expected), root, seed)
    return GeneratedFeed(
        root=str(root),
        seed=seed,
        patients=tuple(
            GeneratedPatient(
                ins=p.ins,
                family_name=p.family_name,
                given_name=p.given_name,
                sex=p.sex,
                birth_date=p.birth_date,
            )
            for p in people
        ),
        documents=expected,
    )


def _ref_key(ref: str) -> tuple[str, int]:
    path, _, part = ref.partition("#")
    return path, int(part or 0)
