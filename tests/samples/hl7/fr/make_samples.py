"""Writes this folder's HL7 v2 samples of the French national profiles (run it from anywhere).

They follow the ANS CI-SIS guide "Transmission de documents CDA en HL7 v2" (ORU^R01 and
MDM^T02/T04/T10/T11 carrying a document in an OBX of type ED, TXA, PRT participations;
OBX-11 F original, C replacement, D deletion) and IHE PAM FR for PID (PID-3 repetitions:
the INS with its OID and type ``INS``, the local IPP ``PI``; PID-5 birth name ``L`` and
used name ``D``; PID-32 identity reliability). Nothing is copied from published examples:
every person, organisation and identifier is made up, INS keys are valid (key = 97 - NIR
mod 97, 2A -> 19 and 2B -> 18). Output is deterministic.

Files are numbered in the order a producer sends them: a folder ingest reads them sorted,
so originals come before their replacement and their deletion. The expected outcome of
each message is in ``EXPECTED`` (used by the tests).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

from reportlab.pdfgen import canvas

HERE = Path(__file__).parent
FINESS = "750000457"  # made-up FINESS of the sending hospital (valid Luhn key)
RPPS = "10109876549"  # made-up RPPS of the author (valid Luhn key)
INS_OID = "1.2.250.1.213.1.4.8"
IPP_OID = "1.2.250.1.999.3.1"
DOC_ROOT = "1.2.250.1.999.3.2"  # the producer's OID for document ids


def ins(nir: str) -> str:
    """The 15-character INS: the 13-character NIR followed by its 2-digit key."""
    number = int(nir.upper().replace("2A", "19").replace("2B", "18"))
    return f"{nir}{97 - number % 97:02d}"


INS_ROUX = ins("2770644109052")  # Agnès Roux, born 1977-06
INS_COLIN = ins("1690213055118")  # Marc Colin, born 1969-02
INS_PAOLI = ins("290102B033015")  # Lucia Paoli, born 1990-10 in Haute-Corse
INS_OTHER = ins("1881075056201")  # someone else: for the identity conflict


# -- the embedded documents ----------------------------------------------------------------


def cda(
    *,
    ins_value: str,
    family: str,
    given: str,
    birth: str,
    sex: str,
    doc_id: str,
    set_id: str,
    version: int,
    code: str,
    title: str,
    body: str,
    time: str,
) -> bytes:
    """A CDA R2 document in the national header style, level 3 or with a nonXMLBody."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <realmCode code="FR"/>
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <templateId root="1.2.250.1.213.1.1.1.1"/>
  <id root="{DOC_ROOT}" extension="{doc_id}"/>
  <code code="{code}" codeSystem="2.16.840.1.113883.6.1" displayName="{title}"/>
  <title>{title}</title>
  <effectiveTime value="{time}+0100"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>
  <languageCode code="fr-FR"/>
  <setId root="{DOC_ROOT}" extension="{set_id}"/>
  <versionNumber value="{version}"/>
  <recordTarget>
    <patientRole>
      <id root="{INS_OID}" extension="{ins_value}"/>
      <patient>
        <name><given>{given}</given><family qualifier="BR">{family}</family></name>
        <administrativeGenderCode code="{sex}" codeSystem="2.16.840.1.113883.5.1"/>
        <birthTime value="{birth}"/>
      </patient>
    </patientRole>
  </recordTarget>
  <author>
    <time value="{time}+0100"/>
    <assignedAuthor>
      <id root="1.2.250.1.71.4.2.1" extension="8{RPPS}"/>
      <assignedPerson><name><given>Nadia</given><family>VERNET</family></name></assignedPerson>
    </assignedAuthor>
  </author>
  <custodian>
    <assignedCustodian><representedCustodianOrganization>
      <id root="1.2.250.1.71.4.2.2" extension="1{FINESS}"/>
      <name>Hôpital Exemple</name>
    </representedCustodianOrganization></assignedCustodian>
  </custodian>
  <component>
{body}
  </component>
