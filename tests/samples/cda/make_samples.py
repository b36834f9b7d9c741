"""Writes the synthetic, de-identified CDA samples of this folder (run it from anywhere).

Every person, organisation and identifier here is made up; the INS keys are valid
(key = 97 - NIR mod 97, with 2A -> 19 and 2B -> 18 for Corsica) so that the pipeline's
identity check accepts them. The output is deterministic: re-running changes nothing.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

from reportlab.pdfgen import canvas

HERE = Path(__file__).parent


def ins(nir: str) -> str:
    """The 15-character INS: the 13-character NIR followed by its 2-digit key."""
    number = int(nir.upper().replace("2A", "19").replace("2B", "18"))
    return f"{nir}{97 - number % 97:02d}"


INS_MARTIN = ins("2840375123456")  # Claire Martin, born 1984-03-21
INS_CORSICA = ins("172032A045012")  # Paul Santoni, born in Corse-du-Sud
INS_DURAND = ins("1550869123321")  # Henri Durand

PROLOG = '<?xml version="1.0" encoding="UTF-8"?>\n'
ROOT_OPEN = (
    '<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
)


def patient(ids: str, family: str, given: str, birth: str, sex: str, birth_name: str | None = None) -> str:
    families = f'<family qualifier="SP">{family}</family><family qualifier="BR">{birth_name}</family>'
    return f"""  <recordTarget>
    <patientRole>
{ids}
      <patient>
        <name><given>{given}</given>{families if birth_name else f"<family>{family}</family>"}</name>
        <administrativeGenderCode code="{sex}" codeSystem="2.16.840.1.113883.5.1"/>
        <birthTime value="{birth}"/>
      </patient>
    </patientRole>
  </recordTarget>
"""


def ins_id(value: str) -> str:
    return f'      <id root="1.2.250.1.213.1.4.8" extension="{value}"/>'


def ipp_id(value: str, oid: str = "1.2.250.1.999.1.1.2") -> str:
    return f'      <id root="{oid}" extension="{value}" assigningAuthorityName="IPP CH Exemple"/>'


def author(rpps: str, given: str, family: str, finess: str, org: str, time: str) -> str:
    return f"""  <author>
    <time value="{time}"/>
    <assignedAuthor>
      <id root="1.2.250.1.71.4.2.1" extension="8{rpps}"/>
      <assignedPerson><name><prefix>Dr</prefix><given>{given}</given><family>{family}</family></name></assignedPerson>
      <representedOrganization>
        <id root="1.2.250.1.71.4.2.2" extension="1{finess}"/>
        <name>{org}</name>
      </representedOrganization>
    </assignedAuthor>
  </author>
"""


def custodian(finess: str, name: str) -> str:
    return f"""  <custodian>
    <assignedCustodian>
      <representedCustodianOrganization>
        <id root="1.2.250.1.71.4.2.2" extension="1{finess}"/>
        <name>{name}</name>
      </representedCustodianOrganization>
    </assignedCustodian>
  </custodian>
"""


def header(
    *,
    doc_id: str,
    code: str,
    display: str,
    title: str | None,
    time: str,
    confidentiality: str = '<confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>',
    set_id: str | None = None,
    version: int | None = None,
) -> str:
    lines = [
        '  <realmCode code="FR"/>',
        '  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>',
        '  <templateId root="1.2.250.1.213.1.1.1.1"/>',
        f'  <id root="1.2.250.1.999.2.{doc_id}"/>'
        if "^" not in doc_id
        else '  <id root="{}" extension="{}"/>'.format(*doc_id.split("^")),
        f'  <code code="{code}" codeSystem="2.16.840.1.113883.6.1" displayName="{display}"/>',
    ]
    if title is not None:
        lines.append(f"  <title>{title}</title>")
    lines += [f'  <effectiveTime value="{time}"/>', f"  {confidentiality}"]
    lines.append('  <languageCode code="fr-FR"/>')
    if set_id:
        root, ext = set_id.split("^")
        lines.append(f'  <setId root="{root}" extension="{ext}"/>')
    if version is not None:
        lines.append(f'  <versionNumber value="{version}"/>')
    return "\n".join(lines) + "\n"


def service_event(low: str, high: str, code: str = "") -> str:
    return f"""  <documentationOf>
    <serviceEvent>{code}
      <effectiveTime><low value="{low}"/><high value="{high}"/></effectiveTime>
    </serviceEvent>
  </documentationOf>
