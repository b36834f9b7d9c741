"""Writes the synthetic, de-identified HL7 v2.5 ORU^R01 samples of this folder.

Run it from anywhere: ``.venv/bin/python tests/samples/hl7/make_samples.py``. Every person,
organisation and identifier is made up; INS keys are valid (key = 97 - NIR mod 97, with
2A -> 19 and 2B -> 18 for Corsica). The output is deterministic. ``oru_message`` is also
used by ``benchmarks/bench_hl7.py`` to generate load.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

from reportlab.pdfgen import canvas

HERE = Path(__file__).parent
INS_OID = "1.2.250.1.213.1.4.8"
FINESS_LAB = "690000123"  # made-up 9-digit FINESS
RPPS_BIOLOGIST = "10101234567"  # made-up 11-digit RPPS


def ins(nir: str) -> str:
    """The 15-character INS: the 13-character NIR followed by its 2-digit key."""
    number = int(nir.upper().replace("2A", "19").replace("2B", "18"))
    return f"{nir}{97 - number % 97:02d}"


INS_DUPONT = ins("2800175123456")  # Jeanne Dupont, born 1980-01-15
INS_SANTONI = ins("185122A004123")  # Pierre Santoni, born in Corse-du-Sud
INS_LEFEVRE = ins("2920369001002")  # Hélène Lefèvre

# (code, text, value type, value, unit, reference range, flag)
Result = tuple[str, str, str, str, str, str, str]
CBC: list[Result] = [
    ("718-7", "Hémoglobine", "NM", "13.5", "g/dL", "12.0-16.0", "N"),
    ("6690-2", "Leucocytes", "NM", "11.2", "10*9/L", "4.0-10.0", "H"),
    ("777-3", "Plaquettes", "NM", "250", "10*9/L", "150-400", "N"),
    ("2160-0", "Créatinine", "NM", "68", "umol/L", "45-90", "N"),
    ("2345-7", "Glucose", "NM", "5.1", "mmol/L", "3.9-5.8", "N"),
]


def pid(ins_value: str | None, ipp: str, family: str, given: str, birth: str, sex: str) -> str:
    ids = []
    if ins_value:
        ids.append(f"{ins_value}^^^ASIP-SANTE-INS-NIR&{INS_OID}&ISO^INS")
    ids.append(f"{ipp}^^^LABO-EXEMPLE&1.2.250.1.999.1.1.1&ISO^PI")
    return f"PID|1||{'~'.join(ids)}||{family}^{given}^^^^^L||{birth}|{sex}"


def obx(n: int, result: Result, when: str) -> str:
    code, text, vtype, value, unit, ref, flag = result
    return f"OBX|{n}|{vtype}|{code}^{text}^LN||{value}|{unit}^{unit}^UCUM|{ref}|{flag}|||F|||{when}"


def oru_message(
    control_id: str,
    patient: str,
    results: Sequence[Result] = CBC,
    *,
    when: str = "20240312083000",
    filler: str | None = None,
    title: str = "Numération formule sanguine",
    charset: str = "UNICODE UTF-8",
    status: str = "F",
    extra: Sequence[str] = (),
) -> str:
    """One ORU^R01 message (segments joined by \\r) with the standard separators."""
    segments = [
        f"MSH|^~\\&|SIL-LABO|LABO EXEMPLE^{FINESS_LAB}^FINESS|CARNET|CARNET|{when}||ORU^R01^ORU_R01"
        f"|{control_id}|P|2.5|||||FRA|{charset}",
        patient,
        f"ORC|RE|CMD-{control_id}|{filler or 'DOS-' + control_id}",
        f"OBR|1|CMD-{control_id}|{filler or 'DOS-' + control_id}|58410-2^{title}^LN|||{when}"
        f"|||||||||{RPPS_BIOLOGIST}^BERNARD^Luc||||||{when}|||{status}|||||||"
        f"{RPPS_BIOLOGIST}&BERNARD&Luc",
    ]
    segments += [obx(i, r, when) for i, r in enumerate(results, start=1)]
    segments += extra
    return "\r".join(segments)


def dupont() -> str:
    return pid(INS_DUPONT, "IPP0001", "DUPONT", "Jeanne", "19800115", "F")


def santoni() -> str:
    return pid(INS_SANTONI, "IPP0002", "SANTONI", "Pierre", "19851203", "M")


def pdf_report() -> bytes:
    buf = io.BytesIO()
    page = canvas.Canvas(buf, invariant=1)
    page.setFont("Helvetica", 12)
    lines = [
        "Laboratoire Exemple - Compte rendu",
        "Patiente : DUPONT Jeanne",
        "Glycemie a jeun : 0,95 g/L (0,70-1,10)",
        "Conclusion : bilan normal",
    ]
    for i, line in enumerate(lines):
        page.drawString(72, 760 - 20 * i, line)
    page.showPage()
    page.save()
    return buf.getvalue()


def samples() -> dict[str, bytes]:
    lab = "\r".join
    out: dict[str, bytes] = {}
    out["oru_single.hl7"] = (
        oru_message(
            "MSG0001",
            dupont(),
            extra=[
                "NTE|1||Prélèvement réalisé à jeun.\\.br\\Contrôle conseillé dans 3 mois.",
            ],
        )
        + "\r"
    ).encode()
    three = [oru_message(f"MSG010{i}", dupont() if i != 2 else santoni(), CBC[: i + 1]) for i in range(1, 4)]
    out["oru_three_lf.hl7"] = "\n".join(m.replace("\r", "\n") for m in three).encode() + b"\n"
    framed = [oru_message(f"MSG020{i}", dupont(), CBC[:2]) for i in (1, 2)]
    out["oru_mllp.hl7"] = b"".join(b"\x0b" + m.encode() + b"\r\x1c\r" for m in framed)
    batch = [oru_message(f"MSG030{i}", santoni(), CBC[:3]) for i in (1, 2)]
    out["oru_batch.hl7"] = lab(
        [
            "FHS|^~\\&|SIL-LABO|LABO EXEMPLE|CARNET|CARNET|20240312090000||lot-42.hl7",
            "BHS|^~\\&|SIL-LABO|LABO EXEMPLE|CARNET|CARNET|20240312090000",
            *batch,
            "BTS|2",
            "FTS|1",
            "",
        ]
    ).encode()
    out["oru_latin1.hl7"] = oru_message(
        "MSG0401",
        pid(INS_LEFEVRE, "IPP0003", "LEFÈVRE", "Hélène", "19920318", "F"),
        CBC[:1] + CBC[3:4],
        title="Bilan rénal",
        charset="8859/1",
    ).encode("iso-8859-1")
    escapes = [
        (
            "11502-2",
            "Commentaire",
            "TX",
            "Rapport A\\S\\B \\T\\ C\\F\\D\\R\\E \\E\\ fin\\.br\\Deuxième ligne \\X41\\\\X42\\",
            "",
            "",
            "",
        ),
        ("5778-6", "Couleur urine", "ST", "Jaune \\H\\clair\\N\\", "", "", ""),
    ]
    out["oru_escapes.hl7"] = oru_message(
        "MSG0501",
        dupont(),
        escapes,
        extra=[
            "NTE|1||Résultat \\S\\ contrôlé\\.br\\par le biologiste",
        ],
    ).encode()
    # Every separator changed: field #, component !, repetition *, escape /, subcomponent $.
    custom = oru_message(
        "MSG0601",
        dupont(),
        CBC[:1] + CBC[3:4],
        extra=[
            "NTE|1||Seuil A\\S\\B dépassé",
        ],
    )
    table = str.maketrans({"|": "#", "^": "!", "~": "*", "\\": "/", "&": "$"})
    out["oru_custom_separators.hl7"] = custom.translate(table).encode()
    pdf = base64.b64encode(pdf_report()).decode()
    out["oru_pdf.hl7"] = oru_message(
        "MSG0701",
        dupont(),
        CBC[4:5],
        extra=[
            f"OBX|2|ED|PDF^Compte rendu PDF^L||^application^pdf^Base64^{pdf}||||||F",
        ],
    ).encode()
    out["oru_visibility.hl7"] = oru_message(
        "MSG0801",
        dupont(),
        CBC[:1],
        extra=[
            "OBX|2|CE|MASQUE_PS^Masqué aux professionnels de santé^L||Y||||||F",
            "OBX|3|CE|INVISIBLE_PATIENT^Invisible pour le patient^L||N||||||F",
            "OBX|4|CE|INVISIBLE_REPRESENTANTS_LEGAUX^Invisible représentants légaux^L||1||||||F",
        ],
    ).encode()
    out["oru_correction.hl7"] = oru_message(
        "MSG0902", dupont(), CBC[:1], filler="DOS-MSG0901", status="C"
    ).encode()
    out["broken_msh.hl7"] = lab(
        ["MSH|^~\\&|SIL-LABO|LABO EXEMPLE", dupont(), obx(1, CBC[0], "20240312083000")]
    ).encode()
    broken = oru_message("MSG1002", santoni(), CBC[:1], extra=["QQQ|1|inconnu"])
    out["oru_two_good_one_broken.hl7"] = "\r".join(
        [
            oru_message("MSG1001", dupont(), CBC[:2]),
            broken,
            oru_message("MSG1003", dupont(), CBC[2:3]),
        ]
    ).encode()
    return out


def main() -> None:
    for name, data in samples().items():
        (HERE / name).write_bytes(data)
        print(f"wrote {name} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