</ClinicalDocument>
""".encode()


def lab_body(hb: str) -> str:
    """A level-3 biology body: a narrative table and the structured results."""
    return f"""    <structuredBody>
      <component>
        <section>
          <code code="18723-7" codeSystem="2.16.840.1.113883.6.1" displayName="Hématologie"/>
          <title>Hématologie</title>
          <text><table><tbody>
            <tr><td>Hémoglobine</td><td>{hb} g/dL</td><td>12-16</td></tr>
            <tr><td>Plaquettes</td><td>240 10*9/L</td><td>150-400</td></tr>
          </tbody></table></text>
          <entry>
            <organizer classCode="BATTERY" moodCode="EVN">
              <code code="58410-2" codeSystem="2.16.840.1.113883.6.1" displayName="Hémogramme"/>
              <statusCode code="completed"/>
              <effectiveTime value="20240402081500+0100"/>
              <component><observation classCode="OBS" moodCode="EVN">
                <code code="718-7" codeSystem="2.16.840.1.113883.6.1" displayName="Hémoglobine"/>
                <statusCode code="completed"/>
                <value xsi:type="PQ" value="{hb}" unit="g/dL"/>
                <referenceRange><observationRange><value xsi:type="IVL_PQ">
                  <low value="12" unit="g/dL"/><high value="16" unit="g/dL"/>
                </value></observationRange></referenceRange>
              </observation></component>
              <component><observation classCode="OBS" moodCode="EVN">
                <code code="777-3" codeSystem="2.16.840.1.113883.6.1" displayName="Plaquettes"/>
                <statusCode code="completed"/>
                <value xsi:type="PQ" value="240" unit="10*9/L"/>
              </observation></component>
            </organizer>
          </entry>
        </section>
      </component>
    </structuredBody>"""


def imaging_body() -> str:
    return """    <structuredBody>
      <component>
        <section>
          <title>Compte rendu d'imagerie</title>
          <text><paragraph>Radiographie du thorax de face : pas d'anomalie
          pleuro-parenchymateuse. Silhouette cardiaque normale.</paragraph></text>
        </section>
      </component>
    </structuredBody>"""


def non_xml_body(data: bytes) -> str:
    """A level-1 body: the PDF itself, Base64 wrapped at 76 characters as senders do."""
    encoded = base64.b64encode(data).decode()
    lines = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    return f"""    <nonXMLBody>
      <text mediaType="application/pdf" representation="B64">
{lines}
      </text>
    </nonXMLBody>"""


def pdf(lines: list[str]) -> bytes:
    buf = io.BytesIO()
    page = canvas.Canvas(buf, invariant=1)
    page.setFont("Helvetica", 12)
    for i, line in enumerate(lines):
        page.drawString(72, 760 - 20 * i, line)
    page.showPage()
    page.save()
    return buf.getvalue()


# -- segments ------------------------------------------------------------------------------


def msh(message_type: str, control_id: str, when: str, *, charset: str = "UNICODE UTF-8") -> str:
    return (
        f"MSH|^~\\&|DPI-EXEMPLE|HOPITAL EXEMPLE^{FINESS}^FINESS|CARNET|CARNET|{when}||"
        f"{message_type}|{control_id}|P|2.5|||||FRA|{charset}|||2.1^CISIS_CDA_HL7_V2"
    )


def pid(ins_value: str, ipp: str, family: str, given: str, used: str, birth: str, sex: str) -> str:
    """PID per IHE PAM FR: INS (OID + type INS) then IPP; birth name L, used name D; VALI."""
    ids = f"{ins_value}^^^ASIP-SANTE-INS-NIR&{INS_OID}&ISO^INS~{ipp}^^^HOPITAL-EXEMPLE&{IPP_OID}&ISO^PI"
    names = f"{family}^{given}^{given}^^^^L~{used}^{given}^^^^^D"
    return f"PID|1||{ids}||{names}||{birth}|{sex}" + "|" * 24 + "VALI"


def prt_author() -> str:
    """PRT (v2.7 segment the French profile adds to v2.5): the author of the document."""
    return (
        f"PRT||UC||AUT^Author^participation|8{RPPS}^VERNET^Nadia^^^^^^"
        f"ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS"
    )


def ed_obx(n: int, code: str, title: str, data: bytes, kind: str, status: str) -> str:
    """The OBX carrying the document: ED, base64, OBX-11 F / C / D."""
    payload = base64.b64encode(data).decode()
    subtype = "^TEXT^XML^Base64^" if kind == "cda" else "^application^pdf^Base64^"
    return f"OBX|{n}|ED|{code}^{title}^LN||{subtype}{payload}||||||{status}"


def flag_obx(n: int, code: str, label: str, value: str) -> str:
    """The profile's document-level flags (recipients, visibility) as CE observations."""
    return f"OBX|{n}|CE|{code}^{label}^MetaDMPMSS||{value}||||||F"