"""


def observation(
    loinc: str, name: str, value: str, *, time: str | None = None, rng: str = "", interp: str = ""
) -> str:
    when = f'<effectiveTime value="{time}"/>' if time else ""
    flag = f'<interpretationCode code="{interp}" codeSystem="2.16.840.1.113883.5.83"/>' if interp else ""
    return f"""                  <component>
                    <observation classCode="OBS" moodCode="EVN">
                      <code code="{loinc}" codeSystem="2.16.840.1.113883.6.1" displayName="{name}"/>
                      <statusCode code="completed"/>{when}
                      {value}{flag}{rng}
                    </observation>
                  </component>
"""


def pq(value: str, unit: str) -> str:
    return f'<value xsi:type="PQ" value="{value}" unit="{unit}"/>'


def ref(low: str, high: str, unit: str) -> str:
    return (
        '<referenceRange><observationRange><value xsi:type="IVL_PQ">'
        f'<low value="{low}" unit="{unit}"/><high value="{high}" unit="{unit}"/>'
        "</value></observationRange></referenceRange>"
    )


def lab_entry(battery: str, battery_name: str, time: str, observations: str) -> str:
    return f"""          <entry>
            <act classCode="ACT" moodCode="EVN">
              <code code="{battery}" codeSystem="2.16.840.1.113883.6.1" displayName="{battery_name}"/>
              <entryRelationship typeCode="COMP">
                <organizer classCode="BATTERY" moodCode="EVN">
                  <code code="{battery}" codeSystem="2.16.840.1.113883.6.1" displayName="{battery_name}"/>
                  <statusCode code="completed"/>
                  <effectiveTime value="{time}"/>
{observations}                </organizer>
              </entryRelationship>
            </act>
          </entry>
"""


def cr_bio(*, version: int, doc_id: str, hb: str, time: str) -> str:
    """A CR-BIO: blood count and biochemistry, narrative tables plus structured entries."""
    hematology = lab_entry(
        "58410-2",
        "Hémogramme",
        "202403120815+0100",
        observation("718-7", "Hémoglobine", pq(hb, "g/dL"), rng=ref("12", "16", "g/dL"), interp="N")
        + observation(
            "6690-2",
            "Leucocytes",
            pq("11.8", "10*9/L"),
            time="202403120820+0100",
            rng=ref("4", "10", "10*9/L"),
            interp="H",
        ),
    )
    chemistry = lab_entry(
        "24336-0",
        "Biochimie sanguine",
        "20240312",
        observation("2345-7", "Glucose", pq("5.4", "mmol/L"), rng=ref("3.9", "5.8", "mmol/L"))
        + observation(
            "5767-9",
            "Aspect du sérum",
            '<value xsi:type="ST">Limpide</value>',
        )
        + observation(
            "882-1",
            "Groupe sanguin ABO et Rhésus",
            '<value xsi:type="CD" code="A+" codeSystem="1.2.250.1.999.9" displayName="A Rh+"/>',
        ),
    )
    return (
        PROLOG
        + ROOT_OPEN
        + header(
            doc_id=doc_id,
            code="11502-2",
            display="CR d'examens biologiques",
            title="Compte rendu d'examens de biologie médicale",
            time=time,
            set_id="1.2.250.1.999.3^CRBIO-2024-0042",
            version=version,
        )
        + patient(
            f"{ins_id(INS_MARTIN)}\n{ipp_id('IPP000123')}",
            "Dupont",
            "Claire",
            "19840321",
            "F",
            birth_name="Martin",
        )
        + author("10001234567", "Alice", "Biologiste", "750000001", "Laboratoire Exemple Paris", time)
        + custodian("750000001", "Laboratoire Exemple Paris")
        + service_event("202403120815+0100", "202403121630+0100")
        + f"""  <component>
    <structuredBody>
      <component>
        <section>
          <title>Hématologie</title>
          <component>
            <section>
              <title>Hémogramme</title>
              <text>
                <table border="1">
                  <thead>
                    <tr><th>Analyse</th><th>Résultat</th><th>Unité</th>
                      <th>Valeurs de référence</th></tr>
                  </thead>
                  <tbody>
                    <tr><td>Hémoglobine</td><td>{hb.replace(".", ",")}</td><td>g/dL</td><td>12 - 16</td></tr>
                    <tr><td><content styleCode="Bold">Leucocytes</content></td><td>11,8</td>
                      <td>10<sup>9</sup>/L</td><td>4 - 10</td></tr>
                  </tbody>
                </table>
                <paragraph>Hyperleucocytose modérée.</paragraph>
              </text>
{hematology}            </section>
          </component>
        </section>
      </component>
      <component>
        <section>
          <title>Biochimie</title>
          <text>
            <list>
              <item>Glucose à jeun : 5,4 mmol/L (3,9 - 5,8)</item>
              <item>Aspect du sérum :   limpide</item>
              <item>Groupe sanguin : A Rh+</item>
            </list>
            <paragraph>Validé par
              le Dr Alice Biologiste.</paragraph>
          </text>
{chemistry}        </section>
      </component>
    </structuredBody>
  </component>
