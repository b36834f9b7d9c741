"""The document type codes Carnet knows, with the class each one files a document under.

Source: the national value set of document types, ANS *Terminologies de santé*,
``JDV_J07-XdsTypeCode-CISIS`` (OID 1.2.250.1.213.1.1.5.471, version 20260629120000): LOINC
document codes (code system 2.16.840.1.113883.6.1) and the national complementary types of
``TRE_A05-TypeDocComplementaire`` (code system 1.2.250.1.213.1.1.4.12). Labels are the value
set's French display names. Two LOINC codes Carnet already used and the value set does not
list (11526-1 pathology, 18842-5 discharge summary) are kept.

LOINC report types outside that value set are in ``_LOINC_BEYOND`` below, with theirs.

Class rules: a type is *biology*, *imaging* or *prescription* only when the document itself
is a lab report, an imaging report (or its images' references) or a prescription (of drugs,
care, acts or tests, including a request for imaging acts); everything else —
reimbursement data, syntheses, vital signs, dispensations, letters — is *other* and keeps
its code.
"""

from __future__ import annotations

import re

from pipeline.model import DocClass

LOINC_SYSTEM = "2.16.840.1.113883.6.1"
NATIONAL_TYPE_SYSTEM = "1.2.250.1.213.1.1.4.12"  # TRE_A05-TypeDocComplementaire
TYPE_CODE_SYSTEMS = frozenset({LOINC_SYSTEM, NATIONAL_TYPE_SYSTEM})
_LOINC_CODE = re.compile(r"\d{1,7}-\d")

_BIO, _IMG, _RX, _OTHER = DocClass.BIOLOGY, DocClass.IMAGING, DocClass.PRESCRIPTION, DocClass.OTHER

