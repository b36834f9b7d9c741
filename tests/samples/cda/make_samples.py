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

LOINC = "2.16.840.1.113883.6.1"
NATIONAL_TYPES = "1.2.250.1.213.1.1.4.12"  # TRE_A05-TypeDocComplementaire

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
    code_system: str = LOINC,
) -> str:
    lines = [
        '  <realmCode code="FR"/>',
        '  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>',
        '  <templateId root="1.2.250.1.213.1.1.1.1"/>',
        f'  <id root="1.2.250.1.999.2.{doc_id}"/>'
        if "^" not in doc_id
        else '  <id root="{}" extension="{}"/>'.format(*doc_id.split("^")),
        f'  <code code="{code}" codeSystem="{code_system}" displayName="{display}"/>',
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
    return PROLOG + prefixed(body, "hl7")


def prefixed(cda: str, prefix: str) -> str:
    """The same document written with a namespace prefix instead of a default namespace
    (``cda`` starts at its root element and holds no comment or PI)."""
    cda = cda.replace("<ClinicalDocument xmlns=", f"<ClinicalDocument xmlns:{prefix}=")
    cda = cda.replace("</", f"</{prefix}:").replace("<", f"<{prefix}:")
    return cda.replace(f"<{prefix}:/{prefix}:", f"</{prefix}:")


def cr_ipp_only() -> str:
    """A CR-BIO whose patient has no INS, only a hospital IPP."""
    doc = cr_bio(version=1, doc_id="1.2.250.1.999.2^IPP-1", hb="14.1", time="20240115093000+0100")
    return (
        doc.replace(f"{ins_id(INS_MARTIN)}\n", "")
        .replace('<setId root="1.2.250.1.999.3" extension="CRBIO-2024-0042"/>', "")
        .replace('<versionNumber value="1"/>', "")
    )


# --- published CDA variants: auto-presentable, signed, level 1 with PDF / scan / text, and
# documents whose own type code must win over the words they contain ----------------------

INS_BERNARD = ins("2911069123045")  # Lucie Bernard, born 1991-10-07
INS_HADDAD = ins("1780644109087")  # Karim Haddad, born 1978-06-19
INS_FAURE = ins("2650113055123")  # Odile Faure, born 1965-01-30
INS_PETIT = ins("1020233063071")  # Noah Petit, born 2002-02-11
INS_ROUX = ins("2990575112233")  # Inès Roux, born 1999-05-03

# Producers with well-formed national identifiers (RPPS and FINESS carry a Luhn key).
LAB = dict(
    rpps="10001234565",
    given="Sophie",
    family="Biologiste",
    finess="690001235",
    org="Laboratoire Exemple Villeurbanne",
)
RADIOLOGY = dict(
    rpps="10007654329",
    given="Marc",
    family="Radiologue",
    finess="750012346",
    org="Centre d'imagerie Exemple Paris",
)
GP = dict(
    rpps="10002345675",
    given="Anne",
    family="Generaliste",
    finess="130005671",
    org="Maison de santé Exemple Marseille",
)
HOSPITAL = dict(
    rpps="10009876540",
    given="Paul",
    family="Interniste",
    finess="330008905",
    org="Centre hospitalier Exemple Bordeaux",
)


def narrative_body(sections: list[tuple[str, list[str]]]) -> str:
    """A structured body with one section per (title, paragraphs)."""
    parts = []
    for title, paragraphs in sections:
        text = "".join(f"<paragraph>{p}</paragraph>" for p in paragraphs)
        parts.append(f"""      <component>
        <section>
          <title>{title}</title>
          <text>{text}</text>
        </section>
      </component>
""")
    body = "".join(parts)
    return f"  <component>\n    <structuredBody>\n{body}    </structuredBody>\n  </component>\n"


def non_xml_body(payload: bytes | str, media: str, *, line: int = 64, representation: bool = True) -> str:
    """A level-1 body: base64 wrapped every ``line`` characters with CRLF and indentation
    (as producers write it), or inline text when ``payload`` is a str."""
    if isinstance(payload, str):
        content = payload
    else:
        encoded = base64.b64encode(payload).decode("ascii")
        content = "\r\n        ".join(encoded[i : i + line] for i in range(0, len(encoded), line))
    b64 = ' representation="B64"' if representation and not isinstance(payload, str) else ""
    return f"""  <component>
    <nonXMLBody>
      <text mediaType="{media}"{b64}>
        {content}
      </text>
    </nonXMLBody>
  </component>
"""


def document(
    *,
    doc_id: str,
    code: str,
    display: str,
    title: str | None,
    time: str,
    who: tuple[str, str, str, str, str],
    by: dict[str, str],
    body: str,
    exam: str | None = None,
    code_system: str = LOINC,
    root_open: str = ROOT_OPEN,
) -> str:
    """A whole ClinicalDocument (no prolog): ``who`` = (INS, family, given, birth, sex)."""
    ins_value, family, given, birth, sex = who
    return (
        root_open
        + header(
            doc_id=doc_id,
            code=code,
            display=display,
            title=title,
            time=time,
            set_id=f"1.2.250.1.999.6^{doc_id.split('^')[-1]}",
            version=1,
            code_system=code_system,
        )
        + patient(ins_id(ins_value), family, given, birth, sex)
        + author(by["rpps"], by["given"], by["family"], by["finess"], by["org"], time)
        + custodian(by["finess"], by["org"])
        + (service_event(exam, exam) if exam else "")
        + body
        + "</ClinicalDocument>\n"
    )


def cr_bio_level3(doc_id: str) -> str:
    """A CR-BIO level 3 for Lucie Bernard (narrative table and coded entries)."""
    cbc = lab_entry(
        "58410-2",
        "Hémogramme",
        "202501140745+0100",
        observation("718-7", "Hémoglobine", pq("13.6", "g/dL"), rng=ref("12", "16", "g/dL"), interp="N")
        + observation(
            "777-3", "Plaquettes", pq("251", "10*9/L"), rng=ref("150", "400", "10*9/L"), interp="N"
        ),
    )
    return document(
        doc_id=doc_id,
        code="11502-2",
        display="CR d'examens biologiques",
        title="Compte rendu d'examens de biologie médicale",
        time="20250114160000+0100",
        who=(INS_BERNARD, "Bernard", "Lucie", "19911007", "F"),
        by=LAB,
        exam="202501140745+0100",
        body=f"""  <component>
    <structuredBody>
      <component>
        <section>
          <title>Hématologie</title>
          <text>
            <table><tbody>
              <tr><td>Hémoglobine</td><td>13,6</td><td>g/dL</td><td>12 - 16</td></tr>
              <tr><td>Plaquettes</td><td>251</td><td>10<sup>9</sup>/L</td><td>150 - 400</td></tr>
            </tbody></table>
            <paragraph>Validé par le Dr Sophie Biologiste, biologiste médicale.</paragraph>
          </text>
{cbc}        </section>
      </component>
    </structuredBody>
  </component>
""",
    )


# A rendering stylesheet of the kind auto-presentable documents carry (Carnet's own, minimal).
RENDERING_TEMPLATES = """  <xsl:output method="html" encoding="UTF-8" indent="yes"/>
  <xsl:template match="/">
    <html><head><title><xsl:value-of select="//c:ClinicalDocument/c:title"/></title></head>
      <body>
        <h1><xsl:value-of select="//c:ClinicalDocument/c:title"/></h1>
        <p class="patient">
          <xsl:value-of select="//c:recordTarget/c:patientRole/c:patient/c:name/c:given"/>
          <xsl:text> </xsl:text>
          <xsl:value-of select="//c:recordTarget/c:patientRole/c:patient/c:name/c:family"/>
        </p>
        <xsl:apply-templates select="//c:structuredBody/c:component/c:section"/>
      </body>
    </html>
  </xsl:template>
  <xsl:template match="c:section">
    <h2><xsl:value-of select="c:title"/></h2>
    <xsl:apply-templates select="c:text"/>
  </xsl:template>
  <xsl:template match="c:paragraph"><p><xsl:apply-templates/></p></xsl:template>
  <xsl:template match="c:table"><table><xsl:apply-templates/></table></xsl:template>
  <xsl:template match="c:tr"><tr><xsl:apply-templates/></tr></xsl:template>
  <xsl:template match="c:td"><td><xsl:apply-templates/></td></xsl:template>
  <xsl:template match="c:sup"><sup><xsl:apply-templates/></sup></xsl:template>
  <xsl:template match="c:entry"/>
"""
# Labels a rendering stylesheet looks up: enough of them that, written before the data,
# they push the ClinicalDocument past the first 4 KB a sniffer sees.
RENDERING_LABELS = (
    '  <xsl:variable name="labels">\n'
    + "".join(
        f'    <data:label code="{code}">{label}</data:label>\n'
        for code, label in [
            ("11502-2", "Compte rendu d'examens biologiques"),
            ("18748-4", "Compte rendu d'imagerie médicale"),
            ("57833-6", "Prescription de produits de santé"),
            ("57832-8", "Prescription de soins"),
            ("34133-9", "Synthèse d'épisode de soins"),
            ("29274-8", "Mesures de signes vitaux"),
            ("11488-4", "Compte rendu de consultation"),
            ("60591-5", "Synthèse médicale"),
        ]
        * 6
    )
    + "  </xsl:variable>\n"
)


def auto_presentable(cda: str, *, templates_first: bool) -> str:
    """A CDA shipped with its own rendering: an ``xsl:stylesheet`` root holding the document.

    ``templates_first`` writes the stylesheet before the data (the document then starts
    beyond the first 4 KB); otherwise the data comes first, as the CI-SIS examples do.
    """
    data = f"  <data:Contenu>\n{cda}  </data:Contenu>\n"
    stylesheet = RENDERING_LABELS + RENDERING_TEMPLATES
    return (
        PROLOG
        + "<!-- Document de test synthétique : aucune donnée réelle -->\n"
        + '<?xml-stylesheet type="text/xsl" href="#"?>\n'
        + '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"\n'
        + '  xmlns:c="urn:hl7-org:v3" xmlns:data="urn:carnet:test:contenu"\n'
        + '  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        + (stylesheet + data if templates_first else data + stylesheet)
        + "</xsl:stylesheet>\n"
    )


def cr_bio_auto() -> str:
    """CR-BIO level 3, auto-presentable, the document's elements prefixed (``c:``)."""
    cda = cr_bio_level3("1.2.250.1.999.6^AUTO-BIO-1")
    cda = prefixed(cda.replace(' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"', ""), "c")
    return auto_presentable(cda.replace(' xmlns:c="urn:hl7-org:v3"', ""), templates_first=False)


def cr_img_auto() -> str:
    """CR-IMG, auto-presentable with the stylesheet first and a default-namespace document."""
    cda = document(
        doc_id="1.2.250.1.999.6^AUTO-IMG-1",
        code="18748-4",
        display="CR d'imagerie médicale",
        title="Compte rendu d'échographie abdominale",
        time="20250203113000+0100",
        who=(INS_HADDAD, "Haddad", "Karim", "19780619", "M"),
        by=RADIOLOGY,
        exam="20250203110000+0100",
        body=narrative_body(
            [
                ("Indication", ["Douleurs de l'hypochondre droit."]),
                ("Technique", ["Échographie abdominale par voie sus-pubienne et sous-costale."]),
                (
                    "Résultat",
                    [
                        "Foie de taille normale, d'échostructure homogène.",
                        "Vésicule biliaire alithiasique, voies biliaires non dilatées.",
                    ],
                ),
                ("Conclusion", ["Échographie abdominale sans anomalie."]),
            ]
        ),
    )
    return auto_presentable(cda, templates_first=True)


def cr_signed() -> str:
    """A prescription enveloped in an XML signature (the CDA inside ``ds:Object``)."""
    cda = document(
        doc_id="1.2.250.1.999.6^SIGNED-RX-1",
        code="57833-6",
        display="Prescription de produits de santé",
        title="Ordonnance",
        time="20250210094500+0100",
        who=(INS_FAURE, "Faure", "Odile", "19650130", "F"),
        by=GP,
        body=narrative_body(
            [
                (
                    "Prescription",
                    [
                        "Amoxicilline 1 g : un comprimé matin et soir pendant 6 jours.",
                        "Paracétamol 1 g : un comprimé jusqu'à trois fois par jour si douleur.",
                    ],
                ),
                ("Commentaire", ["Contrôle radiographique thoracique si la toux persiste."]),
            ]
        ),
    )
    return (
        PROLOG
        + '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#" Id="signature-1">\n'
        + "  <ds:SignedInfo>\n"
        + '    <ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>\n'
        + '    <ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>\n'
        + '    <ds:Reference URI="#document-1"><ds:DigestValue>AAAA</ds:DigestValue></ds:Reference>\n'
        + "  </ds:SignedInfo>\n"
        + "  <ds:SignatureValue>c2lnbmF0dXJlIGZpY3RpdmU=</ds:SignatureValue>\n"
        + '  <ds:Object Id="document-1">\n'
        + cda
        + "  </ds:Object>\n</ds:Signature>\n"
    )


def cr_imagerie() -> str:
    """CR-IMAGERIE (CT with contrast): lab words in the text, the imaging code decides."""
    return PROLOG + document(
        doc_id="1.2.250.1.999.6^IMG-CT-1",
        code="18748-4",
        display="CR d'imagerie médicale",
        title="Compte rendu de scanner thoracique",
        time="20250304170000+0100",
        who=(INS_PETIT, "Petit", "Noah", "20020211", "M"),
        by=RADIOLOGY,
        exam="20250304160000+0100",
        body=narrative_body(
            [
                ("Indication", ["Bilan d'une dyspnée."]),
                (
                    "Technique",
                    [
                        "Acquisition hélicoïdale après injection de produit de contraste iodé.",
                        "Créatinine du laboratoire de biologie médicale : 72 µmol/L, "
                        "prélèvement du 01/03/2025.",
                    ],
                ),
                ("Résultat", ["Pas d'embolie pulmonaire. Parenchyme pulmonaire normal."]),
                ("Conclusion", ["Scanner thoracique normal."]),
            ]
        ),
    )


def remb() -> str:
    """Reimbursement data (national type REMB): a list of imaging acts, filed as other."""
    return PROLOG + document(
        doc_id="1.2.250.1.999.6^REMB-2025-01",
        code="REMB",
        display="Données de remboursement",
        title="Données de remboursement",
        time="20250401080000+0200",
        code_system=NATIONAL_TYPES,
        who=(INS_ROUX, "Roux", "Inès", "19990503", "F"),
        by=HOSPITAL,
        body=narrative_body(
            [
                (
                    "Actes remboursés",
                    [
                        "12/02/2025 : Scanner (tomodensitométrie) du thorax — centre d'imagerie médicale",
                        "14/02/2025 : IRM du genou droit — radiologie",
                        "20/02/2025 : Radiographie du thorax, deux incidences — cabinet de radiologie",
                        "03/03/2025 : Échographie abdominale — imagerie",
                    ],
                ),
            ]
        ),
    )


def vital_signs() -> str:
    """Vital signs (29274-8) noted at a pharmacy, with prescription words in the text."""
    return PROLOG + document(
        doc_id="1.2.250.1.999.6^VSM-1",
        code="29274-8",
        display="Mesures de signes vitaux",
        title="Mesures de signes vitaux",
        time="20250312101500+0100",
        who=(INS_FAURE, "Faure", "Odile", "19650130", "F"),
        by=GP,
        body=narrative_body(
            [
                (
                    "Mesures",
                    ["Pression artérielle : 128/82 mmHg", "Fréquence cardiaque : 72 /min", "Poids : 64 kg"],
                ),
                (
                    "Contexte",
                    [
                        "Mesures prises lors du renouvellement de l'ordonnance.",
                        "Posologie inchangée : un comprimé par jour, à renouveler en pharmacie.",
                    ],
                ),
            ]
        ),
    )


def synthesis() -> str:
    """A medical synthesis (national type SYNTH) quoting prescriptions and imaging."""
    return PROLOG + document(
        doc_id="1.2.250.1.999.6^SYNTH-1",
        code="SYNTH",
        display="Synthèse",
        code_system=NATIONAL_TYPES,
        title="Synthèse médicale",
        time="20250320150000+0100",
        who=(INS_HADDAD, "Haddad", "Karim", "19780619", "M"),
        by=GP,
        body=narrative_body(
            [
                ("Antécédents", ["Cholécystectomie en 2019."]),
                (
                    "Traitements",
                    [
                        "Ordonnance en cours : oméprazole 20 mg, un comprimé par jour, à renouveler.",
                        "Posologie adaptée par le médecin traitant.",
                    ],
                ),
                ("Examens", ["Échographie abdominale et radiographie récentes normales."]),
            ]
        ),
    )


def presc_kine_text() -> str:
    """A physiotherapy prescription (national type PRESC-KINE), level 1 with inline text."""
    text = (
        "Prescription d'actes de kinésithérapie\n"
        "Quinze séances de rééducation du genou droit, deux à trois fois par semaine.\n"
        "Fait le 05/03/2025 par le Dr Anne Generaliste."
    )
    return PROLOG + document(
        doc_id="1.2.250.1.999.6^KINE-1",
        code="PRESC-KINE",
        display="Prescription d'actes de kinésithérapie",
        code_system=NATIONAL_TYPES,
        title=None,
        time="20250305090000+0100",
        who=(INS_ROUX, "Roux", "Inès", "19990503", "F"),
        by=GP,
        body=non_xml_body(text, "text/plain"),
    )


def spaced_nir(value: str) -> str:
    """The 13-character NIR of an INS in its printed groups: 1 02 02 33 063 071."""
    return " ".join([value[0], value[1:3], value[3:5], value[5:7], value[7:10], value[10:13]])


def lab_lines(name: str, ins_value: str) -> list[str]:
    return [
        "Laboratoire Exemple Villeurbanne",
        "Compte rendu d'examens biologiques",
        f"Patient : {name}",
        f"INS : {spaced_nir(ins_value)}  {ins_value[13:]}",  # two spaces before the key
        "Prélèvement du 21/01/2025",
        "Hémoglobine : 14,1 g/dL (13,0 - 17,0)",
        "Leucocytes : 7,2 G/L (4,0 - 10,0)",
        "Plaquettes : 230 G/L (150 - 400)",
        "Validé par le Dr Sophie Biologiste, biologiste",
    ]


def _pdf_image_samples():  # type: ignore[no-untyped-def]
    """The PDF/image sample script next door: one way of drawing scans for all samples."""
    import importlib.util

    script = HERE.parent / "make_pdf_image_samples.py"
    spec = importlib.util.spec_from_file_location("make_pdf_image_samples", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scanned_pdf(lines: list[str]) -> bytes:
    """A one-page A4 PDF that is only a 300 dpi scan (no text layer), same bytes every run."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader

    scan = _pdf_image_samples().a4_scan(lines)
    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=A4, invariant=1, pageCompression=1)
    pdf.drawImage(ImageReader(scan), 0, 0, width=A4[0], height=A4[1])
    pdf.showPage()
    pdf.save()
    return out.getvalue()


def scanned_png(lines: list[str]) -> bytes:
    image = _pdf_image_samples().scan_image(lines, width_px=2000).convert("1")
    out = io.BytesIO()
    image.save(out, "PNG", dpi=(300, 300))
    return out.getvalue()


def cr_pdf_scan() -> str:
    """CR-BIO level 1 whose PDF is a scan: its text comes from OCR."""
    return PROLOG + document(
        doc_id="1.2.250.1.999.6^SCAN-BIO-1",
        code="11502-2",
        display="CR d'examens biologiques",
        title="Compte rendu d'examens biologiques (numérisé)",
        time="20250121170000+0100",
        who=(INS_PETIT, "Petit", "Noah", "20020211", "M"),
        by=LAB,
        exam="20250121080000+0100",
        body=non_xml_body(scanned_pdf(lab_lines("PETIT Noah", INS_PETIT)), "application/pdf"),
    )


def presc_png() -> str:
    """A prescription for nursing care (57832-8), level 1 with a PNG scan of the paper form."""
    lines = [
        "Dr Anne Generaliste - Maison de santé Exemple Marseille",
        "Ordonnance du 18/02/2025",
        "Patiente : FAURE Odile",
        "Soins infirmiers à domicile : pansement quotidien",
        "pendant 10 jours, à renouveler une fois.",
    ]
    return PROLOG + document(
        doc_id="1.2.250.1.999.6^RX-SCAN-1",
        code="57832-8",
        display="Prescription de soins",
        title="Prescription de soins infirmiers",
        time="20250218100000+0100",
        who=(INS_FAURE, "Faure", "Odile", "19650130", "F"),
        by=GP,
        body=non_xml_body(scanned_png(lines), "image/png", line=76),
    )


def cr_pdf_text_layer() -> str:
    """CR-BIO level 1 with a text-layer PDF, base64 without the representation attribute."""
    out = io.BytesIO()
    pdf = canvas.Canvas(out, invariant=1)
    pdf.setFont("Helvetica", 11)
    for i, line in enumerate(lab_lines("BERNARD Lucie", INS_BERNARD)):
        pdf.drawString(60, 770 - 18 * i, line.encode("latin-1", "replace").decode("latin-1"))
    pdf.showPage()
    pdf.save()
    return PROLOG + document(
        doc_id="1.2.250.1.999.6^PDF-BIO-2",
        code="11502-2",
        display="CR d'examens biologiques",
        title=None,
        time="20250121180000+0100",
        who=(INS_BERNARD, "Bernard", "Lucie", "19911007", "F"),
        by=LAB,
        exam="20250121080000+0100",
        body=non_xml_body(out.getvalue(), "application/pdf", representation=False),
    )


# An imaging report dictated into a word processor and sent as RTF (code page 1252 escapes,
# a Unicode escape, font and colour tables the reader must drop).
IMAGING_RTF = (
    r"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0\fswiss Arial;}}{\colortbl;\red0\green0\blue0;}"
    "\n"
    r"{\info{\author Secr\'e9tariat}}\f0\fs22 {\b Compte rendu de radiographie du genou droit}\par"
    "\n"
    r"Indication : gonalgie droite apr\'e8s chute.\par"
    "\n"
    r"Technique : clich\'e9s de face et de profil en charge.\par"
    "\n"
    r"R\'e9sultat : pas de fracture, interligne f\u233?moro-tibial conserv\'e9.\par"
    "\n"
    r"Conclusion : radiographie du genou droit normale.\par"
    "\n}"
)


def cr_img_rtf() -> str:
    """CR-IMG level 1 whose body is an RTF document (base64)."""
    return PROLOG + document(
        doc_id="1.2.250.1.999.6^IMG-RTF-1",
        code="18748-4",
        display="CR d'imagerie médicale",
        title="Compte rendu de radiographie",
        time="20250226120000+0100",
        who=(INS_BERNARD, "Bernard", "Lucie", "19911007", "F"),
        by=RADIOLOGY,
        exam="20250226110000+0100",
        body=non_xml_body(IMAGING_RTF.encode("ascii"), "text/rtf"),
    )


def cr_pdf_bad_base64() -> str:
    """A level-1 CDA whose base64 is broken in transfer (a stray character)."""
    good = cr_pdf()
    start = good.index('representation="B64">') + len('representation="B64">') + 40
    return good[:start] + "*" + good[start + 1 :]


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
    "cr-bio-auto.xml": cr_bio_auto,
    "cr-img-auto.xml": cr_img_auto,
    "cr-signed.xml": cr_signed,
    "cr-imagerie.xml": cr_imagerie,
    "remb.xml": remb,
    "vital-signs.xml": vital_signs,
    "synthesis.xml": synthesis,
    "presc-kine-text.xml": presc_kine_text,
    "cr-pdf-scan.xml": cr_pdf_scan,
    "presc-png.xml": presc_png,
    "cr-pdf-text-layer.xml": cr_pdf_text_layer,
    "cr-pdf-bad-base64.xml": cr_pdf_bad_base64,
    "cr-img-rtf.xml": cr_img_rtf,
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
