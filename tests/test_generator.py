"""The synthetic feed generator: deterministic, standard files, and an expected outcome
for every document in it. Checked with independent readers (pypdf, ElementTree, Pillow,
python-stdnum, tesseract), never with Carnet's own parsers."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfReader
from stdnum.fr import nir

from generator import ExpectedDocument, GeneratedFeed, generate_feed
from generator.people import format_ins, nir_key, wrong_key

V3 = "{urn:hl7-org:v3}"
INS_OID = "1.2.250.1.213.1.4.8"
CONTROL = {"_READY", "_manifest.json"}


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GeneratedFeed]:
    root = tmp_path_factory.mktemp("gen") / "feed"
    return root, generate_feed(root, seed=7, patients=12, documents=60, scans=3)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _by_reason(generated: GeneratedFeed, reason: str) -> list[ExpectedDocument]:
    return [d for d in generated.documents if reason in d.expected_reasons]


def _pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def _compact(text: str) -> str:
    return re.sub(r"[\s\-]", "", text)


def _hl7_messages(data: bytes) -> list[str]:
    """Messages of an HL7 file: each starts at a segment named MSH."""
    text = data.decode("latin-1")
    starts = [m.start() for m in re.finditer(r"(?:^|\r)MSH", text)]
    starts = [s + 1 if text[s] == "\r" else s for s in starts]
    return [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)], strict=True)]


def _field(segment: str, n: int) -> str:
    fields = segment.split("|")
    # MSH-1 is the separator itself, so MSH fields sit one place to the left.
    index = n - 1 if segment.startswith("MSH") else n
    return fields[index] if index < len(fields) else ""


# -- determinism ---------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_feed(tmp_path: Path) -> None:
    a = generate_feed(tmp_path / "a", seed=3, patients=6, documents=40, scans=1)
    b = generate_feed(tmp_path / "b", seed=3, patients=6, documents=40, scans=1)
    c = generate_feed(tmp_path / "c", seed=4, patients=6, documents=40, scans=1)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert a.documents == b.documents and a.patients == b.patients
    assert _files(tmp_path / "a") != _files(tmp_path / "c")
    assert [p.ins for p in a.patients] != [p.ins for p in c.patients]


# -- identities ----------------------------------------------------------------------------


def test_patients_have_valid_consistent_ins_with_corsica_and_minors(feed) -> None:
    _, generated = feed
    patients = generated.patients
    assert len({p.ins for p in patients}) == len(patients) == 12
    for p in patients:
        assert nir.is_valid(p.ins), p
        assert p.ins[0] == ("1" if p.sex == "M" else "2")
        assert p.ins[1:5] == f"{p.birth_date:%y%m}"
    assert {p.ins[5:7] for p in patients} >= {"2A", "2B"}
    assert sum(p.birth_date.year >= 2008 for p in patients) >= 2
    ins = {p.ins for p in patients}
    for doc in generated.documents:
        if doc.patient_id is not None:
            assert doc.patient_id in ins and nir.is_valid(doc.patient_id)


def test_key_and_print_helpers_agree_with_stdnum() -> None:
    assert nir_key("2840575123456") == nir.calc_check_digits("2840575123456")
    assert nir.is_valid("172032A045012" + nir_key("172032A045012"))
    assert not nir.is_valid("172032A045012" + wrong_key("172032A045012"))
    ins = "284057512345678"
    assert format_ins(ins, "spaced") == "2 84 05 75 123 456 78"
    assert format_ins(ins, "compact") == ins
    assert format_ins(ins, "dashed") == "2 84 05 75 123 456 - 78"
    assert format_ins(ins, "wide-key") == "2 84 05 75 123 456  78"
    assert format_ins(ins, "nbsp") == "2\u00a084\u00a005\u00a075\u00a0123\u00a0456\u00a078"


def test_bad_identities_are_really_bad(feed) -> None:
    root, generated = feed
    bad_key = _by_reason(generated, "invalid_ins_key")
    assert {d.format for d in bad_key} == {"pdf", "hl7v2"}
    for doc in bad_key:
        path, _, part = doc.source_ref.partition("#")
        data = (root / path).read_bytes()
        if doc.format == "pdf":
            m = re.search(r"INS : ([0-9AB ]{21})", _pdf_text(data))
            assert m, doc.source_ref
            printed = _compact(m.group(1))
        else:
            pid = next(s for s in _hl7_messages(data)[int(part) - 1].split("\r") if s.startswith("PID"))
            printed = next(r.split("^")[0] for r in _field(pid, 3).split("~") if INS_OID in r)
        assert len(printed) == 15 and not nir.is_valid(printed)
        assert nir.is_valid(printed[:13] + nir_key(printed[:13]))

    (missing,) = _by_reason(generated, "missing_ins")
    text = _pdf_text((root / missing.source_ref).read_bytes())
    assert "Patient :" in text and not re.search(r"\b(INS|NIR|N° SS)\b", text)

    (conflict,) = _by_reason(generated, "identity_conflict")
    cda = ET.fromstring((root / conflict.source_ref).read_bytes())
    structured = cda.find(f"{V3}recordTarget/{V3}patientRole/{V3}id[@root='{INS_OID}']").get("extension")
    narrative = " ".join(cda.find(f".//{V3}structuredBody").itertext())
    printed = _compact(re.search(r"INS : ([0-9AB ]{21})", narrative).group(1))
    assert nir.is_valid(structured) and nir.is_valid(printed) and structured != printed


# -- layout and expected list --------------------------------------------------------------


def test_every_batch_is_closed_by_a_marker_or_a_true_manifest(feed) -> None:
    root, _ = feed
    batches = [b for p in root.iterdir() for b in p.iterdir()]
    assert len(batches) == 10  # five producers, two batches each
    manifests = 0
    for batch in batches:
        names = {p.name for p in batch.iterdir()}
        assert ("_READY" in names) != ("_manifest.json" in names), batch
        if "_manifest.json" in names:
            manifests += 1
            listed = json.loads((batch / "_manifest.json").read_text())["files"]
            assert sorted(e["name"] for e in listed) == sorted(names - CONTROL)
            for e in listed:
                data = (batch / e["name"]).read_bytes()
                assert e["size"] == len(data) and e["sha256"] == hashlib.sha256(data).hexdigest()
        else:
            assert (batch / "_READY").read_bytes() == b""
    assert manifests == 2  # one producer, both batches


def test_expected_list_covers_every_file_once_and_hl7_once_per_message(feed) -> None:
    root, generated = feed
    refs = [d.source_ref for d in generated.documents]
    assert len(refs) == len(set(refs)) == 60
    files = {k for k in _files(root) if Path(k).name not in CONTROL}
    by_file = Counter(ref.partition("#")[0] for ref in refs)
    assert set(by_file) == files
    for name, count in by_file.items():
        if name.endswith(".hl7"):
            messages = _hl7_messages((root / name).read_bytes())
            assert sorted(r for r in refs if r.startswith(name + "#")) == sorted(
                f"{name}#{n}" for n in range(1, len(messages) + 1)
            )
        else:
            assert count == 1 and name in refs
    for doc in generated.documents:
        assert doc.source_ref.startswith(f"{doc.producer}/{doc.batch}/")


def test_expected_states_and_reason_codes(feed) -> None:
    _, generated = feed
    outcomes = Counter((d.expected_status.value, d.expected_reasons) for d in generated.documents)
    for reason in (
        "missing_ins",
        "identity_conflict",
        "encrypted_document",
        "unreadable_scan",
        "empty_document",
    ):
        assert outcomes[("rejected", (reason,))] == 1, reason
    assert outcomes[("duplicate", ())] == 2  # a PDF and a CDA
    assert outcomes[("replaced", ())] == 2  # a CDA version 2 and an HL7 correction
    assert outcomes[("rejected", ("invalid_ins_key",))] == 2
    assert outcomes[("rejected", ("parse_error",))] == 2
    assert outcomes[("rejected", ("unsupported_format",))] == 2
    assert outcomes[("indexed", ())] == 60 - 15
    batches = {
        d.producer: sorted({x.batch for x in generated.documents if x.producer == d.producer})
        for d in generated.documents
    }
    for doc in generated.documents:
        if doc.expected_status in ("duplicate", "replaced"):
            assert doc.batch == batches[doc.producer][-1]  # always after the original
            assert doc.patient_id and doc.doc_class
        if doc.expected_status == "rejected":
            assert doc.patient_id is None and doc.doc_class is None
        else:
            assert doc.document_date and doc.key_terms and doc.type_code in {"11502-2", "18748-4", "57833-6"}
    replaced = [d for d in generated.documents if d.replaced_by]
    assert {d.replaced_by for d in replaced} == {
        d.source_ref for d in generated.documents if d.expected_status == "replaced"
    }


def test_write_jsonl_round_trips(feed, tmp_path: Path) -> None:
    _, generated = feed
    path = tmp_path / "feed.expected.jsonl"
    generated.write_jsonl(path)
    lines = path.read_text().splitlines()
    assert [ExpectedDocument.model_validate_json(x) for x in lines] == list(generated.documents)


def test_too_few_documents_or_batches_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="documents"):
        generate_feed(tmp_path / "x", documents=20)
    with pytest.raises(ValueError, match="batches_per_producer"):
        generate_feed(tmp_path / "y", batches_per_producer=1)


# -- formats -------------------------------------------------------------------------------


def test_pdfs_open_and_print_the_patient_ins_and_key_terms(feed) -> None:
    root, generated = feed
    styles = set()
    checked = 0
    for doc in generated.documents:
        path = root / doc.source_ref
        if doc.format != "pdf" or doc.expected_status == "rejected" or path.name.startswith("SCAN"):
            continue
        text = _pdf_text(path.read_bytes())
        assert doc.patient_id in _compact(text), doc.source_ref
        styles.update(label for label in ("INS :", "N° SS :", "NIR") if label in text)
        assert all(term.lower() in text.lower() for term in doc.key_terms), doc.source_ref
        assert re.search(r"\d{2}/\d{2}/\d{4}", text) and "RPPS : " in text
        checked += 1
    assert checked >= 5 and styles == {"INS :", "N° SS :", "NIR"}

    (encrypted,) = _by_reason(generated, "encrypted_document")
    reader = PdfReader(io.BytesIO((root / encrypted.source_ref).read_bytes()))
    assert reader.is_encrypted and not reader.decrypt("")
    truncated = [d for d in _by_reason(generated, "parse_error") if d.format == "pdf"]
    assert len(truncated) == 1
    data = (root / truncated[0].source_ref).read_bytes()
    assert data.startswith(b"%PDF-") and b"%%EOF" not in data


def test_hl7_messages_are_oru_r01_v25_with_ins_results_and_rpps(feed) -> None:
    root, generated = feed
    by_file: dict[str, list[ExpectedDocument]] = {}
    for d in generated.documents:
        if d.format == "hl7v2":
            by_file.setdefault(d.source_ref.partition("#")[0], []).append(d)
    fillers: dict[str, list[str]] = {}
    for name, docs in by_file.items():
        data = (root / name).read_bytes()
        assert data.startswith(b"MSH|^~\\&|") and b"\n" not in data
        messages = _hl7_messages(data)
        for doc in docs:
            message = messages[int(doc.source_ref.partition("#")[2]) - 1]
            segments = message.rstrip("\r").split("\r")
            msh = segments[0]
            if doc.expected_reasons == ("parse_error",):
                assert _field(msh, 9) == ""  # the broken one
                continue
            assert message.startswith("MSH|^~\\&|")
            assert _field(msh, 9) == "ORU^R01^ORU_R01" and _field(msh, 12) == "2.5"
            charset = _field(msh, 18)
            text = message.encode("latin-1").decode("latin-1" if charset == "8859/1" else "utf-8")
            assert charset in {"UNICODE UTF-8", "8859/1"}
            seg = {s[:3]: s for s in text.split("\r") if s}
            assert [s[:3] for s in text.split("\r") if s][:4] == ["MSH", "PID", "ORC", "OBR"]
            pid3 = _field(seg["PID"], 3).split("~")
            assert pid3[0].endswith("^PI") and pid3[1].endswith(f"&{INS_OID}&ISO^INS")
            if doc.patient_id:
                assert pid3[1].split("^")[0] == doc.patient_id
            assert re.fullmatch(r"[A-Z' -]+\^[^\^]+\^\^\^\^\^L", _field(seg["PID"], 5))
            assert re.fullmatch(r"\d{8}", _field(seg["PID"], 7)) and _field(seg["PID"], 8) in "MF"
            obr = seg["OBR"]
            assert _field(obr, 3) and _field(obr, 4).endswith("^LN")
            assert re.fullmatch(r"\d{14}", _field(obr, 7))
            assert re.fullmatch(r"\d{11}&.*&ISO", _field(obr, 32))
            fillers.setdefault(_field(obr, 3), []).append(_field(obr, 25))
            obx = [s for s in text.split("\r") if s.startswith("OBX")]
            assert obx
            for s in obx:
                assert _field(s, 2) == "NM" and re.fullmatch(r"\d+-\d\^[^\^]+\^LN", _field(s, 3))
                float(_field(s, 5))
                assert _field(s, 6).endswith("^UCUM") and _field(s, 8) in {"N", "H", "L"}
            if "Hémoglobine" in text:
                assert "718-7^Hémoglobine^LN" in text
    corrections = [f for f, statuses in fillers.items() if statuses == ["F", "C"]]
    assert len(corrections) == 1  # the original then its correction, same filler order number


def test_cda_documents_are_clinical_documents_with_ids_and_versions(feed) -> None:
    root, generated = feed
    sets: dict[str, list[str]] = {}
    for doc in generated.documents:
        if doc.format != "cda":
            continue
        tree = ET.fromstring((root / doc.source_ref).read_bytes())
        assert tree.tag == f"{V3}ClinicalDocument"
        code = tree.find(f"{V3}code")
        assert code.get("codeSystem") == "2.16.840.1.113883.6.1"
        assert code.get("code") in {"11502-2", "18748-4", "57833-6"}
        if doc.type_code:
            assert code.get("code") == doc.type_code
        assert tree.find(f"{V3}title").text and re.fullmatch(
            r"\d{14}\+0100", tree.find(f"{V3}effectiveTime").get("value")
        )
        ins = tree.find(f"{V3}recordTarget/{V3}patientRole/{V3}id[@root='{INS_OID}']").get("extension")
        assert nir.is_valid(ins) and (doc.patient_id in (None, ins))
        author = tree.find(f"{V3}author/{V3}assignedAuthor/{V3}id").get("extension")
        assert re.fullmatch(r"8\d{11}", author)
        custodian = tree.find(f".//{V3}representedCustodianOrganization/{V3}id")
        assert custodian.get("root") == "1.2.250.1.71.4.2.2"
        assert re.fullmatch(r"1\d{9}", custodian.get("extension"))
        sections = tree.findall(f"{V3}component/{V3}structuredBody/{V3}component/{V3}section")
        assert sections and all(s.find(f"{V3}text") is not None for s in sections)
        set_id = tree.find(f"{V3}setId")
        sets.setdefault(f"{set_id.get('root')}^{set_id.get('extension')}", []).append(
            tree.find(f"{V3}versionNumber").get("value")
        )
    assert sorted(v for v in sets.values() if len(set(v)) > 1) == [["1", "2"]]


def test_scans_are_300_dpi_a4_images_and_the_blank_one_is_white(feed) -> None:
    root, generated = feed
    scans = [d for d in generated.documents if Path(d.source_ref).name.startswith("SCAN")]
    assert len(scans) == 4  # three good (PNG, TIFF, image-only PDF) and the blank one
    kinds = set()
    for doc in scans:
        data = (root / doc.source_ref).read_bytes()
        if data.startswith(b"%PDF-"):
            reader = PdfReader(io.BytesIO(data))
            assert reader.pages[0].extract_text().strip() == "" and len(reader.pages[0].images) == 1
            kinds.add("pdf")
            continue
        with Image.open(io.BytesIO(data)) as image:
            kinds.add(image.format)
            assert image.size == (2480, 3508) and round(image.info["dpi"][0]) == 300
            extrema = image.convert("L").getextrema()
        assert (extrema == (255, 255)) == (doc.expected_reasons == ("unreadable_scan",))
    assert kinds == {"PNG", "TIFF", "pdf"}


def test_unsupported_files_are_what_they_claim(feed) -> None:
    root, generated = feed
    datas = {
        Path(d.source_ref).suffix: (root / d.source_ref).read_bytes()
        for d in _by_reason(generated, "unsupported_format")
    }
    assert (root / _by_reason(generated, "empty_document")[0].source_ref).read_bytes() == b""
    assert len(datas[".bin"]) == 4096 and b"%PDF-" not in datas[".bin"]
    assert "word/document.xml" in zipfile.ZipFile(io.BytesIO(datas[".docx"])).namelist()


@pytest.mark.tesseract
def test_a_good_scan_is_read_by_tesseract(feed) -> None:
    from parsers.ocr import TesseractOcr

    root, generated = feed
    doc = next(d for d in generated.documents if d.source_ref.endswith(".png") and d.patient_id)
    with Image.open(root / doc.source_ref) as image:
        text = TesseractOcr(lang="fra").read(image).text
    assert doc.patient_id in _compact(text)
    assert doc.key_terms[0].lower() in text.lower()


# -- benchmarks ----------------------------------------------------------------------------


def test_good_only_feed_for_benchmarks_is_fast_and_all_indexed(tmp_path: Path) -> None:
    start = time.process_time()  # CPU time: not slowed down by other jobs on the machine
    generated = generate_feed(
        tmp_path / "bench", seed=1, patients=200, documents=1000, batches_per_producer=4, include_bad=False
    )
    rate = len(generated.documents) / (time.process_time() - start)
    assert len(generated.documents) == 1000
    assert {d.expected_status for d in generated.documents} == {"indexed"}
    assert {d.format for d in generated.documents} == {"pdf", "hl7v2", "cda"}
    assert not [d for d in generated.documents if Path(d.source_ref).name.startswith("SCAN")]
    assert rate >= 200, f"{rate:.0f} documents/s"


def test_generate_without_the_demo_extra_says_what_to_install(tmp_path: Path) -> None:
    # reportlab comes with carnet[demo] only: the CLI names the extra instead of a traceback.
    code = (
        "import sys; sys.modules['reportlab'] = None\n"
        "from pipeline.cli import main\n"
        f"sys.argv = ['carnet', 'generate', {str(tmp_path / 'feed')!r}]\n"
        "sys.exit(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "carnet[demo]" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "feed").exists()