def txa(doc_id: str, code: str, *, status: str = "AU", parent: str = "", availability: str = "AV") -> str:
    """TXA: type, unique document number (TXA-12) and parent (TXA-13), statuses."""
    number = f"{doc_id}^^{DOC_ROOT}^ISO"
    parent_number = f"{parent}^^{DOC_ROOT}^ISO" if parent else ""
    return (
        f"TXA|1|{code}|TEXT^^HL70191|20240402100000||||||||{number}|{parent_number}"
        f"||||{status}||{availability}"
    )


def mdm(event: str, control_id: str, when: str, patient: str, doc_txa: str, obx: list[str]) -> str:
    segments = [
        msh(f"MDM^{event}^MDM_T02", control_id, when),
        f"EVN||{when}",
        patient,
        "PV1|1|N",
        doc_txa,
        prt_author(),
        *obx,
    ]
    return "\r".join(segments)


def oru(
    control_id: str, when: str, patient: str, filler: str, obx: list[str], extra: list[str] | None = None
) -> str:
    segments = [
        msh("ORU^R01^ORU_R01", control_id, when),
        patient,
        "PV1|1|N",
        f"ORC|RE|CMD-{control_id}|{filler}",
        f"OBR|1|CMD-{control_id}|{filler}|11502-2^CR d'examens biologiques^LN|||{when}",
        prt_author(),
        *(extra or []),
        *obx,
    ]
    return "\r".join(segments)


def roux() -> str:
    return pid(INS_ROUX, "IPP7001", "ROUX", "Agnès", "MARCHAL", "19770614", "F")


def colin() -> str:
    return pid(INS_COLIN, "IPP7002", "COLIN", "Marc", "COLIN", "19690221", "M")


def paoli() -> str:
    return pid(INS_PAOLI, "IPP7003", "PAOLI", "Lucia", "PAOLI", "19901007", "F")


def roux_cda(version: int, hb: str) -> bytes:
    return cda(
        ins_value=INS_ROUX,
        family="ROUX",
        given="Agnès",
        birth="19770614",
        sex="F",
        doc_id=f"CRBIO-ROUX-V{version}",
        set_id="CRBIO-ROUX",
        version=version,
        code="11502-2",
        title="CR d'examens biologiques",
        body=lab_body(hb),
        time="20240402100000",
    )


