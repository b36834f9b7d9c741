"""What a synthetic report says: biology results, imaging findings, prescriptions.

A ``Report`` holds the content of one document independently of its format; the
writers in ``formats`` turn it into PDF, scan, HL7 or CDA bytes. The vocabulary is
realistic French (LOINC codes and UCUM units for lab results) so that classification,
search and date extraction meet what real producers send.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field, replace

from generator.people import Patient, Producer, Professional
from pipeline.model import DocClass

BIOLOGY_CODE = "11502-2"
IMAGING_CODE = "18748-4"
PRESCRIPTION_CODE = "57833-6"
TYPE_LABELS = {
    BIOLOGY_CODE: "CR d'examens biologiques",
    IMAGING_CODE: "CR d'imagerie médicale",
    PRESCRIPTION_CODE: "Prescription de produits de santé",
}


@dataclass(frozen=True)
class Analyte:
    name: str
    loinc: str
    ucum: str  # unit as sent in HL7 / CDA
    printed_unit: str  # unit as printed on a paper report
    low: float
    high: float
    decimals: int
    panel: str


ANALYTES = (
    Analyte("Hémoglobine", "718-7", "g/dL", "g/dL", 12.0, 16.5, 1, "Hémogramme"),
    Analyte("Leucocytes", "6690-2", "10*9/L", "G/L", 4.0, 10.0, 2, "Hémogramme"),
    Analyte("Plaquettes", "777-3", "10*9/L", "G/L", 150, 400, 0, "Hémogramme"),
    Analyte("Créatinine", "14682-9", "umol/L", "µmol/L", 45, 104, 0, "Bilan rénal"),
    Analyte("Glycémie à jeun", "14749-6", "mmol/L", "mmol/L", 3.9, 5.8, 2, "Bilan glucidique"),
    Analyte("HbA1c", "4548-4", "%", "%", 4.0, 6.0, 1, "Bilan glucidique"),
    Analyte("TSH", "3016-3", "m[IU]/L", "mUI/L", 0.4, 4.0, 2, "Bilan thyroïdien"),
    Analyte("Ferritine", "2276-4", "ug/L", "µg/L", 30, 300, 0, "Bilan martial"),
    Analyte("Protéine C réactive", "1988-5", "mg/L", "mg/L", 0, 5, 1, "Inflammation"),
)
# OBR-4 codes by panel (LOINC order codes).
PANEL_CODES = {
    "Hémogramme": ("58410-2", "Numération formule sanguine"),
    "Bilan rénal": ("24362-6", "Bilan rénal"),
    "Bilan glucidique": ("24323-8", "Bilan métabolique"),
    "Bilan thyroïdien": ("3016-3", "TSH"),
    "Bilan martial": ("2276-4", "Ferritine"),
    "Inflammation": ("1988-5", "CRP"),
}


# The word each analyte is searched by (the first word of its printed name).
def _search_word(a: Analyte) -> str:
    return a.name.split()[0]


def _plain_first(terms: list[str]) -> tuple[str, ...]:
    """Accent-free terms first: the safest ones for a search check."""
    return tuple(sorted(dict.fromkeys(terms), key=lambda t: not t.isascii()))


@dataclass(frozen=True)
class Result:
    analyte: Analyte
    value: float

    @property
    def text(self) -> str:
        return f"{self.value:.{self.analyte.decimals}f}"

    @property
    def printed(self) -> str:
        return self.text.replace(".", ",")  # French decimal comma on paper

    @property
    def flag(self) -> str:
        if self.value < self.analyte.low:
            return "L"
        if self.value > self.analyte.high:
            return "H"
        return "N"

    @property
    def range_text(self) -> str:
        d = self.analyte.decimals
        return f"{self.analyte.low:.{d}f}-{self.analyte.high:.{d}f}"


@dataclass(frozen=True)
class Exam:
    title: str
    modality: str
    technique: str
    findings: tuple[str, ...]
    conclusions: tuple[str, ...]
    key_term: str
    indications: tuple[str, ...]


EXAMS = (
    Exam(
        "Radiographie thoracique de face",
        "DX",
        "Cliché de face en inspiration profonde, debout.",
        (
            "Parenchyme pulmonaire sans foyer de condensation.",
            "Culs-de-sac pleuraux libres.",
            "Silhouette cardiaque de taille normale.",
        ),
        (
            "Radiographie thoracique sans anomalie décelable.",
            "Discret syndrome bronchique, sans foyer pneumonique.",
        ),
        "thoracique",
        ("Toux persistante depuis trois semaines.", "Fièvre et dyspnée."),
    ),
    Exam(
        "Échographie abdominale",
        "US",
        "Examen réalisé à jeun, sonde convexe.",
        (
            "Foie de taille normale, d'échostructure homogène.",
            "Vésicule biliaire alithiasique.",
            "Reins de taille normale, sans dilatation des cavités pyélocalicielles.",
        ),
        ("Échographie abdominale normale.", "Stéatose hépatique modérée, sans lésion focale."),
        "abdominale",
        ("Douleurs de l'hypocondre droit.", "Bilan hépatique perturbé."),
    ),
    Exam(
        "IRM du genou droit",
        "MR",
        "Séquences sagittales, coronales et axiales DP FS, T1.",
        (
            "Fissure horizontale de la corne postérieure du ménisque médial.",
            "Ligaments croisés continus.",
            "Épanchement articulaire de faible abondance.",
        ),
        ("Lésion méniscale médiale de grade 2.", "Pas de rupture ligamentaire."),
        "genou",
        ("Gonalgie droite après torsion.", "Blocage intermittent du genou droit."),
    ),
    Exam(
        "Scanner thoracique sans injection",
        "CT",
        "Acquisition hélicoïdale, coupes de 1 mm.",
        ("Absence de nodule pulmonaire suspect.", "Pas d'adénomégalie médiastinale."),
        ("Scanner thoracique sans anomalie significative.",),
        "scanner",
        ("Suivi d'un tabagisme ancien.", "Toux chronique."),
    ),
    Exam(
        "Mammographie bilatérale",
        "MG",
        "Incidences face et oblique externe bilatérales.",
        ("Seins de densité de type B.", "Absence de masse ou de foyer de microcalcifications."),
        ("Mammographie classée ACR 1.",),
        "mammographie",
        ("Dépistage organisé.", "Contrôle annuel."),
    ),
)


@dataclass(frozen=True)
class Drug:
    name: str
    form: str
    posology: str


DRUGS = (
    Drug("Amoxicilline 1 g", "comprimé", "1 comprimé matin et soir pendant 7 jours"),
    Drug("Paracétamol 1000 mg", "comprimé", "1 comprimé jusqu'à 3 fois par jour si douleur"),
    Drug("Metformine 850 mg", "comprimé", "1 comprimé matin et soir au cours des repas"),
    Drug("Ramipril 5 mg", "gélule", "1 gélule le matin"),
    Drug("Atorvastatine 20 mg", "comprimé", "1 comprimé le soir"),
    Drug("Levothyroxine 75 µg", "comprimé", "1 comprimé le matin à jeun"),
    Drug("Ibuprofène 400 mg", "comprimé", "1 comprimé 3 fois par jour pendant 5 jours"),
    Drug("Oméprazole 20 mg", "gélule", "1 gélule le matin pendant 4 semaines"),
    Drug("Salbutamol 100 µg", "aérosol", "2 bouffées en cas de gêne respiratoire"),
    Drug("Cétirizine 10 mg", "comprimé", "1 comprimé le soir pendant 1 mois"),
)


@dataclass(frozen=True)
class Report:
    """The content of one document, whatever its format."""

    doc_class: DocClass
    type_code: str
    title: str
    date: dt.date
    time: dt.time
    patient: Patient
    producer: Producer
    author: Professional
    order_number: str  # producer's document / filler order number
    sections: tuple[tuple[str, tuple[str, ...]], ...] = ()
    results: tuple[Result, ...] = ()
    drugs: tuple[Drug, ...] = ()
    renewals: int = 0
    key_terms: tuple[str, ...] = field(default=())
    corrected: bool = False

    @property
    def moment(self) -> dt.datetime:
        return dt.datetime.combine(self.date, self.time)


def _moment(rng: random.Random) -> dt.time:
    return dt.time(rng.randrange(7, 19), rng.choice((0, 10, 15, 20, 30, 40, 45, 50)))


def _value(rng: random.Random, a: Analyte) -> Result:
    span = a.high - a.low
    if rng.random() < 0.2:  # out of range, either side
        value = (
            a.high + span * rng.uniform(0.05, 0.6)
            if rng.random() < 0.6
            else max(a.low - span * rng.uniform(0.05, 0.3), a.low * 0.5)
        )
    else:
        value = a.low + span * rng.uniform(0.1, 0.9)
    return Result(a, round(value, a.decimals))


def biology_report(
    rng: random.Random,
    patient: Patient,
    producer: Producer,
    author: Professional,
    date: dt.date,
    order_number: str,
) -> Report:
    panels = sorted({a.panel for a in ANALYTES})
    chosen = rng.sample(panels, rng.randrange(1, 4))
    if "Hémogramme" not in chosen and rng.random() < 0.5:
        chosen.append("Hémogramme")
    results = tuple(_value(rng, a) for a in ANALYTES if a.panel in chosen)
    comment = "Résultats contrôlés et validés par le biologiste."
    terms = _plain_first([_search_word(r.analyte) for r in results])
    return Report(
        doc_class=DocClass.BIOLOGY,
        type_code=BIOLOGY_CODE,
        title="Compte rendu d'examens biologiques",
        date=date,
        time=_moment(rng),
        patient=patient,
        producer=producer,
        author=author,
        order_number=order_number,
        results=results,
        sections=(("Commentaire", (comment,)),),
        key_terms=terms,
    )


def corrected_biology(rng: random.Random, report: Report) -> Report:
    """The same order with changed values (an HL7 correction, OBR-25 = C)."""
    changed = tuple(
        Result(r.analyte, round(r.value * rng.uniform(1.08, 1.25), r.analyte.decimals))
        for r in report.results
    )
    return replace(
        report,
        results=changed,
        corrected=True,
        sections=(("Commentaire", ("Résultats corrigés : erreur de saisie rectifiée.",)),),
    )


def imaging_report(
    rng: random.Random,
    patient: Patient,
    producer: Producer,
    author: Professional,
    date: dt.date,
    order_number: str,
) -> Report:
    exam = rng.choice(EXAMS)
    conclusion = rng.choice(exam.conclusions)
    return Report(
        doc_class=DocClass.IMAGING,
        type_code=IMAGING_CODE,
        title="Compte rendu d'imagerie médicale",
        date=date,
        time=_moment(rng),
        patient=patient,
        producer=producer,
        author=author,
        order_number=order_number,
        sections=(
            ("Examen", (exam.title,)),
            ("Indication", (rng.choice(exam.indications),)),
            ("Technique", (exam.technique,)),
            ("Résultats", exam.findings),
            ("Conclusion", (f"Conclusion : {conclusion}",)),
        ),
        key_terms=(exam.key_term, "imagerie"),
    )


def revised_imaging(report: Report) -> Report:
    """Version 2 of an imaging report: an addendum changes the conclusion."""
    sections = tuple(s for s in report.sections if s[0] != "Conclusion") + (
        (
            "Conclusion",
            (
                "Conclusion : compte rendu complété après relecture, "
                "pas de modification de la prise en charge.",
            ),
        ),
        ("Addendum", ("Addendum : comparaison avec l'examen antérieur, aspect stable.",)),
    )
    return replace(report, sections=sections, key_terms=report.key_terms + ("addendum",))


def prescription(
    rng: random.Random,
    patient: Patient,
    producer: Producer,
    author: Professional,
    date: dt.date,
    order_number: str,
) -> Report:
    drugs = tuple(rng.sample(DRUGS, rng.randrange(1, 4)))
    renewals = rng.choice((0, 0, 1, 2, 3))
    lines = [f"{d.name} ({d.form}) : {d.posology}" for d in drugs]
    if renewals:
        lines.append(f"Ordonnance à renouveler {renewals} fois. QSP 3 mois.")
    return Report(
        doc_class=DocClass.PRESCRIPTION,
        type_code=PRESCRIPTION_CODE,
        title="Ordonnance",
        date=date,
        time=_moment(rng),
        patient=patient,
        producer=producer,
        author=author,
        order_number=order_number,
        drugs=drugs,
        renewals=renewals,
        sections=(("Prescription de produits de santé", tuple(lines)),),
        key_terms=(drugs[0].name.split()[0], "ordonnance"),
    )


def report_lines(report: Report) -> list[str]:
    """The body of the report as printed lines (results table, sections)."""
    lines: list[str] = []
    if report.results:
        lines.append(f"Prélèvement du {report.date:%d/%m/%Y} à {report.time:%H:%M}")
        lines.append("Analyse | Résultat | Unité | Valeurs de référence")
        panel = None
        for r in report.results:
            if r.analyte.panel != panel:
                panel = r.analyte.panel
                lines.append(panel.upper())
            flag = "" if r.flag == "N" else f" ({r.flag})"
            lines.append(
                f"{r.analyte.name} : {r.printed}{flag} {r.analyte.printed_unit} "
                f"({r.range_text.replace('.', ',')})"
            )
    elif report.doc_class is DocClass.IMAGING:
        lines.append(f"Examen réalisé le {report.date:%d/%m/%Y}")
    for heading, body in report.sections:
        if heading == "Conclusion":
            lines.extend(body)  # already "Conclusion : …"
        elif report.doc_class is DocClass.PRESCRIPTION:
            lines.append(heading)
            lines.extend(body)
        elif len(body) == 1:
            lines.append(f"{heading} : {body[0]}")
        else:
            lines.append(f"{heading} :")
            lines.extend(body)
    return lines
