"""Writes the synthetic, de-identified text PDFs of this folder: lab reports whose INS is
printed the way PDF text layers really give it (run it from anywhere).

Each report is the same short blood count; only the identity block changes: the groups of
the INS separated by several spaces, no-break or narrow no-break spaces, thin or figure
spaces, drawn as separate text runs, wrapped onto the next line, in a table cell; a
child's report with the insured parent's number beside the child's own INS; and the
cases that must still be refused (two different INS both the patient's, only the insured
person's number). Every person and number is made up; the INS keys are valid
(key = 97 - NIR mod 97). The output is deterministic: re-running changes nothing.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

HERE = Path(__file__).parent
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")  # Debian package fonts-dejavu-core


def ins(nir: str) -> str:
    """The 15-character INS: the 13-character NIR followed by its 2-digit key."""
    number = int(nir.upper().replace("2A", "19").replace("2B", "18"))
    return f"{nir}{97 - number % 97:02d}"


INS_ADULT = ins("1670153130889")  # 1 67 01 53 130 889 66: the spacing the issue quotes
INS_CHILD = ins("2150675123004")  # Léa Dupont, born 06/2015
INS_PARENT = ins("1830369123456")  # Marc Dupont, her father, the insured person
INS_OTHER = ins("2880133001017")


def groups(value: str) -> list[str]:
    return [value[0], value[1:3], value[3:5], value[5:7], value[7:10], value[10:13], value[13:]]


def spaced(value: str, gap: str = " ", key_gap: str | None = None) -> str:
    g = groups(value)
    return gap.join(g[:-1]) + (gap if key_gap is None else key_gap) + g[-1]


# A line is text, or a list of (x in points, text) runs drawn separately on one baseline.
Line = str | list[tuple[float, str]]

HEADER: list[Line] = [
    "Laboratoire de biologie médicale des Tilleuls",
    "Compte rendu d'examens biologiques",
    "",
]
RESULTS: list[Line] = [
    "Prélèvement du 14/01/2025 à 08h10",
    "",
    "Hématologie",
    "Hémoglobine : 13,9 g/dL (12,0 - 17,0)",
    "Leucocytes : 6,4 G/L (4,0 - 10,0)",
    "Plaquettes : 262 G/L (150 - 400)",
    "",
    "Validé par le Dr Hélène Dupré, biologiste",
]


def report(identity: list[Line]) -> list[Line]:
    return HEADER + identity + [""] + RESULTS


def text_pdf(lines: list[Line]) -> bytes:
    """One A4 page with a real text layer (same bytes every run)."""
    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=A4, invariant=1, pageCompression=1)
    pdf.setTitle("Compte rendu d'examens biologiques")
    y = A4[1] - 72
    for line in lines:
        pdf.setFont("DejaVuSans", 11)
        for x, text in [(60.0, line)] if isinstance(line, str) else line:
            pdf.drawString(x, y, text)
        y -= 18
    pdf.showPage()
    pdf.save()
    return out.getvalue()


def runs(x: float, texts: list[str], step: float) -> list[tuple[float, str]]:
    """Texts drawn as separate runs ``step`` points apart (table cells, justified groups)."""
    return [(x + i * step, text) for i, text in enumerate(texts)]


SAMPLES: dict[str, Callable[[], list[Line]]] = {
    # The example: two spaces before the key.
    "ins-two-spaces.pdf": lambda: report(
        ["Patient : M. MARTIN Louis", f"INS : {spaced(INS_ADULT, ' ', '  ')}"]
    ),
    "ins-narrow-nbsp.pdf": lambda: report(
        ["Patient : M. MARTIN Louis", f"INS\u00a0:\u202f{spaced(INS_ADULT, chr(0x202F))}"]
    ),
    "ins-thin-figure-spaces.pdf": lambda: report(
        ["Patient : M. MARTIN Louis", f"N° SS : {spaced(INS_ADULT, chr(0x2009), chr(0x2007) * 2)}"]
    ),
    "ins-key-next-line.pdf": lambda: report(
        ["Patient : M. MARTIN Louis", f"INS : {' '.join(groups(INS_ADULT)[:-1])}", f"{INS_ADULT[13:]}"]
    ),
    "ins-label-above.pdf": lambda: report(
        ["Patient : M. MARTIN Louis", "Matricule INS :", spaced(INS_ADULT)]
    ),
    "ins-positioned-groups.pdf": lambda: report(
        ["Patient : M. MARTIN Louis", [(60, "INS :"), *runs(110, groups(INS_ADULT), 34)]]
    ),
    "ins-table-columns.pdf": lambda: report(
        [[(60, "Patient"), (300, "M. MARTIN Louis")], [(60, "NIR"), (300, spaced(INS_ADULT, "  "))]]
    ),
    # A child's report: the insured parent's number beside the child's own INS.
    "parent-child-lines.pdf": lambda: report(
        [
            f"Assuré : DUPONT Marc    N° SS : {spaced(INS_PARENT)}",
            f"Bénéficiaire : DUPONT Léa, née le 02/06/2015    INS : {spaced(INS_CHILD, chr(0xA0))}",
        ]
    ),
    "parent-child-block.pdf": lambda: report(
        [
            "Bénéficiaire",
            "Nom : DUPONT Léa, née le 02/06/2015",
            f"INS : {spaced(INS_CHILD, chr(0x202F))}",
            "",
            "Ouvrant droit",
            "Nom : DUPONT Marc",
            f"N° d'immatriculation : {spaced(INS_PARENT)}",
        ]
    ),
    # Still refused: two different numbers both the patient's, or only the insured's.
    "two-patient-ins.pdf": lambda: report(
        ["Patient : M. MARTIN Louis", f"INS : {spaced(INS_ADULT)}", f"NIR : {spaced(INS_OTHER, '  ')}"]
    ),
    "insured-only.pdf": lambda: report(
        ["Assuré : DUPONT Marc", f"N° d'immatriculation de l'assuré : {spaced(INS_PARENT)}"]
    ),
    # Long numbers that are not identifiers around the real one.
    "decoys.pdf": lambda: report(
        [
            "Patient : M. MARTIN Louis   Tél : 06 12 34 56 78",
            f"INS : {spaced(INS_ADULT, chr(0xA0), '  ')}",
            "Prescripteur RPPS : 10101234567 — FINESS : 690001235",
            f"Dossier n° {spaced(INS_OTHER)} du 14/01/2025 08:10",
        ]
    ),
}


def main(out: Path = HERE) -> None:
    pdfmetrics.registerFont(TTFont("DejaVuSans", str(FONT)))
    for name, build in SAMPLES.items():
        (out / name).write_bytes(text_pdf(build()))
        print(f"wrote {name}")


if __name__ == "__main__":
    main()