def samples() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    flags = [
        flag_obx(2, "DESTDMP", "Destinataire DMP", "Y"),
        flag_obx(3, "MASQUE_PS", "Masqué aux professionnels de Santé", "N"),
    ]
    # 1. MDM^T02 with a level-3 CR-BIO CDA, MLLP framed.
    t02 = mdm(
        "T02",
        "MDM0001",
        "20240402100000",
        roux(),
        txa("CRBIO-ROUX-V1", "11502-2^CR d'examens biologiques^LN"),
        [ed_obx(1, "11502-2", "CR d'examens biologiques", roux_cda(1, "13.1"), "cda", "F"), *flags],
    )
    out["01_mdm_t02_cda.hl7"] = b"\x0b" + t02.encode() + b"\r\x1c\r"
    # 2. ORU^R01 with a PDF report in ED, \n line endings, a Z-segment and v2.8's ARV.
    report = pdf(
        [
            "Hopital Exemple - Laboratoire",
            "Patient : COLIN Marc",
            "Ferritine : 85 ug/L (30-400)",
            "Conclusion : bilan martial normal",
        ]
    )
    oru_pdf = oru(
        "ORU0002",
        "20240403090000",
        colin(),
        "DOS-COLIN-1",
        [
            ed_obx(1, "11502-2", "CR d'examens biologiques", report, "pdf", "F"),
            flag_obx(2, "DESTDMP", "Destinataire DMP", "Y"),
        ],
        extra=["ZBE|MVT-11^HOPITAL-EXEMPLE|20240403080000||INSERT|N", "ARV|1|A|PRE"],
    )
    out["02_oru_pdf_lf.hl7"] = oru_pdf.replace("\r", "\n").encode() + b"\n"
    # 3. ORU^R01 with an imaging CDA, latin-1 (MSH-18 8859/1), \r\n, escapes in an NTE.
    img = cda(
        ins_value=INS_PAOLI,
        family="PAOLI",
        given="Lucia",
        birth="19901007",
        sex="F",
        doc_id="CRIMG-PAOLI-V1",
        set_id="CRIMG-PAOLI",
        version=1,
        code="18748-4",
        title="CR d'imagerie médicale",
        body=imaging_body(),
        time="20240404110000",
    )
    oru_img = oru(
        "ORU0003",
        "20240404110000",
        paoli(),
        "DOS-PAOLI-1",
        [ed_obx(1, "18748-4", "CR d'imagerie médicale", img, "cda", "F")],
        extra=["NTE|1||Examen réalisé \\T\\ interprété le même jour\\.br\\Dr Vernet"],
    )
    out["03_oru_cda_latin1.hl7"] = (
        oru_img.replace("UNICODE UTF-8", "8859/1").replace("\r", "\r\n").encode("iso-8859-1")
    )
    # 4. MDM^T10: version 2 of the CR-BIO of file 1 replaces it (TXA-13 = version 1).
    out["04_mdm_t10_replacement.hl7"] = mdm(
        "T10",
        "MDM0004",
        "20240405100000",
        roux(),
        txa("CRBIO-ROUX-V2", "11502-2^CR d'examens biologiques^LN", parent="CRBIO-ROUX-V1"),
        [ed_obx(1, "11502-2", "CR d'examens biologiques", roux_cda(2, "13.4"), "cda", "C"), *flags],
    ).encode()
    # 5. ORU^R01 deletion (OBX-11 D) of the PDF report of file 2 (same OBR-3).
    out["05_oru_deletion.hl7"] = oru(
        "ORU0005",
        "20240406090000",
        colin(),
        "DOS-COLIN-1",
        [ed_obx(1, "11502-2", "CR d'examens biologiques", report, "pdf", "D")],
    ).encode()
    # 6. MDM^T11: the producer cancels the CR-BIO (its current version, TXA-12).
    out["06_mdm_t11_deletion.hl7"] = mdm(
        "T11",
        "MDM0006",
        "20240407100000",
        roux(),
        txa("CRBIO-ROUX-V2", "11502-2^CR d'examens biologiques^LN", availability="CA"),
        [],
    ).encode()
    # 7. MDM^T04 with OBX-11 D for a document Carnet never received.
    out["07_mdm_t04_unknown_deletion.hl7"] = mdm(
        "T04",
        "MDM0007",
        "20240408100000",
        colin(),
        txa("CR-INCONNU-9", "11502-2^CR d'examens biologiques^LN"),
        [ed_obx(1, "11502-2", "CR d'examens biologiques", report, "pdf", "D")],
    ).encode()
    # 8. MDM^T02 whose CDA names another patient than PID-3.
    other = cda(
        ins_value=INS_OTHER,
        family="ROUX",
        given="Agnès",
        birth="19770614",
        sex="F",
        doc_id="CRBIO-X-V1",
        set_id="CRBIO-X",
        version=1,
        code="11502-2",
        title="CR d'examens biologiques",
        body=lab_body("12.8"),
        time="20240409100000",
    )
    out["08_mdm_t02_identity_conflict.hl7"] = mdm(
        "T02",
        "MDM0008",
        "20240409100000",
        roux(),
        txa("CRBIO-X-V1", "11502-2^CR d'examens biologiques^LN"),
        [ed_obx(1, "11502-2", "CR d'examens biologiques", other, "cda", "F")],
    ).encode()
    # 9. Messages that carry no document, one file: ACK, ADT with ZBE, a query, a Z message.
    out["09_not_documents.hl7"] = "\r".join(
        [
            msh("ACK^R01^ACK", "ACK0009", "20240410100000"),
            "MSA|AA|LAB0001",
            msh("ADT^A04^ADT_A01", "ADT0009", "20240410100100"),
            "EVN||20240410100100",
            roux(),
            "PV1|1|O",
            "ZBE|MVT-12^HOPITAL-EXEMPLE|20240410100100||INSERT|N",
            msh("QRY^A19^QRY_A19", "QRY0009", "20240410100200"),
            "QRD|20240410100200|R|I|Q1|||1^RD|IPP7001|DEM",
            msh("ZAM^Z01", "ZAM0009", "20240410100300"),
            "ZAM|1|local",
            "",
        ]
    ).encode()
    # 10. MDM^T02 with a level-1 CDA (nonXMLBody PDF) of a type outside biology/imaging.
    synthesis = pdf(
        [
            "Hopital Exemple - Service de medecine",
            "Patiente : PAOLI Lucia",
            "Synthese d'hospitalisation du 2 au 5 avril 2024",
            "Sortie a domicile, traitement inchange.",
        ]
    )
    level1 = cda(
        ins_value=INS_PAOLI,
        family="PAOLI",
        given="Lucia",
        birth="19901007",
        sex="F",
        doc_id="SYNTH-PAOLI-V1",
        set_id="SYNTH-PAOLI",
        version=1,
        code="34133-9",
        title="Synthèse d'hospitalisation",
        body=non_xml_body(synthesis),
        time="20240405160000",
    )
    out["10_mdm_t02_cda_level1_pdf.hl7"] = mdm(
        "T02",
        "MDM0010",
        "20240405160000",
        paoli(),
        txa("SYNTH-PAOLI-V1", "34133-9^Synthèse d'hospitalisation^LN"),
        [ed_obx(1, "34133-9", "Synthèse d'hospitalisation", level1, "cda", "F")],
    ).encode()
    # 11-13. A PDF report sent by MDM, then replaced twice: no CDA setId to link the
    # versions, only TXA-13 naming the version each one replaces.
    for n, version in ((11, 1), (12, 2), (13, 3)):
        report_v = pdf(
            [
                "Hopital Exemple - Laboratoire",
                "Patient : COLIN Marc",
                f"Vitamine D : {60 + version} nmol/L (75-250) - version {version}",
            ]
        )
        out[f"{n}_mdm_t{'02' if version == 1 else '10'}_pdf_v{version}.hl7"] = mdm(
            "T02" if version == 1 else "T10",
            f"MDM00{n}",
            f"2024041{version}100000",
            colin(),
            txa(
                f"CR-VITD-COLIN-V{version}",
                "11502-2^CR d'examens biologiques^LN",
                parent=f"CR-VITD-COLIN-V{version - 1}" if version > 1 else "",
            ),
            [ed_obx(1, "11502-2", "CR d'examens biologiques", report_v, "pdf", "F" if version == 1 else "C")],
        ).encode()
    return out


