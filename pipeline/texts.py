"""What statuses and reason codes mean to a producer, in the languages of the reports.

The acknowledgement ``_report.json`` and the HL7 ACKs speak to a lab's integration
engineer, who reads them in their language (French by default for this service,
``CARNET_REPORT_LANG``): each reason code has a short meaning and what the producer
should do about it. The pipeline's own messages (``Problem.message``) stay as they are,
technical and in English, and travel beside these texts as the detail.

``docs/acknowledgements.fr.md`` and ``docs/acknowledgements.en.md`` list the same codes;
a test checks that every status and reason code appears in both guides and here.
"""

from __future__ import annotations

from typing import NamedTuple

from pipeline.model import Reason, Status

LANGUAGES = ("fr", "en")
DEFAULT_LANGUAGE = "fr"


class ReasonText(NamedTuple):
    meaning: str
    action: str


_REASONS: dict[str, dict[str, ReasonText]] = {
    "fr": {
        "unsupported_format": ReasonText(
            "Format non reconnu (ni PDF, ni image, ni HL7 v2, ni CDA) ou fichier vide",
            "Vérifier le fichier envoyé et le renvoyer dans un format accepté",
        ),
        "unsupported_message": ReasonText(
            "Message HL7 qui ne porte pas de document (type autre que ORU, MDM…)",
            "Ne pas envoyer ce type de message à Carnet",
        ),
        "parse_error": ReasonText(
            "Document illisible : structure invalide (en-tête MSH, segments, XML)",
            "Corriger la structure du message et le renvoyer",
        ),
        "encrypted_document": ReasonText(
            "Document chiffré ou protégé par mot de passe", "Renvoyer le document sans protection"
        ),
        "empty_document": ReasonText(
            "Aucun contenu exploitable dans le fichier", "Vérifier l'export et renvoyer le document complet"
        ),
        "missing_ins": ReasonText(
            "INS du patient absent", "Renseigner l'INS qualifié (PID-3 avec l'OID de l'INS) et renvoyer"
        ),
        "invalid_ins_key": ReasonText(
            "INS invalide : la clé de contrôle ne correspond pas",
            "Vérifier l'INS auprès du téléservice INSi et renvoyer",
        ),
        "identity_conflict": ReasonText(
            "Deux INS différents dans le même document", "Corriger l'identité du patient et renvoyer"
        ),
        "identity_mismatch": ReasonText(
            "L'INS ne correspond pas au sexe ou à la date de naissance du patient",
            "Vérifier l'identité (traits INS) et renvoyer",
        ),
        "unreadable_scan": ReasonText(
            "Scan illisible : la reconnaissance de caractères n'a rien donné",
            "Renvoyer un scan de meilleure qualité (300 dpi) ou le PDF natif",
        ),
        "missing_date": ReasonText("Date du document absente", "Renseigner la date de l'examen et renvoyer"),
        "implausible_date": ReasonText(
            "Date du document invraisemblable (future, trop ancienne ou avant la naissance)",
            "Corriger la date et renvoyer",
        ),
        "implausible_unit": ReasonText(
            "Unité invraisemblable pour cette analyse (UCUM)", "Corriger l'unité du résultat et renvoyer"
        ),
        "implausible_value": ReasonText(
            "Valeur invraisemblable pour cette analyse : un glissement d'unité (×10, ×1000) l'explique",
            "Corriger la valeur ou l'unité du résultat et renvoyer",
        ),
        "negative_value": ReasonText(
            "Valeur négative pour une concentration, une numération ou une dose",
            "Corriger le résultat et renvoyer",
        ),
        "invalid_result": ReasonText(
            "Résultat d'analyse incohérent (valeur, bornes ou interprétation)",
            "Corriger le résultat ; un avertissement seul ne demande rien",
        ),
        "unknown_producer": ReasonText(
            "Émetteur inconnu de Carnet", "Contacter l'équipe Carnet pour déclarer le flux"
        ),
        "unknown_document": ReasonText(
            "Suppression demandée pour un document que Carnet n'a pas reçu de cet émetteur pour ce patient",
            "Vérifier l'identifiant du document (TXA-12, OBR-3, setId CDA) et le patient",
        ),
        "manifest_mismatch": ReasonText(
            "Le fichier ne correspond pas au manifeste du lot (taille, empreinte, absent) "
            "ou le manifeste est illisible",
            "Renvoyer le lot complet avec un manifeste à jour",
        ),
        "index_error": ReasonText(
            "Erreur interne de Carnet à l'enregistrement",
            "Rien à corriger : renvoyer plus tard ; Carnet est alerté",
        ),
        "low_ocr_confidence": ReasonText(
            "Scan lu avec une confiance faible (avertissement)",
            "Aucune action requise ; préférer le PDF natif",
        ),
        "short_text": ReasonText(
            "Très peu de texte lisible (avertissement)", "Aucune action requise si le document est complet"
        ),
        "text_truncated": ReasonText(
            "Texte très long, ou scan de très nombreuses pages : seul le début est lu et indexé, "
            "le document est conservé entier (avertissement)",
            "Aucune action requise",
        ),
        "unknown_document_type": ReasonText(
            "Type de document non reconnu (avertissement)", "Renseigner le code LOINC du type de document"
        ),
        "malformed_identifier": ReasonText(
            "FINESS ou RPPS mal formé (avertissement)",
            "Corriger l'identifiant de l'établissement ou du professionnel",
        ),
        "batch_threshold": ReasonText(
            "Lot signalé : trop de rejets, de scans ou de doublons",
            "Examiner les rejets du lot ; Carnet est alerté",
        ),
        "account_closed": ReasonText(
            "Le compte du patient est clos : les documents pour cet INS sont refusés",
            "Ne pas renvoyer ; le compte n'est rouvert qu'à la demande du patient",
        ),
        "opposition": ReasonText(
            "Le patient s'est opposé à son dossier : les documents pour cet INS sont refusés",
            "Ne pas renvoyer tant que le patient maintient son opposition",
        ),
        "unsafe_path": ReasonText(
            "Lien symbolique ou fichier spécial dans le dépôt : jamais lu",
            "Déposer le fichier lui-même (fichier ordinaire) dans le lot",
        ),
        "unreadable_file": ReasonText(
            "Fichier illisible pour Carnet (droits d'accès) ou retiré du lot pendant son traitement",
            "Vérifier les droits de lecture du fichier et redéposer le lot sous un nouveau nom",
        ),
    },
    "en": {
        "unsupported_format": ReasonText(
            "Format not recognised (not PDF, image, HL7 v2 or CDA) or empty file",
            "Check the file and send it again in an accepted format",
        ),
        "unsupported_message": ReasonText(
            "HL7 message that carries no document (a type other than ORU, MDM…)",
            "Do not send this message type to Carnet",
        ),
        "parse_error": ReasonText(
            "Unreadable document: invalid structure (MSH header, segments, XML)",
            "Fix the message structure and send it again",
        ),
        "encrypted_document": ReasonText(
            "Document encrypted or password-protected", "Send the document again without protection"
        ),
        "empty_document": ReasonText(
            "No usable content in the file", "Check the export and send the complete document again"
        ),
        "missing_ins": ReasonText(
            "Patient INS missing", "Fill in the qualified INS (PID-3 with the INS OID) and send again"
        ),
        "invalid_ins_key": ReasonText(
            "Invalid INS: the check key does not match",
            "Check the INS with the INSi teleservice and send again",
        ),
        "identity_conflict": ReasonText(
            "Two different INS in the same document", "Fix the patient's identity and send again"
        ),
        "identity_mismatch": ReasonText(
            "The INS disagrees with the patient's sex or birth date",
            "Check the identity (INS traits) and send again",
        ),
        "unreadable_scan": ReasonText(
            "Unreadable scan: character recognition found nothing",
            "Send a better scan (300 dpi) or the native PDF",
        ),
        "missing_date": ReasonText("Document date missing", "Fill in the examination date and send again"),
        "implausible_date": ReasonText(
            "Implausible document date (in the future, too old or before the birth)",
            "Fix the date and send again",
        ),
        "implausible_unit": ReasonText(
            "Implausible unit for this analyte (UCUM)", "Fix the result's unit and send again"
        ),
        "implausible_value": ReasonText(
            "Implausible value for this analyte: a unit slip (×10, ×1000) explains it",
            "Fix the result's value or unit and send again",
        ),
        "negative_value": ReasonText(
            "Negative value for a concentration, a count or a dose", "Fix the result and send again"
        ),
        "invalid_result": ReasonText(
            "Inconsistent lab result (value, range or flag)", "Fix the result; a warning alone needs nothing"
        ),
        "unknown_producer": ReasonText(
            "Sender unknown to Carnet", "Contact the Carnet team to declare the feed"
        ),
        "unknown_document": ReasonText(
            "Deletion requested for a document Carnet never received from this sender for this patient",
            "Check the document's identifier (TXA-12, OBR-3, CDA setId) and the patient",
        ),
        "manifest_mismatch": ReasonText(
            "The file disagrees with the batch manifest (size, hash, missing) or the manifest is unreadable",
            "Send the whole batch again with an up-to-date manifest",
        ),
        "index_error": ReasonText(
            "Carnet internal error while filing", "Nothing to fix: send again later; Carnet is alerted"
        ),
        "low_ocr_confidence": ReasonText(
            "Scan read with low confidence (warning)", "No action needed; prefer the native PDF"
        ),
        "short_text": ReasonText(
            "Very little readable text (warning)", "No action needed if the document is complete"
        ),
        "text_truncated": ReasonText(
            "Very long text, or a scan of very many pages: only its beginning is read and indexed, "
            "the document is kept whole (warning)",
            "No action needed",
        ),
        "unknown_document_type": ReasonText(
            "Document type not recognised (warning)", "Fill in the LOINC document type code"
        ),
        "malformed_identifier": ReasonText(
            "Malformed FINESS or RPPS (warning)", "Fix the establishment or practitioner identifier"
        ),
        "batch_threshold": ReasonText(
            "Batch flagged: too many rejects, scans or duplicates",
            "Look at the batch's rejects; Carnet is alerted",
        ),
        "account_closed": ReasonText(
            "The patient's account is closed: documents for this INS are refused",
            "Do not resend; the account is reopened only at the patient's request",
        ),
        "opposition": ReasonText(
            "The patient opposed their record: documents for this INS are refused",
            "Do not resend while the patient maintains their opposition",
        ),
        "unsafe_path": ReasonText(
            "A symbolic link or special file in the drop: never read",
            "Drop the file itself (a regular file) in the batch",
        ),
        "unreadable_file": ReasonText(
            "A file Carnet may not read (its permissions) or removed from the batch while it was processed",
            "Check the file's read permissions and drop the batch again under a new name",
        ),
    },
}