_TABLE: tuple[tuple[str, DocClass, str], ...] = (
    # --- biology -------------------------------------------------------------------------
    ("11502-2", _BIO, "CR d'examens biologiques"),
    ("DOCPAT05", _BIO, "CR de biologie déposé par le patient"),
    ("11526-1", _BIO, "CR d'anatomie pathologique"),
    ("60568-3", _BIO, "CR d'anatomie et de cytologie pathologiques"),
    ("51969-4", _BIO, "CR de génétique moléculaire"),
    # --- imaging -------------------------------------------------------------------------
    ("18748-4", _IMG, "CR d'imagerie médicale"),
    ("IMG-KOS", _IMG, "Référence d'objets d'un examen d'imagerie"),
    ("DOCPAT04", _IMG, "Imagerie déposée par le patient"),
    # --- prescription --------------------------------------------------------------------
    ("57833-6", _RX, "Prescription de produits de santé"),
    ("57832-8", _RX, "Prescription de soins"),
    ("57828-6", _RX, "Prescription (autre)"),
    ("75468-9", _RX, "Renouvellement ordonnance par pharmacien correspondant"),
    ("55115-0", _RX, "Demande d'actes d'imagerie"),
    ("PRESC-BIO", _RX, "Prescription d'actes de biologie médicale"),
    ("PRESC-KINE", _RX, "Prescription d'actes de kinésithérapie"),
    ("PRESC-INF", _RX, "Prescription d'actes infirmiers"),
    ("PRESC-PEDI", _RX, "Prescription d'actes de pédicurie"),
    ("PRESC-ORTHOPHO", _RX, "Prescription d'actes d'orthophonie"),
    ("PRESC-ORTHOPTIE", _RX, "Prescription d'actes d'orthoptie"),
    ("PRESC-AAT", _RX, "Prescription arrêt de travail"),
    # --- other: LOINC ----------------------------------------------------------------------
    ("11369-6", _OTHER, "Historique des vaccinations"),
    ("11488-4", _OTHER, "CR ou fiche de consultation ou de visite"),
    ("11490-0", _OTHER, "Lettre de liaison à la sortie d'un établissement de soins"),
    ("11505-5", _OTHER, "CR d'acte thérapeutique (autre)"),
    ("11506-3", _OTHER, "CR ou fiche de suivi de soins par auxiliaire médical"),
    ("15507-7", _OTHER, "CR de passage aux urgences"),
    ("15508-5", _OTHER, "CR d'accouchement"),
    ("18761-7", _OTHER, "Note de transfert"),
    ("18776-5", _OTHER, "Plan personnalisé de soins"),
    ("18842-5", _OTHER, "Lettre de sortie"),
    ("28617-9", _OTHER, "Bilan bucco-dentaire"),
    ("28653-4", _OTHER, "Document du secteur social / médico-social"),
    ("29274-8", _OTHER, "Mesures de signes vitaux"),
    ("34112-3", _OTHER, "CR hospitalier (séjour)"),
    ("34120-6", _OTHER, "Bilan par professionnel de santé"),
    ("34133-9", _OTHER, "Synthèse d'épisode de soins"),
    ("34749-2", _OTHER, "CR de consultation pré-anesthésique"),
    ("34794-8", _OTHER, "CR de réunion de concertation pluridisciplinaire"),
    ("34842-5", _OTHER, "Grille d'évaluation médico-social"),
    ("34874-8", _OTHER, "CR opératoire"),
    ("34875-5", _OTHER, "Évaluation postopératoire et note de suivi"),
    ("34876-3", _OTHER, "Évaluation préopératoire et note de suivi"),
    ("34895-3", _OTHER, "Fiche d'information au patient"),
    ("47420-5", _OTHER, "CR de bilan fonctionnel"),
    ("51851-4", _OTHER, "Document administratif"),
    ("52040-3", _OTHER, "Document encapsulant une image d'illustration non DICOM"),
    ("55751-2", _OTHER, "Déclaration de problème de santé publique"),
    ("56445-0", _OTHER, "Bilan médicamenteux (officine)"),
    ("56446-8", _OTHER, "Notification de rendez-vous"),
    ("57055-6", _OTHER, "Synthèse antepartum"),
    ("57057-2", _OTHER, "Synthèse salle de naissance mère"),
    ("57075-4", _OTHER, "Synthèse salle de naissance enfant"),
    ("59283-2", _OTHER, "CR d'examen de l'enfant"),
    ("59284-0", _OTHER, "Attestation de consentement"),
    ("60280-5", _OTHER, "Fiche de retour du service des urgences"),
    ("60591-5", _OTHER, "Synthèse médicale"),
    ("60593-1", _OTHER, "Dispensation médicamenteuse"),
    ("61357-0", _OTHER, "Intervention pharmaceutique"),
    ("67851-6", _OTHER, "CR d'admission"),
    ("68599-0", _OTHER, "Synthèse psychiatrique"),
    ("68814-3", _OTHER, "Note d'évaluation pédiatrique"),
    ("68817-6", _OTHER, "Bilan de santé et de prévention de l'enfant"),
    ("70004-7", _OTHER, "CR d'acte diagnostique (autre)"),
    ("74207-2", _OTHER, "Document de liaison d'urgence"),
    ("74465-6", _OTHER, "Questionnaire patient"),
    ("75482-0", _OTHER, "CR d'acte thérapeutique à visée préventive"),
    ("75492-9", _OTHER, "CR d'acte diagnostique à visée préventive ou de dépistage"),
    ("75496-0", _OTHER, "Demande d'acte de télémédecine"),
    ("77436-4", _OTHER, "CR d'anesthésie"),
    ("77604-7", _OTHER, "Planification thérapeutique"),
    ("78341-5", _OTHER, "Fiche de transfert vers le service des urgences"),
    ("78489-2", _OTHER, "Synthèse enfant en maternité"),
    ("78513-9", _OTHER, "CR de consultation en ophtalmologie"),
    ("78601-2", _OTHER, "CR d'entretien pharmaceutique"),
    ("80565-5", _OTHER, "CR d'administration de médicaments"),
    ("80771-9", _OTHER, "Projet d'accueil individualisé"),
    ("80788-3", _OTHER, "Projet personnalisé d'accompagnement"),
    ("80820-4", _OTHER, "Formulaire de conciliation médicamenteuse (hôpital)"),
    ("83836-7", _OTHER, "Schéma dentaire"),
    ("83869-8", _OTHER, "Plan personnalisé de prévention"),
    ("83901-9", _OTHER, "Bilan psychologique"),
    ("83963-9", _OTHER, "Synthèse environnementale"),
    ("83981-1", _OTHER, "Lettre de liaison à la sortie d'une structure sociale ou médico-sociale"),
    ("84067-8", _OTHER, "Synthèse transfusionnelle"),
    ("85208-7", _OTHER, "CR de télémédecine"),
    ("86531-1", _OTHER, "Attestation de sortie"),
    ("87273-9", _OTHER, "Note de vaccination"),
    ("88348-8", _OTHER, "Lettre de liaison d'entrée en structure sociale ou médico-sociale"),
    ("89233-1", _OTHER, "CR de grossesse"),
    ("89235-6", _OTHER, "Synthèse suites de couches mère"),
    ("89601-9", _OTHER, "Certificat médical"),
    ("93024-8", _OTHER, "CR de consultation pharmaceutique"),
    ("96163-1", _OTHER, "Bilan de soins infirmiers"),
    ("96173-0", _OTHER, "Test rapide d'orientation diagnostique"),
    ("96349-6", _OTHER, "Lettre d'adressage"),
    ("96874-3", _OTHER, "COVID-19 Attestation de vaccination"),
    ("97694-4", _OTHER, "Note d'évaluation en médecine maternelle et fœtale"),
    ("100967-9", _OTHER, "Rythme cardiaque fœtal"),
    ("101881-1", _OTHER, "Carte d'implant"),
    # --- other: national complementary types (TRE_A05) ---------------------------------------
    ("ATTEST-ASS-COMPL", _OTHER, "Attestation assurance complémentaire"),
    ("ATTEST-RESID", _OTHER, "Attestation de résidence"),
    ("ATTEST-HEBGT", _OTHER, "Attestation d'hébergement"),
    ("ATTEST-DROITS-AM", _OTHER, "Attestation de droits à l'assurance maladie"),
    ("AUTORIS-SOINS", _OTHER, "Autorisation de soins et actes non usuels sanitaires"),
    ("BIL_AUTO", _OTHER, "CR de bilan d'évaluation de la perte d'autonomie"),
    ("CERT_DECL", _OTHER, "Certificat, déclaration"),
    ("DISP_AUT", _OTHER, "Dispensation (autre)"),
    ("EXPPAT_1", _OTHER, "Volontés et droits du patient"),
    ("EXPPAT_2", _OTHER, "Autre document du patient"),
    ("EXPPAT_3", _OTHER, "Directives anticipées"),
    ("PROT_ALD", _OTHER, "Protocole de soins ALD"),
    ("REMB", _OTHER, "Données de remboursement"),
    ("SYNTH", _OTHER, "Synthèse"),
    ("DOCPAT01", _OTHER, "Synthèse déposée par le patient"),
    ("DOCPAT02", _OTHER, "Traitement ou document de soins déposé par le patient"),
    ("DOCPAT03", _OTHER, "CR déposé par le patient"),
    ("DOCPAT06", _OTHER, "CR de prévention déposé par le patient"),
    ("DOCPAT07", _OTHER, "Certificat déposé par le patient"),
    ("DOCPAT08", _OTHER, "Profil médical Mon espace santé"),
    ("DOCPAT09", _OTHER, "Document administratif déposé par le patient"),
    ("PIECE-IDENTITE", _OTHER, "Copie pièce d'identité"),
    ("FEUILLE-DE-STYLE", _OTHER, "Feuille de style"),
    ("FICHE-CONTACTS", _OTHER, "Fiche contacts"),
    ("EXPORT_DUI", _OTHER, "Export du Dossier Usager Informatisé"),
)