# source name -> (status, patient INS or None, type code or None, reason or None)
EXPECTED: dict[str, tuple[str, str | None, str | None, str | None]] = {
    "01_mdm_t02_cda.hl7": ("indexed", INS_ROUX, "11502-2", None),
    "02_oru_pdf_lf.hl7": ("indexed", INS_COLIN, "11502-2", None),
    "03_oru_cda_latin1.hl7": ("indexed", INS_PAOLI, "18748-4", None),
    "04_mdm_t10_replacement.hl7": ("replaced", INS_ROUX, "11502-2", None),
    "05_oru_deletion.hl7": ("withdrawn", INS_COLIN, "11502-2", None),
    "06_mdm_t11_deletion.hl7": ("withdrawn", INS_ROUX, "11502-2", None),
    "07_mdm_t04_unknown_deletion.hl7": ("rejected", None, None, "unknown_document"),
    "08_mdm_t02_identity_conflict.hl7": ("rejected", None, None, "identity_conflict"),
    "09_not_documents.hl7#1": ("rejected", None, None, "unsupported_message"),
    "09_not_documents.hl7#2": ("rejected", None, None, "unsupported_message"),
    "09_not_documents.hl7#3": ("rejected", None, None, "unsupported_message"),
    "09_not_documents.hl7#4": ("rejected", None, None, "unsupported_message"),
    "10_mdm_t02_cda_level1_pdf.hl7": ("indexed", INS_PAOLI, "34133-9", None),
    "11_mdm_t02_pdf_v1.hl7": ("indexed", INS_COLIN, "11502-2", None),
    "12_mdm_t10_pdf_v2.hl7": ("replaced", INS_COLIN, "11502-2", None),
    "13_mdm_t10_pdf_v3.hl7": ("replaced", INS_COLIN, "11502-2", None),
}


def main() -> None:
    for name, data in samples().items():
        (HERE / name).write_bytes(data)
        print(f"wrote {name} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
