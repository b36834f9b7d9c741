"""Units of lab results: UCUM parsing, the kind of quantity a unit measures, analytes.

A result's unit is judged by the *kind of quantity* it measures — mass or substance
concentration, number concentration, fraction, rate, dose… — not by a list of spellings:
``mL/min/{1.73_m2}`` for a clearance, ``pg`` for a mean corpuscular haemoglobin or
``mGy.cm`` for a dose-length product are as right as ``umol/L`` for a creatinine.

Units are parsed with ``ucumvert`` (the full UCUM grammar, generated from the official
``ucum-essence.xml``) into ``pint`` quantities, whose dimensions give the kind and whose
magnitudes let a value be compared across units (``mmol/L`` and ``umol/L``). Local
spellings found on French reports (``µ``, ``UI``, ``G/L``, ``x10E3/µL``, ``1,73 m²``) are
mapped to UCUM first by ``to_ucum``. Both libraries are imported on first use only.

``ANALYTES`` is the table of analytes Carnet knows: for each, the kinds it is measured
as and, per kind, the *limits* a patient's value can take as labs report it (wide: they
cover every specimen the name may refer to — urine as well as blood — and the extremes
of disease). A value outside them is what a unit slip or an OCR misreading looks like;
``pipeline.quality`` decides what that means for a result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache, lru_cache
from typing import Any

from pipeline.classification import fold


class Kind(StrEnum):
    """Kinds of quantity a lab or imaging result measures (told apart by UCUM dimensions)."""

    MASS_CONCENTRATION = "mass concentration"
    SUBSTANCE_CONCENTRATION = "substance concentration"
    NUMBER_CONCENTRATION = "number concentration"
    CATALYTIC_CONCENTRATION = "catalytic concentration"
    ARBITRARY_CONCENTRATION = "arbitrary concentration"  # [IU]/L, [arb'U]/mL
    COUNT_PER_FIELD = "count per microscope field"  # /[HPF]
    FRACTION = "fraction or ratio"  # %, L/L, mmol/mol, 1
    MASS = "mass"  # entitic mass, e.g. pg for MCH
    SUBSTANCE = "amount of substance"  # entitic amount, e.g. fmol for MCH
    VOLUME = "volume"  # entitic volume, e.g. fL for MCV
    VOLUME_RATE = "volume rate"  # mL/min (clearance, GFR)
    MASS_RATE = "mass rate"  # g/(24.h)
    SUBSTANCE_RATE = "substance rate"  # mmol/(24.h)
    ABSORBED_DOSE = "absorbed dose"  # mGy
    DOSE_LENGTH = "dose-length product"  # mGy.cm
    DOSE_AREA = "dose-area product"  # Gy.cm2
    TIME = "time"  # s
    LENGTH = "length"  # mm
    LENGTH_RATE = "length rate"  # mm/h (ESR)
    PRESSURE = "pressure"
    TEMPERATURE = "temperature"
    MASS_PER_SUBSTANCE = "mass per amount of substance"  # mg/mmol (ratio to creatinine)
    ARBITRARY = "arbitrary amount"  # [IU]


# One UCUM unit of each kind: its dimensions are the kind's. Arbitrary kinds are told
# apart by their atoms (UCUM's arbitrary units are dimensionless in pint).
_KIND_UNITS: dict[Kind, str] = {
    Kind.MASS_CONCENTRATION: "g/L",
    Kind.SUBSTANCE_CONCENTRATION: "mol/L",
    Kind.NUMBER_CONCENTRATION: "/L",
    Kind.CATALYTIC_CONCENTRATION: "kat/L",
    Kind.FRACTION: "1",
    Kind.MASS: "g",
    Kind.SUBSTANCE: "mol",
    Kind.VOLUME: "L",
    Kind.VOLUME_RATE: "L/s",
    Kind.MASS_RATE: "g/s",
    Kind.SUBSTANCE_RATE: "mol/s",
    Kind.ABSORBED_DOSE: "Gy",
    Kind.DOSE_LENGTH: "Gy.m",
    Kind.DOSE_AREA: "Gy.m2",
    Kind.TIME: "s",
    Kind.LENGTH: "m",
    Kind.LENGTH_RATE: "m/s",
    Kind.PRESSURE: "Pa",
    Kind.TEMPERATURE: "K",
    Kind.MASS_PER_SUBSTANCE: "g/mol",
}
_ARBITRARY_ATOM = re.compile(
    r"\[(?:IU|iU|arb'U|USP'U|[A-Za-z]+'U|CFU|PFU|FFU|AU|BAU|PNU|IR|Lf|EU|ELU|"
    r"CCID_50|TCID_50|EID_50|D'ag'U|FEU)\]"
)
_FIELD_ATOM = re.compile(r"\[(?:HPF|LPF)\]")

# Spellings found on French reports and HL7 feeds, mapped to UCUM (in this order).
_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789")
_LOCAL: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"[µμ]"), "u"),
    (re.compile(r"^\s*[x×]?\s*10\s*(?:\^|\*|[eE])?\s*([0-9]+)\s*(?=/)"), r"10*\1"),  # x10E3/µL
    (re.compile(r"^(?:G|giga)\s*/\s*[lL]$"), "10*9/L"),
    (re.compile(r"^(?:T|tera)\s*/\s*[lL]$"), "10*12/L"),
    (re.compile(r"/\s*1[,.]73\s*m2"), "/{1.73_m2}"),  # mL/min/1,73 m²
    (re.compile(r"(?<=/)mn\b"), "min"),  # the French "mn" for minute
    (re.compile(r"(?<=/)\s*24\s*h\b"), "(24.h)"),  # excretion per 24 hours
    (re.compile(r"\bsec(?:ondes?)?\b"), "s"),
    (re.compile(r"mmHg"), "mm[Hg]"),
    (re.compile(r"(?<=/)ML\b"), "mL"),  # OCR's capitals: no lab reports per megalitre
    (re.compile(r"(?<![\w\[])([kmunp]?)(?:UI|IU|U\.I\.)(?![\w\]])"), r"\1[IU]"),
    (re.compile(r"(?<![\w\[])UA(?![\w\]])"), "[arb'U]"),
    (re.compile(r"Eq\b"), "eq"),
    (re.compile(r"\s*[·•]\s*|\s+[x×]\s+|(?<=[A-Za-z])\*(?=[A-Za-z])"), "."),  # mGy·cm, mGy x cm, mGy*cm
    (re.compile(r"\s+"), ""),
)


@lru_cache(maxsize=4096)  # a feed prints few spellings, again and again
def to_ucum(unit: str) -> str:
    """``unit`` with the common local spellings replaced by their UCUM form."""
    # "10⁹/L": the superscript is an exponent of ten, not more digits.
    out = re.sub(r"10([⁰¹²³⁴⁵⁶⁷⁸⁹]+)", lambda m: "10*" + m.group(1).translate(_SUPERSCRIPTS), unit.strip())
    out = out.translate(_SUPERSCRIPTS)
    for pattern, repl in _LOCAL:
        out = pattern.sub(repl, out)
    return out


# -- parsing (ucumvert + pint, loaded on first use) --------------------------------------------


class _Ucum:
    """The UCUM parser and a private pint registry with ucumvert's UCUM definitions.

    A private registry: ucumvert's ``PintUcumRegistry`` also loads its definitions into
    pint's process-wide application registry, which Carnet leaves alone.
    """

    def __init__(self) -> None:
        from importlib.resources import files

        import pint
        from ucumvert import UcumToPintTransformer, get_ucum_parser

        self.registry: Any = pint.UnitRegistry()
        self.registry.load_definitions(str(files("ucumvert") / "pint_ucum_defs.txt"))
        self.parser = get_ucum_parser()
        self.transformer = UcumToPintTransformer(ureg=self.registry)
        self.dimensions = {
            kind: self.quantity(self.parser.parse(u)).dimensionality for kind, u in _KIND_UNITS.items()
        }

    def quantity(self, tree: Any) -> Any:
        """The pint quantity of a parsed UCUM unit (a pure annotation such as ``{ratio}`` is 1)."""
        from lark import Token

        q = self.transformer.transform(tree)
        return self.registry.Quantity(1) if isinstance(q, Token) else q


@cache
def _ucum() -> _Ucum:
    return _Ucum()


@dataclass(frozen=True)
class ParsedUnit:
    """A unit read as UCUM: ``kind`` None when UCUM-valid but of a kind Carnet does not know."""

    ucum: str
    kind: Kind | None
    quantity: Any = field(repr=False, compare=False)  # pint quantity of 1 unit, None if unknown


# The longest unit read as UCUM. Real ones are short ("mL/min/{1.73_m2}", "10*9/L", an
# annotation or two); lark's parse and ucumvert's transformer recurse per term and per
# parenthesis, so a long product or deep nesting in a producer's OBX-6 ("mg.mg.mg…", "(((…")
# raised RecursionError in the quality gate and killed the whole run.
MAX_UNIT_CHARS = 80


@cache
def parse_unit(ucum: str) -> ParsedUnit | None:
    """``ucum`` parsed (None when it is not valid UCUM, or longer than ``MAX_UNIT_CHARS``)."""
    from lark.exceptions import LarkError

    if not ucum or len(ucum) > MAX_UNIT_CHARS:
        return None
    u = _ucum()
    try:
        tree = u.parser.parse(ucum)
    except LarkError:
        return None
    try:
        q = u.quantity(tree)
    except (LarkError, ArithmeticError, ValueError):  # valid UCUM pint cannot represent ([pH])
        return ParsedUnit(ucum, None, None)
    dims = q.dimensionality
    kind = next((k for k, d in u.dimensions.items() if d == dims), None)
    if _ARBITRARY_ATOM.search(ucum):
        kind = (
            Kind.ARBITRARY_CONCENTRATION
            if dims == u.dimensions[Kind.NUMBER_CONCENTRATION]
            else Kind.ARBITRARY
            if kind is Kind.FRACTION
            else None
        )
    elif _FIELD_ATOM.search(ucum):
        kind = Kind.COUNT_PER_FIELD
    return ParsedUnit(ucum, kind, q)


def is_valid_ucum(unit: str) -> bool:
    """True when ``unit`` (already in UCUM spelling) parses as a UCUM expression."""
    return parse_unit(unit) is not None


def convert(value: float, from_unit: ParsedUnit, to_ucum_unit: str) -> float | None:
    """``value`` in ``from_unit`` expressed in ``to_ucum_unit`` (None if not commensurable)."""
    if from_unit.quantity is None:
        return None
    factor = _factor(from_unit.ucum, to_ucum_unit)
    if factor is None:
        return None
    converted = value * factor
    return converted if math.isfinite(converted) else None


@lru_cache(maxsize=4096)
def _factor(from_ucum: str, to_ucum_unit: str) -> float | None:
    """What one ``from_ucum`` is in ``to_ucum_unit`` (None if not commensurable): pint's
    arithmetic once per pair of units, not once per value (UCUM conversions are linear)."""
    source, target = parse_unit(from_ucum), parse_unit(to_ucum_unit)
    if source is None or source.quantity is None or target is None or target.quantity is None:
        return None
    if source.quantity.dimensionality != target.quantity.dimensionality:
        return None
    try:
        factor = float((source.quantity / target.quantity).to("dimensionless").magnitude)
    except (ArithmeticError, ValueError):  # 10*999999: a factor no float holds
        return None
    return factor if math.isfinite(factor) else None


# -- analytes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Values a patient's result can take, as labs report it, in ``unit`` (None: no bound)."""

    low: float | None
    high: float | None
    unit: str  # UCUM

    def contains(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)