# LOINC report types outside the national value set, which producers also send (a CR-BIO
# typed by its lab specialty, a radiology system's own LOINC types). Labels are LOINC's
# names. Sources, each a published value set rather than codes picked one by one:
# - biology: the IHE XD-LAB "Laboratory Specialty" value set (1.3.6.1.4.1.19376.1.3.3.2.1),
#   the LOINC "<specialty> studies (set)" codes, which CR-BIO uses for its chapters;
# - imaging: the LOINC Document Ontology study reports of radiology: 18726-0 "Radiology
#   studies (set)", the root of LOINC's RAD class (HL7 Europe's imaging report types are its
#   descendants), and its modality-level "Study report" types; the thousands of
#   "<modality> <body part>" codes of that class are recognised by name
#   (``is_radiology_report_name``), not listed;
# - prescription: LOINC's prescription document types not in the value set.
_LOINC_BEYOND: tuple[tuple[str, DocClass, str], ...] = (
    ("18716-1", _BIO, "Allergy studies (set)"),
    ("18717-9", _BIO, "Blood bank studies (set)"),
    ("18718-7", _BIO, "Cell marker studies (set)"),
    ("18719-5", _BIO, "Chemistry studies (set)"),
    ("18720-3", _BIO, "Coagulation studies (set)"),
    ("18721-1", _BIO, "Therapeutic drug monitoring studies (set)"),
    ("18722-9", _BIO, "Fertility studies (set)"),
    ("18723-7", _BIO, "Hematology studies (set)"),
    ("18724-5", _BIO, "HLA studies (set)"),
    ("18725-2", _BIO, "Microbiology studies (set)"),
    ("18727-8", _BIO, "Serology studies (set)"),
    ("18728-6", _BIO, "Toxicology studies (set)"),
    ("18729-4", _BIO, "Urinalysis studies (set)"),
    ("18767-4", _BIO, "Blood gas studies (set)"),
    ("18768-2", _BIO, "Cell counts+Differential studies (set)"),
    ("18769-0", _BIO, "Microbial susceptibility tests Set"),
    ("26435-8", _BIO, "Molecular pathology studies (set)"),
    ("26436-6", _BIO, "Laboratory studies (set)"),
    ("26437-4", _BIO, "Chemistry challenge studies (set)"),
    ("26438-2", _BIO, "Cytology studies (set)"),
    ("18726-0", _IMG, "Radiology studies (set)"),
    ("18747-6", _IMG, "CT Study report"),
    ("18755-9", _IMG, "MR Study report"),
    ("18760-9", _IMG, "US Study report"),
    ("18782-3", _IMG, "Radiology Study observation (narrative)"),
    ("11525-3", _IMG, "US Pelvis Fetus for pregnancy"),
    ("57829-4", _RX, "Prescription for medical equipment or product"),
)