_STATUSES: dict[str, dict[str, str]] = {
    "fr": {
        "indexed": "Accepté et classé dans le dossier du patient",
        "duplicate": "Déjà reçu à l'identique : rien de nouveau n'est classé",
        "replaced": "Nouvelle version classée ; la précédente sort des recherches",
        "withdrawn": "Retrait pris en compte : le document sort du dossier",
        "rejected": "Refusé : voir les motifs",
        "accepted": "Accepté",
    },
    "en": {
        "indexed": "Accepted and filed in the patient's record",
        "duplicate": "Already received identically: nothing new is filed",
        "replaced": "New version filed; the previous one leaves searches",
        "withdrawn": "Withdrawal applied: the document leaves the record",
        "rejected": "Refused: see the reasons",
        "accepted": "Accepted",
    },
}


def language(value: str | None) -> str:
    """A supported language for ``value`` (``fr-FR`` → ``fr``), else the default."""
    code = (value or "").split("-", 1)[0].split("_", 1)[0].lower()
    return code if code in LANGUAGES else DEFAULT_LANGUAGE


def reason_text(code: Reason | str, lang: str = DEFAULT_LANGUAGE) -> ReasonText:
    """Meaning and action for a reason code; a code without a text gets its own name."""
    value = code.value if isinstance(code, Reason) else code
    found = _REASONS[language(lang)].get(value)
    return found or ReasonText(value, "")


def status_text(status: Status | str, lang: str = DEFAULT_LANGUAGE) -> str:
    value = status.value if isinstance(status, Status) else status
    return _STATUSES[language(lang)].get(value, value)


def documented_codes() -> dict[str, set[str]]:
    """Per language, the reason codes that have a text (for the staleness test)."""
    return {lang: set(texts) for lang, texts in _REASONS.items()}