@dataclass(frozen=True)
class Analyte:
    name: str
    keywords: tuple[str, ...]  # folded words that start the analyte's name on reports
    loinc: tuple[str, ...]
    limits: Mapping[Kind, Limits | None]  # the kinds it is measured as; limits when known

    @property
    def kinds(self) -> frozenset[Kind]:
        return frozenset(self.limits)


def _a(
    name: str,
    keywords: tuple[str, ...],
    loinc: tuple[str, ...],
    **limits: tuple[float | None, float | None, str] | None,
) -> Analyte:
    return Analyte(name, keywords, loinc, {Kind[k]: (Limits(*v) if v else None) for k, v in limits.items()})


# Concentration analytes are reported per 24 hours in urine too: those kinds are accepted
# for any of them (without limits), see ``accepted_kinds``.
_CONCENTRATIONS = frozenset(
    {
        Kind.MASS_CONCENTRATION,
        Kind.SUBSTANCE_CONCENTRATION,
        Kind.CATALYTIC_CONCENTRATION,
        Kind.ARBITRARY_CONCENTRATION,
    }
)
# Kinds that name the same measurement in another convention: mass ⇔ substance (molar
# mass), enzyme U ⇔ [IU] (French labs print "UI/L" for enzymes, "mU/L" for TSH).
_SAME_MEASUREMENT = (
    frozenset({Kind.MASS_CONCENTRATION, Kind.SUBSTANCE_CONCENTRATION}),
    frozenset({Kind.CATALYTIC_CONCENTRATION, Kind.ARBITRARY_CONCENTRATION}),
    frozenset({Kind.MASS, Kind.SUBSTANCE}),
)
_DIFFERENTIAL = (
    "neutrophiles",
    "polynucleaires",
    "eosinophiles",
    "basophiles",
    "lymphocytes",
    "monocytes",
    "pnn",
    "pne",
    "pnb",
    "granulocytes",
    "myelocytes",
    "metamyelocytes",
    "blastes",
    "erythroblastes",
)
_ENZYME = dict(
    ARBITRARY_CONCENTRATION=(None, 500000, "[IU]/L"), CATALYTIC_CONCENTRATION=(None, 500000, "U/L")
)