# code -> (class, label): the national value set's French labels first.
TYPE_CODES: dict[str, tuple[DocClass, str]] = {
    code: (cls, label) for code, cls, label in (*_LOINC_BEYOND, *_TABLE)
}

# LOINC names the reports of its RAD class (the Radiology Playbook) "<modality> <region>…",
# the modality by the abbreviation of its method axis, possibly qualified (``US.doppler``)
# or combined (``PT+CT``): e.g. "CT Chest", "MR Brain WO and W contrast IV".
# PET ("PT") only combined ("PT+CT"): alone, "PT" begins lab names too (prothrombin time).
_RAD_MODALITY = r"(?:XR|CT|CTA|MR|MRA|MRV|US|NM|SPECT|MG|RF|RFA|XA|DXA)"
_RAD_NAME = re.compile(
    rf"(?:{_RAD_MODALITY}|PT(?=\+))(?:\.[a-z]+)*(?:\+{_RAD_MODALITY}(?:\.[a-z]+)*)* [A-Z][\w ,.()/+-]*"
)


def is_radiology_report_name(name: str) -> bool:
    """Whether ``name`` reads as the LOINC name of a radiology report (RAD class)."""
    return _RAD_NAME.fullmatch(name.strip()) is not None


def type_code_system(code: str) -> str | None:
    """The code system (OID) of a type code as records keep it: LOINC for a LOINC-shaped
    code, the national TRE_A05 for a code of its table, None for a producer's own code.

    Parsers prefer LOINC and national codes (a ``translation`` included), so a record's
    code is one of those unless the producer gave nothing else.
    """
    if _LOINC_CODE.fullmatch(code):
        return LOINC_SYSTEM
    return NATIONAL_TYPE_SYSTEM if code in TYPE_CODES else None
