"""Patients add their own documents: ``POST /patients/{ins}/documents`` over real HTTP, through
the real pipeline (store, tesseract OCR, classification, identity, gate, index).

The photos are drawn here (DejaVu text on a white page, as a phone photo of a printed
prescription looks after the camera app's "document" mode); the INS printed on them are
made-up test numbers.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from pipeline.access import Principal
from pipeline.api.documents import UPLOAD_MAX_BYTES
from pipeline.identity import find_printed_ins
from pipeline.model import DocClass, IdentitySource, SearchQuery, Visibility
from tests.api.conftest import Api, caregiver, make_ins, patient, professional, representative

pytestmark = pytest.mark.tesseract

A, OTHER = make_ins(601), make_ins(602)
SAMPLES = Path(__file__).resolve().parents[1] / "samples"
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def spaced(ins: str) -> str:
    return " ".join((ins[0], ins[1:3], ins[3:5], ins[5:7], ins[7:10], ins[10:13], ins[13:]))


def photo(lines: list[str], fmt: str = "PNG") -> bytes:
    """A printed page as a phone's document mode saves it: 200 dpi, grayscale."""
    font = ImageFont.truetype(str(FONT), 36)
    image = Image.new("L", (1650, 120 + 60 * len(lines)), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((90, 60 + i * 60), line, font=font, fill=10)
    buf = io.BytesIO()
    image.save(buf, fmt, dpi=(200, 200))
    return buf.getvalue()


PRESCRIPTION = [
    "Docteur Claire Martin - médecine générale",
    "Ordonnance du 12/03/2025",
    "Amoxicilline 1 g : un comprimé matin et soir pendant 6 jours",
    "Paracétamol 1 g si douleur",
]


def upload(
    api: Api, who: Principal, ins: str, data: bytes, *, name: str = "ordonnance.png", media: str = "image/png"
) -> dict[str, object]:
    r = api.post(who, f"/patients/{ins}/documents", files={"file": (name, data, media)})
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def only_file(report: dict[str, object]) -> dict[str, object]:
    files = report["files"]
    assert isinstance(files, list) and len(files) == 1
    entry: dict[str, object] = files[0]
    return entry


def test_a_photo_without_ins_is_filed_in_the_patients_record_and_found_at_once(api: Api) -> None:
    report = upload(api, patient(A), A, photo(PRESCRIPTION))
    entry = only_file(report)
    assert entry["status"] == "indexed" and report["accepted"] == 1, report
    assert report["producer"] == "patient" and entry["file"] == "ordonnance.png"
    doc_id = entry["doc_id"]
    assert isinstance(doc_id, str)
    record = api.index.get(A, doc_id)
    assert record is not None and record.doc_class.value == "prescription" and record.ocr_pages == 1
    assert record.identity_source is IdentitySource.DECLARED_BY_PATIENT
    assert record.contributed_by is not None and record.contributed_by.subject == A
    assert record.author_name == "Patient test" and record.author_rpps is None
    # In the patient's search at once, by a word of its text.
    hits = api.get(patient(A), f"/patients/{A}/documents", params={"q": "amoxicilline"}).json()["hits"]
    assert [h["doc_id"] for h in hits] == [doc_id]
    # The original bytes, encrypted at rest, come back as sent.
    assert api.get(patient(A), f"/patients/{A}/documents/{doc_id}/file").content == photo(PRESCRIPTION)
    # Visible to an authorised professional (it is not hidden), through FHIR too with the
    # patient as author.
    pro = professional()
    assert api.put(patient(A), f"/patients/{A}/authorisations/{pro.subject}").status_code == 200
    assert api.get(pro, f"/patients/{A}/documents/{doc_id}").status_code == 200
    ref = api.get(pro, f"/fhir/DocumentReference/{A}-{doc_id}").json()
    assert ref["author"][0]["identifier"]["value"] == A
    # Sending it again is a duplicate, as for a producer.
    again = only_file(upload(api, patient(A), A, photo(PRESCRIPTION)))
    assert again["status"] == "duplicate" and again["doc_id"] == doc_id
    # Audited: who added what.
    uploads = [e for e in api.services.audit.for_patient(A) if e.action == "upload"]
    assert [(e.actor, e.doc_ids) for e in uploads] == [(A, (doc_id,)), (A, (doc_id,))]


def test_a_document_naming_another_patient_is_rejected_and_filed_nowhere(api: Api) -> None:
    lines = [*PRESCRIPTION, f"Patient : INS {spaced(OTHER)}"]
    assert find_printed_ins("\n".join(lines)) == [OTHER]
    report = upload(api, patient(A), A, photo(lines))
    entry = only_file(report)
    assert entry["status"] == "rejected" and entry["doc_id"] is None
    reasons = entry["reasons"]
    assert isinstance(reasons, list) and [r["code"] for r in reasons] == ["identity_conflict"]
    assert report["rejected_by_reason"] == {"identity_conflict": 1}
    for ins in (A, OTHER):
        found = api.get(patient(ins), f"/patients/{ins}/documents", params={"q": "amoxicilline"}).json()
        assert found["total"] == 0
    # Naming the record's own patient is fine (identity from the print, not declared).
    own = only_file(upload(api, patient(A), A, photo([*PRESCRIPTION, f"INS {spaced(A)}"])))
    assert own["status"] == "indexed"
    record = api.index.get(A, str(own["doc_id"]))
    assert record is not None and record.identity_source is IdentitySource.PRINTED


@pytest.mark.parametrize(
    "printed",
    [
        "Identifiant national de santé : {spaced}",  # the INS's name in full
        "N° de sécu : {nir}",  # the NIR without its key
    ],
)
def test_a_photo_naming_another_patient_in_other_words_is_filed_nowhere(api: Api, printed: str) -> None:
    lines = [*PRESCRIPTION, printed.format(spaced=spaced(OTHER), nir=spaced(OTHER)[:-3])]
    entry = only_file(upload(api, patient(A), A, photo(lines)))
    assert entry["status"] == "rejected" and entry["doc_id"] is None, entry
    reasons = entry["reasons"]
    assert isinstance(reasons, list) and [r["code"] for r in reasons] == ["identity_conflict"]
    assert api.get(patient(A), f"/patients/{A}/documents", params={"q": "amoxicilline"}).json()["total"] == 0


def test_who_may_upload(api: Api) -> None:
    minor = make_ins(603, "1205")
    data = photo(PRESCRIPTION)
    # Nobody else's record, no professional, no caregiver without an upload delegation.
    for who, ins in ((patient(OTHER), A), (professional(), A), (caregiver("aidant-1"), A)):
        r = api.post(who, f"/patients/{ins}/documents", files={"file": ("o.png", data, "image/png")})
        assert r.status_code == 403 and r.json() == {"detail": "access denied"}
    delegations = f"/patients/{A}/delegations/aidant-1"
    assert api.put(patient(A), delegations, json={"classes": None}).status_code == 200
    files = {"file": ("o.png", data, "image/png")}
    assert api.post(caregiver("aidant-1"), f"/patients/{A}/documents", files=files).status_code == 403
    # The delegation kind that allows it, shown in the delegations list.
    grant = {"classes": ["prescription"], "upload": True}
    assert api.put(patient(A), delegations, json=grant).status_code == 200
    grants = api.get(patient(A), f"/patients/{A}/delegations").json()
    assert [(g["subject"], g["upload"]) for g in grants] == [("aidant-1", True)]
    entry = only_file(upload(api, caregiver("aidant-1"), A, data))
    assert entry["status"] == "indexed"
    record = api.index.get(A, str(entry["doc_id"]))
    assert record is not None and record.contributed_by is not None
    assert (record.contributed_by.role, record.contributed_by.subject) == ("caregiver", "aidant-1")
    # A minor's legal representative.
    assert api.put(patient(minor), f"/patients/{minor}/representatives/parent-1", json={}).status_code == 200
    entry = only_file(
        upload(
            api,
            representative("parent-1"),
            minor,
            photo(["Carnet de vaccination", "Vaccin ROR le 02/02/2024"]),
        )
    )
    assert entry["status"] == "indexed"
    denied = [e for e in api.services.audit.for_patient(A) if e.action == "denied"]
    assert {e.reason for e in denied} >= {
        "not_own_record",
        "not_authorised",
        "no_delegation",
        "upload_not_delegated",
    }


@pytest.mark.parametrize(
    ("data", "name", "media", "status"),
    [
        (b"%PDF-1.4 not really", "a.pdf", "text/plain", 415),
        (b"GIF89a", "a.gif", "image/gif", 415),
        (b"\x00" * (UPLOAD_MAX_BYTES + 1), "big.pdf", "application/pdf", 413),  # the route's check
        (b"\x00" * (UPLOAD_MAX_BYTES + 2**20), "big.pdf", "application/pdf", 413),  # before parsing
    ],
)
def test_size_and_type_limits(api: Api, data: bytes, name: str, media: str, status: int) -> None:
    r = api.post(patient(A), f"/patients/{A}/documents", files={"file": (name, data, media)})
    assert r.status_code == status and "detail" in r.json()


def test_a_webp_photo_is_read_and_an_heic_one_refused_saying_why(api: Api) -> None:
    webp = io.BytesIO()
    Image.open(io.BytesIO(photo([*PRESCRIPTION, f"INS {spaced(A)}"]))).save(webp, "WEBP", quality=90)
    entry = only_file(upload(api, patient(A), A, webp.getvalue(), name="photo.webp", media="image/webp"))
    assert entry["status"] == "indexed", entry
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 200
    for media in ("image/heic", "image/jpeg"):  # declared as it is, or as a JPEG
        r = api.post(patient(A), f"/patients/{A}/documents", files={"file": ("IMG_0001.HEIC", heic, media)})
        assert r.status_code == 415 and "HEIF" in r.json()["detail"] and "JPEG" in r.json()["detail"], r.text


def test_a_file_that_is_not_what_its_type_says_is_refused(api: Api) -> None:
    """A CDA or an HL7 message sent as a PDF or a photo would be parsed as what it is, with
    the flags it declares itself: a caregiver with uploads could plant a document hidden
    from the patient (INVISIBLE_PATIENT) in the patient's own record."""
    from tests.test_erasure import _oru

    cda = (SAMPLES / "cda" / "cr-masque-ps.xml").read_text().replace("172032A04501227", A)
    grant = {"classes": None, "upload": True}
    assert api.put(patient(A), f"/patients/{A}/delegations/aidant-1", json=grant).status_code == 200
    hidden_cda = cda.replace("MASQUE_PS", "INVISIBLE_PATIENT").encode()
    for data in (hidden_cda, _oru(A, "U1", surname="X", words="y")):
        for media in ("application/pdf", "image/png"):
            files = {"file": ("a.pdf", data, media)}
            r = api.post(caregiver("aidant-1"), f"/patients/{A}/documents", files=files)
            assert r.status_code == 415 and "detail" in r.json(), r.text
    assert api.index.search(SearchQuery(patient_id=A)).total == 0


def test_a_document_hidden_from_its_sender_is_no_duplicate_for_them(api: Api) -> None:
    """Sending the bytes of a result not yet released to the patient (or of one hidden from
    representatives, or of a class outside a caregiver's delegation) answered "duplicate":
    the record holds that very file, which every other route denies. The sender is answered
    as if it were not there: their upload is filed for them, a document of its own."""
    minor = make_ins(603, born="1203")
    data = photo(PRESCRIPTION)
    not_for_parents = photo([*PRESCRIPTION, "Contraception : pilule"])
    api.file(A, "not-yet-released", visibility=(Visibility.INVISIBLE_PATIENT,), content=data)
    api.file(
        minor,
        "hidden-from-parents",
        visibility=(Visibility.INVISIBLE_REPRESENTANTS_LEGAUX,),
        content=not_for_parents,
    )
    biology = photo(["Laboratoire des Tilleuls - compte rendu de biologie", *PRESCRIPTION[1:]])
    api.file(A, "a-biology-report", content=biology)
    grant = {"classes": ["prescription"], "upload": True}
    assert api.put(patient(A), f"/patients/{A}/delegations/aidant-1", json=grant).status_code == 200
    parent = representative("parent-1")
    assert (
        api.put(patient(minor), f"/patients/{minor}/representatives/{parent.subject}", json={}).status_code
        == 200
    )
    for who, ins, hidden, content in (
        (patient(A), A, "not-yet-released", data),
        (parent, minor, "hidden-from-parents", not_for_parents),
        # Read as a prescription, this upload is one the caregiver may see.
        (caregiver("aidant-1"), A, "a-biology-report", biology),
    ):
        r = api.post(who, f"/patients/{ins}/documents", files={"file": ("o.png", content, "image/png")})
        entry = only_file(r.json())
        assert entry["status"] == "indexed" and hidden not in r.text, entry
        doc_id = entry["doc_id"]
        assert (
            isinstance(doc_id, str) and api.get(who, f"/patients/{ins}/documents/{doc_id}").status_code == 200
        )
        assert api.get(who, f"/patients/{ins}/documents/{hidden}").status_code == 404
        # The hidden document is untouched; sent again, the upload is the sender's duplicate.
        kept = api.index.get(ins, hidden)
        assert kept is not None and kept.contributed_by is None
        again = only_file(upload(api, who, ins, content, name="o.png"))
        assert (again["status"], again["doc_id"]) == ("duplicate", doc_id)
    # A hidden document with the very id the upload would get (a producer's file of the
    # same bytes, filed without an id of its own) is neither overwritten nor named.
    scan = photo([*PRESCRIPTION, "Renouvellement : trois mois"])
    first = only_file(upload(api, patient(A), A, scan))["doc_id"]
    assert isinstance(first, str)
    assert api.index.set_visibility(A, first, [Visibility.INVISIBLE_PATIENT])
    entry = only_file(upload(api, patient(A), A, scan))
    assert entry["status"] == "indexed" and entry["doc_id"] not in (None, first), entry
    kept = api.index.get(A, first)
    assert kept is not None and kept.visibility == (Visibility.INVISIBLE_PATIENT,)
    # A duplicate the sender may see keeps its id.
    seen = photo([*PRESCRIPTION, "Kinésithérapie : dix séances"])
    api.file(A, "seen", content=seen, doc_class=DocClass.PRESCRIPTION)
    entry = only_file(upload(api, caregiver("aidant-1"), A, seen))
    assert (entry["status"], entry["doc_id"]) == ("duplicate", "seen")


def test_a_file_the_pipeline_cannot_read_is_rejected_with_its_reason(api: Api) -> None:
    entry = only_file(
        upload(api, patient(A), A, b"%PDF-1.4\ngarbage", name="../../etc/x.pdf", media="application/pdf")
    )
    assert entry["status"] == "rejected" and entry["file"] == "x.pdf"
    assert isinstance(entry["reasons"], list) and entry["reasons"][0]["code"] == "parse_error"


def test_an_upload_on_both_index_backends(backend: str, tmp_path: Path) -> None:
    """The upload's new record fields (identity source, contributor) go through both backends'
    mappings (Elasticsearch's is strict) and the document is searchable at once."""
    from tests.api.conftest import running_api

    with running_api(tmp_path / "carnet", backend) as a:
        entry = only_file(upload(a, patient(A), A, photo(PRESCRIPTION)))
        assert entry["status"] == "indexed", entry
        record = a.index.get(A, str(entry["doc_id"]))
        assert record is not None and record.identity_source is IdentitySource.DECLARED_BY_PATIENT
        assert record.contributed_by is not None and record.contributed_by.role == "patient"
        found = a.get(patient(A), f"/patients/{A}/documents", params={"q": "paracétamol"}).json()
        assert [h["doc_id"] for h in found["hits"]] == [entry["doc_id"]]