ANALYTES: tuple[Analyte, ...] = (
    # -- blood count ----------------------------------------------------------------------------
    _a(
        "hémoglobine",
        ("hemoglobine", "hb"),
        ("718-7", "59260-0", "20509-6"),
        MASS_CONCENTRATION=(1, 30, "g/dL"),
        SUBSTANCE_CONCENTRATION=(0.6, 19, "mmol/L"),
    ),
    _a(
        "HbA1c",
        ("hemoglobine glyquee", "hemoglobine glycosylee", "hba1c", "hb a1c"),
        ("4548-4", "59261-8", "17856-6"),
        FRACTION=(0.02, 0.25, "1"),
    ),
    _a("hématocrite", ("hematocrite", "hte"), ("4544-3", "20570-8"), FRACTION=(0.05, 0.9, "1")),
    _a(
        "hématies",
        ("hematies", "erythrocytes", "globules rouges"),
        ("789-8", "26453-1", "13945-1"),
        NUMBER_CONCENTRATION=(None, 15, "10*12/L"),
        COUNT_PER_FIELD=None,
    ),
    _a(
        "leucocytes",
        ("leucocytes", "globules blancs", "leucocyturie"),
        ("6690-2", "26464-8", "5821-4", "30405-5"),
        NUMBER_CONCENTRATION=(None, 1000, "10*9/L"),
        COUNT_PER_FIELD=None,
    ),
    _a(
        "plaquettes",
        ("plaquettes", "thrombocytes"),
        ("777-3", "26515-7"),
        NUMBER_CONCENTRATION=(None, 5000, "10*9/L"),
    ),
    _a("VGM", ("vgm", "volume globulaire moyen", "mcv"), ("787-2", "30428-7"), VOLUME=(40, 200, "fL")),
    _a(
        "TCMH",
        ("tcmh", "teneur corpusculaire moyenne", "mch"),
        ("785-6", "28539-4"),
        MASS=(8, 60, "pg"),
        SUBSTANCE=(0.5, 4, "fmol"),
    ),
    _a(
        "CCMH",
        ("ccmh", "concentration corpusculaire moyenne", "mchc"),
        ("786-4", "28540-2"),
        MASS_CONCENTRATION=(15, 50, "g/dL"),
        SUBSTANCE_CONCENTRATION=(9, 31, "mmol/L"),
        FRACTION=(0.15, 0.5, "1"),
    ),
    _a(
        "IDR",
        ("idr", "rdw", "indice de distribution"),
        ("788-0", "21000-5", "30385-9", "30384-2"),
        FRACTION=(0.05, 0.5, "1"),
        VOLUME=(20, 150, "fL"),
    ),
    _a("VPM", ("vpm", "volume plaquettaire moyen", "mpv"), ("32623-1", "28542-8"), VOLUME=(3, 25, "fL")),
    _a(
        "formule leucocytaire",
        _DIFFERENTIAL,
        ("770-8", "751-8", "713-8", "711-2", "706-2", "704-7", "736-9", "731-0", "5905-5", "742-7"),
        FRACTION=(None, 1, "1"),
        NUMBER_CONCENTRATION=(None, 1000, "10*9/L"),
    ),
    _a(
        "réticulocytes",
        ("reticulocytes",),
        ("4679-7", "17849-1", "60474-4", "14196-0"),
        FRACTION=(None, 0.6, "1"),
        NUMBER_CONCENTRATION=(None, 2000, "10*9/L"),
    ),
    _a(
        "vitesse de sédimentation",
        ("vitesse de sedimentation", "vs"),
        ("4537-7", "30341-2"),
        LENGTH_RATE=(None, 200, "mm/h"),
        LENGTH=(None, 200, "mm"),
    ),
    # -- haemostasis ----------------------------------------------------------------------------
    _a(
        "taux de prothrombine",
        ("taux de prothrombine", "tp"),
        ("5894-1",),
        FRACTION=(None, 2, "1"),
        TIME=(5, 300, "s"),
    ),
    _a("INR", ("inr",), ("6301-6", "34714-6"), FRACTION=(0.5, 25, "1")),
    _a(
        "TCA",
        ("tca", "tck", "temps de cephaline"),
        ("3173-2", "14979-9"),
        TIME=(10, 400, "s"),
        FRACTION=(0.3, 15, "1"),
    ),
    _a(
        "fibrinogène",
        ("fibrinogene",),
        ("3255-7",),
        MASS_CONCENTRATION=(0.1, 15, "g/L"),
        SUBSTANCE_CONCENTRATION=(0.3, 44, "umol/L"),
    ),
    _a(
        "D-dimères",
        ("d dimeres", "d-dimeres", "dimeres"),
        ("48065-7", "48066-5"),
        MASS_CONCENTRATION=(None, 1e6, "ng/mL"),
    ),
    # -- biochemistry ---------------------------------------------------------------------------
    _a(
        "créatinine",
        ("creatinine", "creatininemie", "creatininurie"),
        ("2160-0", "14682-9", "38483-4", "2161-8", "14683-7", "20624-3"),
        SUBSTANCE_CONCENTRATION=(5, 50000, "umol/L"),
        MASS_CONCENTRATION=(0.5, 6000, "mg/L"),
    ),
    _a(
        "débit de filtration glomérulaire",
        (
            "clairance",
            "dfg",
            "debit de filtration glomerulaire",
            "ckd epi",
            "mdrd",
            "cockcroft",
            "filtration glomerulaire",
        ),
        ("33914-3", "48642-3", "48643-1", "62238-1", "77147-7", "2164-2"),
        VOLUME_RATE=(0.5, 400, "mL/min"),
    ),
    _a(
        "glucose",
        ("glucose", "glycemie", "glycosurie"),
        ("2345-7", "15074-8", "2339-0", "14749-6", "2350-7", "15076-3"),
        SUBSTANCE_CONCENTRATION=(0.1, 500, "mmol/L"),
        MASS_CONCENTRATION=(0.02, 90, "g/L"),
    ),
    _a(
        "urée",
        ("uree", "azotemie"),
        ("3094-0", "22664-7", "3095-7"),
        SUBSTANCE_CONCENTRATION=(0.3, 1000, "mmol/L"),
        MASS_CONCENTRATION=(0.02, 60, "g/L"),
    ),
    _a(
        "acide urique",
        ("acide urique", "uricemie", "uraturie"),
        ("3084-1", "14933-6", "3086-6"),
        SUBSTANCE_CONCENTRATION=(10, 15000, "umol/L"),
        MASS_CONCENTRATION=(1, 2500, "mg/L"),
    ),
    _a(
        "sodium",
        ("sodium", "natremie", "natriurese"),
        ("2951-2", "2947-0", "2955-3"),
        SUBSTANCE_CONCENTRATION=(None, 400, "mmol/L"),
    ),
    _a(
        "potassium",
        ("potassium", "kaliemie", "kaliurese"),
        ("2823-3", "6298-4", "2828-2"),
        SUBSTANCE_CONCENTRATION=(None, 300, "mmol/L"),
    ),
    _a(
        "chlore",
        ("chlore", "chlorures", "chloremie"),
        ("2075-0", "2069-3"),
        SUBSTANCE_CONCENTRATION=(None, 400, "mmol/L"),
    ),
    _a(
        "bicarbonates",
        ("bicarbonates", "co2 total", "reserve alcaline"),
        ("1963-8", "2028-9"),
        SUBSTANCE_CONCENTRATION=(1, 80, "mmol/L"),
    ),
    _a(
        "calcium",
        ("calcium", "calcemie", "calciurie"),
        ("17861-6", "2000-8", "1994-3", "17862-4"),
        SUBSTANCE_CONCENTRATION=(0.1, 30, "mmol/L"),
        MASS_CONCENTRATION=(None, 1200, "mg/L"),
    ),
    _a(
        "magnésium",
        ("magnesium", "magnesemie"),
        ("19123-9", "2601-3"),
        SUBSTANCE_CONCENTRATION=(0.05, 30, "mmol/L"),
        MASS_CONCENTRATION=(None, 700, "mg/L"),
    ),
    _a(
        "phosphore",
        ("phosphore", "phosphates", "phosphoremie", "phosphaturie"),
        ("2777-1", "14879-1"),
        SUBSTANCE_CONCENTRATION=(0.05, 150, "mmol/L"),
        MASS_CONCENTRATION=(None, 4500, "mg/L"),
    ),
    _a(
        "protéines",
        ("proteines totales", "protides totaux", "proteines", "protidemie"),
        ("2885-2", "2888-6", "2880-3"),
        MASS_CONCENTRATION=(None, 200, "g/L"),
        MASS_PER_SUBSTANCE=None,
        FRACTION=None,
    ),
    _a(
        "albumine",
        ("albumine", "albuminemie", "microalbuminurie", "albuminurie"),
        ("1751-7", "61151-7", "14957-5", "1754-1"),
        MASS_CONCENTRATION=(None, 80, "g/L"),
        SUBSTANCE_CONCENTRATION=(None, 1200, "umol/L"),
        MASS_PER_SUBSTANCE=None,
        FRACTION=None,
    ),  # microalbuminuria per creatinine: mg/mmol, mg/g
    _a(
        "bilirubine",
        ("bilirubine",),
        ("1975-2", "14631-6", "1968-7", "14629-0"),
        SUBSTANCE_CONCENTRATION=(None, 1500, "umol/L"),
        MASS_CONCENTRATION=(None, 900, "mg/L"),
    ),
    _a(
        "enzymes",
        (
            "alat",
            "asat",
            "tgo",
            "tgp",
            "alanine aminotransferase",
            "aspartate aminotransferase",
            "transaminases",
            "gamma gt",
            "gamma glutamyl",
            "ggt",
            "gamma-gt",
            "phosphatases alcalines",
            "pal",
            "ldh",
            "lactate deshydrogenase",
            "cpk",
            "ck",
            "creatine kinase",
            "creatine phosphokinase",
            "lipase",
            "lipasemie",
            "amylase",
            "amylasemie",
        ),
        ("1742-6", "1920-8", "2324-2", "6768-6", "2532-0", "2157-6", "3040-3", "1798-8", "14804-9"),
        **_ENZYME,
    ),
    _a(
        "cholestérol",
        ("cholesterol", "hdl", "ldl", "non hdl"),
        ("2093-3", "2085-9", "13457-7", "2089-1", "14647-2", "14646-4", "22748-8", "43396-1"),
        SUBSTANCE_CONCENTRATION=(0.05, 50, "mmol/L"),
        MASS_CONCENTRATION=(0.02, 20, "g/L"),
    ),
    _a(
        "triglycérides",
        ("triglycerides",),
        ("2571-8", "14927-8"),
        SUBSTANCE_CONCENTRATION=(0.05, 100, "mmol/L"),
        MASS_CONCENTRATION=(0.05, 90, "g/L"),
    ),
    _a(
        "lactates",
        ("lactates", "acide lactique"),
        ("2524-7", "32693-4"),
        SUBSTANCE_CONCENTRATION=(0.1, 40, "mmol/L"),
    ),
    _a(
        "CRP",
        ("crp", "proteine c reactive", "c reactive protein"),
        ("1988-5", "30522-7"),
        MASS_CONCENTRATION=(None, 1000, "mg/L"),
    ),
    _a("procalcitonine", ("procalcitonine", "pct"), ("33959-8",), MASS_CONCENTRATION=(None, 2000, "ng/mL")),
    # -- iron and vitamins ----------------------------------------------------------------------
    _a(
        "ferritine",
        ("ferritine",),
        ("2276-4", "20567-4"),
        MASS_CONCENTRATION=(0.5, 200000, "ug/L"),
        SUBSTANCE_CONCENTRATION=(1, 450000, "pmol/L"),
    ),
    _a(
        "fer",
        ("fer", "fer serique", "sideremie"),
        ("2498-4", "14798-3"),
        SUBSTANCE_CONCENTRATION=(0.5, 150, "umol/L"),
        MASS_CONCENTRATION=(0.03, 8, "mg/L"),
    ),
    _a(
        "transferrine",
        ("transferrine", "siderophiline"),
        ("3034-6",),
        MASS_CONCENTRATION=(0.1, 8, "g/L"),
        SUBSTANCE_CONCENTRATION=(1, 100, "umol/L"),
    ),
    _a(
        "vitamine B12",
        ("vitamine b12", "cobalamine", "b12"),
        ("2132-9", "14685-2"),
        SUBSTANCE_CONCENTRATION=(10, 20000, "pmol/L"),
        MASS_CONCENTRATION=(15, 27000, "pg/mL"),
    ),
    _a(
        "folates",
        ("folates", "acide folique", "vitamine b9", "b9"),
        ("2284-8", "14732-2"),
        SUBSTANCE_CONCENTRATION=(0.5, 200, "nmol/L"),
        MASS_CONCENTRATION=(0.2, 90, "ng/mL"),
    ),
    _a(
        "vitamine D",
        ("vitamine d", "25 oh", "25-oh", "25(oh)", "25 hydroxy"),
        ("1989-3", "62292-8", "14635-7"),
        SUBSTANCE_CONCENTRATION=(1, 1000, "nmol/L"),
        MASS_CONCENTRATION=(0.4, 400, "ng/mL"),
    ),
    # -- hormones and markers -------------------------------------------------------------------
    _a(
        "TSH",
        ("tsh", "thyreostimuline", "thyrotropine"),
        ("3016-3", "11580-8"),
        ARBITRARY_CONCENTRATION=(None, 1000, "m[IU]/L"),
        CATALYTIC_CONCENTRATION=(None, 1000, "mU/L"),
    ),
    _a(
        "T4 libre",
        ("t4 libre", "t4l", "ft4", "thyroxine libre"),
        ("3024-7", "14920-3"),
        SUBSTANCE_CONCENTRATION=(0.5, 200, "pmol/L"),
        MASS_CONCENTRATION=(0.04, 16, "ng/dL"),
    ),
    _a(
        "T3 libre",
        ("t3 libre", "t3l", "ft3", "triiodothyronine libre"),
        ("3051-0", "14928-6"),
        SUBSTANCE_CONCENTRATION=(0.3, 100, "pmol/L"),
        MASS_CONCENTRATION=(0.2, 65, "pg/mL"),
    ),
    _a(
        "parathormone",
        ("parathormone", "pth"),
        ("2731-8", "14866-8"),
        SUBSTANCE_CONCENTRATION=(0.05, 500, "pmol/L"),
        MASS_CONCENTRATION=(0.5, 5000, "pg/mL"),
    ),
    _a(
        "PSA",
        ("psa", "antigene prostatique"),
        ("2857-1", "10886-0", "19197-3"),
        MASS_CONCENTRATION=(None, 50000, "ng/mL"),
    ),
    _a(
        "hCG",
        ("hcg", "beta hcg", "b hcg", "gonadotrophine chorionique"),
        ("21198-7", "2106-3", "19080-1"),
        ARBITRARY_CONCENTRATION=(None, 5e6, "[IU]/L"),
        CATALYTIC_CONCENTRATION=(None, 5e6, "U/L"),
    ),
    _a(
        "BNP",
        ("bnp", "nt probnp", "nt-probnp", "peptide natriuretique"),
        ("30934-4", "33762-6", "42637-9"),
        MASS_CONCENTRATION=(None, 200000, "pg/mL"),
        SUBSTANCE_CONCENTRATION=(None, 25000, "pmol/L"),
    ),
    _a(
        "troponine",
        ("troponine",),
        ("6598-7", "10839-9", "67151-1", "89579-7"),
        MASS_CONCENTRATION=(None, 1e6, "ng/L"),
    ),
    _a(
        "cortisol",
        ("cortisol", "cortisolemie"),
        ("2143-6", "2147-7"),
        SUBSTANCE_CONCENTRATION=(None, 15000, "nmol/L"),
        MASS_CONCENTRATION=(None, 5500, "ng/mL"),
    ),
    _a(
        "insuline",
        ("insuline", "insulinemie"),
        ("20448-7", "14796-7"),
        ARBITRARY_CONCENTRATION=(None, 10000, "u[IU]/mL"),
        CATALYTIC_CONCENTRATION=(None, 10000, "uU/mL"),
        SUBSTANCE_CONCENTRATION=(None, 70000, "pmol/L"),
    ),
    # -- imaging dose indicators ----------------------------------------------------------------
    _a(
        "CTDIvol",
        (
            "ctdivol",
            "ctdi vol",
            "ctdi",
            "idsv",
            "indice de dose",
            "dose glande moyenne",
            "kerma",
            "dose a l entree",
        ),
        ("ctdi",),
        ABSORBED_DOSE=(0.001, 1000, "mGy"),
    ),
    _a(
        "produit dose-longueur",
        ("pdl", "dlp", "produit dose longueur", "produit dose x longueur"),
        ("dlp",),
        DOSE_LENGTH=(0.01, 100000, "mGy.cm"),
    ),
    _a(
        "produit dose-surface",
        ("pds", "dap", "produit dose surface", "produit dose x surface"),
        ("dap",),
        DOSE_AREA=(1e-5, 100000, "Gy.cm2"),
    ),
)


