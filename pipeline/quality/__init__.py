"""Quality: the checks a document must pass before it is indexed.

- ``checks``: the one table of checks (fact, threshold, reason code, blocking or warning,
  message) and the per-document entry point ``check_document``;
- ``facts``: the facts about a document the checks judge (birth bounds, identity, identifiers);
- ``results``: what Carnet concludes about one lab result (unit kind, misread µ, unit slip);
- ``gate``: the batch gate, whose Great Expectations suites are built from the table.

Blocking problems reject the document; the others travel with it as warnings. Importing
this package does not import Great Expectations (the gate imports it on first use).
"""

from __future__ import annotations

from pipeline.model import Reason
from pipeline.quality.checks import (
    CHECKS,
    DOCUMENT_CHECKS,
    RECORD_CHECKS,
    RESULT_CHECKS,
    Check,
    check_document,
    check_results,
)
from pipeline.quality.facts import identity_facts
from pipeline.quality.gate import (
    DATA_DOCS_PREFIX,
    BatchThresholds,
    GateItem,
    GateResult,
    QualityGate,
    publish_data_docs,
)

# Reason codes the quality checks introduced, under the names callers know them by.
UNKNOWN_DOCUMENT_TYPE = Reason.UNKNOWN_DOCUMENT_TYPE
MALFORMED_IDENTIFIER = Reason.MALFORMED_IDENTIFIER
BATCH_THRESHOLD = Reason.BATCH_THRESHOLD

__all__ = [
    "BATCH_THRESHOLD",
    "CHECKS",
    "DATA_DOCS_PREFIX",
    "DOCUMENT_CHECKS",
    "MALFORMED_IDENTIFIER",
    "RECORD_CHECKS",
    "RESULT_CHECKS",
    "UNKNOWN_DOCUMENT_TYPE",
    "BatchThresholds",
    "Check",
    "GateItem",
    "GateResult",
    "QualityGate",
    "check_document",
    "check_results",
    "identity_facts",
    "publish_data_docs",
]