</ClinicalDocument>
"""
    )


def cr_img() -> str:
    """A CR-IMG (chest X-ray) with a Corsican INS, a stylesheet PI and a comment."""
    return (
        PROLOG
        + '<?xml-stylesheet type="text/xsl" href="CDA-FR.xsl"?>\n'
        + "<!-- Document de test synthétique : aucune donnée réelle -->\n"
        + ROOT_OPEN
        + header(
            doc_id="1.2.250.1.999.4^IMG-77",
            code="18748-4",
            display="CR d'imagerie médicale",
            title="Compte rendu d'imagerie médicale",
            time="20240405183000+0200",
        )
        + patient(ins_id(INS_CORSICA), "Santoni", "Paul", "19720315", "M")
        + author(
            "10009876543",
            "Marc",
            "Radiologue",
            "2A0000123",
            "Cabinet de radiologie Exemple",
            "20240405183000+0200",
        )
        + service_event(
            "20240404101500+0200",
            "20240404103000+0200",
            '\n      <code code="ZBQK002" codeSystem="1.2.250.1.213.2.5" '
            'displayName="Radiographie du thorax"/>',
        )
        + """  <component>
    <structuredBody>
      <component>
        <section>
          <title>Demande d'examen</title>
          <text>Toux persistante depuis trois semaines.</text>
        </section>
      </component>
      <component>
        <section>
          <title>Technique</title>
          <text><paragraph>Radiographie thoracique de face et de profil,<br/>
            en inspiration.</paragraph></text>
        </section>
      </component>
      <component>
        <section>
          <title>Résultat</title>
          <text>
            <paragraph>Pas d'opacité parenchymateuse.</paragraph>
            <paragraph>Cul-de-sac pleuraux libres. Silhouette cardiaque normale.</paragraph>
          </text>
        </section>
      </component>
      <component>
        <section>
          <title>Conclusion</title>
          <text>
            <paragraph>Radiographie thoracique <content styleCode="Bold">normale</content>.</paragraph>
          </text>
        </section>
      </component>
    </structuredBody>
  </component>
</ClinicalDocument>
"""
    )


def report_pdf() -> bytes:
    """A one-page PDF lab report with a text layer (invariant: same bytes every run)."""
    out = io.BytesIO()
    pdf = canvas.Canvas(out, invariant=1)
    pdf.setFont("Helvetica", 12)
    lines = [
        "Laboratoire Exemple Lyon",
        "Compte rendu de biologie medicale",
        "Patient : DURAND Henri",
        "Hemoglobine glyquee HbA1c : 6,9 %",
    ]
    for i, line in enumerate(lines):
        pdf.drawString(72, 760 - 20 * i, line)
    pdf.showPage()
    pdf.save()
    return out.getvalue()


def cr_pdf() -> str:
    encoded = base64.b64encode(report_pdf()).decode("ascii")
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    return (
        PROLOG
        + ROOT_OPEN
        + header(
            doc_id="1.2.250.1.999.5^PDF-9",
            code="11502-2",
            display="CR d'examens biologiques",
            title=None,
            time="20240220",
        )
        + patient(ins_id(INS_DURAND), "Durand", "Henri", "19550811", "M")
        + author("10005555555", "Jean", "Biologiste", "690000002", "Laboratoire Exemple Lyon", "20240220")
        + f"""  <component>
    <nonXMLBody>
      <text mediaType="application/pdf" representation="B64">
{wrapped}
      </text>
    </nonXMLBody>
  </component>