def _words(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", fold(name)).strip()


_BY_LOINC = {code: a for a in ANALYTES for code in a.loinc}
_KEYWORDS = sorted(((_words(k), a) for a in ANALYTES for k in a.keywords), key=lambda ka: -len(ka[0]))
# Words that make a name something else than the analyte it starts with: a ratio, an index.
_NOT_THE_ANALYTE = re.compile(
    r"\b(?:rapport|ratio|index|indice de saturation|coefficient|quotient|"
    r"fraction excretee|delta|variation|score)\b"
)
_LEADING = re.compile(r"^(?:taux|dosage|concentration|numeration|recherche)\s+(?:de la|de l|des|du|de|d)?\s*")


@lru_cache(maxsize=4096)
def find_analyte(analyte: str, loinc: str | None) -> Analyte | None:
    """The known analyte a result is about: its LOINC code, else the words its name starts with.

    Only the start of the name counts (French names put the head noun first: "clairance de
    la créatinine" is a clearance, not a creatinine); names of ratios and indexes are not
    taken for the analyte they mention.
    """
    if loinc and loinc in _BY_LOINC:
        return _BY_LOINC[loinc]
    words = _words(analyte)
    if "/" in analyte or _NOT_THE_ANALYTE.search(words):  # "calcium/créatinine" is a ratio
        return None
    for name in (words, _LEADING.sub("", words)):
        for keyword, a in _KEYWORDS:
            if name == keyword or name.startswith(keyword + " "):
                return a
    return None


def accepted_kinds(analyte: Analyte) -> frozenset[Kind]:
    """Kinds a unit of ``analyte`` may measure without being wrong."""
    kinds = set(analyte.kinds)
    for same in _SAME_MEASUREMENT:
        if kinds & same:
            kinds |= same
    if kinds & _CONCENTRATIONS:
        kinds |= {Kind.MASS_RATE, Kind.SUBSTANCE_RATE}  # 24-hour urine excretion
    return frozenset(kinds)


@dataclass(frozen=True)
class UnitVerdict:
    """What Carnet thinks of one result's unit.

    ``kind_ok`` is None when nothing can be said: unknown analyte, unit not valid UCUM or
    of a kind Carnet does not know.
    """

    ucum: str
    unit: ParsedUnit | None
    analyte: Analyte | None
    kind_ok: bool | None

    @property
    def valid_ucum(self) -> bool:
        return self.unit is not None

    @property
    def kind(self) -> Kind | None:
        return self.unit.kind if self.unit else None


@lru_cache(maxsize=4096)  # a pure function of its (few, recurring) arguments
def judge_unit(unit: str, analyte: str, loinc: str | None) -> UnitVerdict:
    """Whether ``unit`` is valid UCUM and measures a kind of quantity ``analyte`` is measured as."""
    ucum = to_ucum(unit)
    parsed = parse_unit(ucum)
    known = find_analyte(analyte, loinc)
    kind_ok: bool | None = None
    if known is not None and parsed is not None and parsed.kind is not None:
        kind_ok = parsed.kind in accepted_kinds(known)
    return UnitVerdict(ucum=ucum, unit=parsed, analyte=known, kind_ok=kind_ok)


def limits_value(value: float, verdict: UnitVerdict) -> tuple[float, Limits] | None:
    """``value`` expressed in the unit of its analyte's limits for that kind, with the limits."""
    if verdict.analyte is None or verdict.unit is None or verdict.kind is None:
        return None
    limits = verdict.analyte.limits.get(verdict.kind)
    if limits is None:
        return None
    converted = convert(value, verdict.unit, limits.unit)
    return None if converted is None else (converted, limits)


# Misreadings of "µ" by fonts, keyboards and OCR: (printed prefix, meant prefix). Tesseract
# reads a DejaVu "µmol/L" as "pmol/L" and "µg/L" as "ng/L".
MISREADINGS = (("p", "u"), ("m", "u"), ("n", "u"))


def misread_units(ucum: str) -> list[str]:
    """The units ``ucum`` could be a misreading of (its first prefix p/m/n read back as µ)."""
    out = []
    for printed, meant in MISREADINGS:
        m = re.match(rf"^(/?)({printed})(?=[a-zA-Z\[])", ucum)
        if m:
            candidate = ucum[: m.start(2)] + meant + ucum[m.end(2) :]
            parsed = parse_unit(candidate)
            if parsed is not None and parsed.kind is not None:
                out.append(candidate)
    return out