</ClinicalDocument>
"""
    )


def cr_masque_ps() -> str:
    """A CR-IMG masked to health professionals, with a prefixed HL7 namespace."""
    body = cr_img().split("<!-- Document de test synthétique : aucune donnée réelle -->\n")[1]
    body = body.replace(
        '<confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>',
        '<confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25">'
        '<translation code="MASQUE_PS" codeSystem="1.2.250.1.213.1.1.4.13" '
        'displayName="Masqué aux professionnels de santé"/></confidentialityCode>',
    ).replace("IMG-77", "IMG-78")
    # Same document written with a namespace prefix instead of a default namespace.
    body = body.replace("<ClinicalDocument xmlns=", "<ClinicalDocument xmlns:hl7=")
    body = body.replace("</", "</hl7:").replace("<", "<hl7:").replace("<hl7:/hl7:", "</hl7:")
    return PROLOG + body


def cr_ipp_only() -> str:
    """A CR-BIO whose patient has no INS, only a hospital IPP."""
    doc = cr_bio(version=1, doc_id="1.2.250.1.999.2^IPP-1", hb="14.1", time="20240115093000+0100")
    return (
        doc.replace(f"{ins_id(INS_MARTIN)}\n", "")
        .replace('<setId root="1.2.250.1.999.3" extension="CRBIO-2024-0042"/>', "")
        .replace('<versionNumber value="1"/>', "")
    )


MALFORMED = (
    PROLOG
    + ROOT_OPEN
    + """  <code code="11502-2" codeSystem="2.16.840.1.113883.6.1"/>
  <title>Compte rendu tronqué</title>
  <recordTarget><patientRole><id root="1.2.250.1.213.1.4.8" extension="x"/></recordTarget>
"""
)

NOT_CDA = """<?xml version="1.0" encoding="UTF-8"?>
<Bundle xmlns="http://hl7.org/fhir">
  <type value="document"/>
  <entry><resource><Composition><title value="ClinicalDocument"/></Composition></resource></entry>
</Bundle>
"""

XXE = (
    PROLOG
    + """<!DOCTYPE ClinicalDocument [
  <!ENTITY xxe SYSTEM "file:///etc/passwd">
]>
"""
    + ROOT_OPEN
    + """  <title>&xxe;</title>
</ClinicalDocument>
"""
)

BILLION_LAUGHS = (
    PROLOG
    + """<!DOCTYPE ClinicalDocument [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
"""
    + ROOT_OPEN
    + """  <title>&lol9;</title>
</ClinicalDocument>
"""
)

SAMPLES = {
    "cr-bio.xml": lambda: cr_bio(
        version=1, doc_id="1.2.250.1.999.2^CRBIO-2024-0042-V1", hb="13.2", time="20240312170000+0100"
    ),
    "cr-bio-v2.xml": lambda: cr_bio(
        version=2, doc_id="1.2.250.1.999.2^CRBIO-2024-0042-V2", hb="12.9", time="20240313090000+0100"
    ),
    "cr-img.xml": cr_img,
    "cr-pdf.xml": cr_pdf,
    "cr-masque-ps.xml": cr_masque_ps,
    "cr-ipp-only.xml": cr_ipp_only,
    "malformed.xml": lambda: MALFORMED,
    "not-cda.xml": lambda: NOT_CDA,
    "xxe.xml": lambda: XXE,
    "billion-laughs.xml": lambda: BILLION_LAUGHS,
}


def main(out: Path = HERE) -> None:
    for name, build in SAMPLES.items():
        (out / name).write_text(build(), encoding="utf-8")
        print(f"wrote {name}")


if __name__ == "__main__":
    main()
