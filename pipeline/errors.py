"""Carnet's exception tree.

Rejected *documents* are not exceptions: they are ``Outcome`` values with
``Reason`` codes. Exceptions are for failures of the run itself or of code::

    CarnetError                      base of everything raised on purpose
    ├── ConfigurationError           a setting or URL is unusable (bad --index, unknown scheme)
    ├── SourceError                  an input source cannot be read at all (missing folder, S3 denied)
    │   ├── UnsafePathError          a feed entry is a symbolic link or not a regular file: never
    │   │                            read (the document is rejected ``unsafe_path``)
    │   └── UnreadableFileError      a feed entry Carnet may not read (permissions) or gone since
    │                                it was listed (the document is rejected ``unreadable_file``)
    ├── BackendUnavailable           the index or store cannot be reached (run cannot proceed)
    │   └── LockLost                 a lock held in the state database went with its dropped
    │                                connection: what it protected is not committed
    ├── RunInProgress                another run holds the data directory (the new one refuses)
    ├── ParserError                  raised inside a parser for a document it cannot read;
    │                                caught at the parser boundary and turned into a reason code
    │   └── EncryptedDocumentError   the document is password-protected
    ├── InvalidPatientId             a patient id given by a caller is not a valid INS
    ├── UnknownQuarantineRecord      a quarantine id given by a caller names no record
    └── AccessDenied                 the caller may not see what they asked for

Every exception carries the context it was raised in (producer, source, document id)
when there is one, so a log line names what failed.
"""

from __future__ import annotations

import re

_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


class CarnetError(Exception):
    """Base class; ``context`` names producer / source / document where known."""

    def __init__(self, message: str, **context: str | None) -> None:
        self.context = {k: v for k, v in context.items() if v is not None}
        suffix = "".join(f" [{k}={v}]" for k, v in self.context.items())
        super().__init__(message + suffix)
        self.message = message


class ConfigurationError(CarnetError):
    pass


class SourceError(CarnetError):
    pass


class UnsafePathError(SourceError):
    pass


class UnknownQuarantineRecord(CarnetError):
    pass


class UnreadableFileError(SourceError):
    pass


class BackendUnavailable(CarnetError):
    pass


class LockLost(BackendUnavailable):
    pass


class RunInProgress(CarnetError):
    pass


class ParserError(CarnetError):
    """Its message becomes a document's reason, which producers read and which two runs on
    the same bytes must give alike: an object's repr from the library that failed (Pillow's
    "cannot identify image file <_io.BytesIO object at 0x7f…>") is named, not printed."""

    def __init__(self, message: str, **context: str | None) -> None:
        super().__init__(_OBJECT_REPR.sub("the file", message), **context)


class EncryptedDocumentError(ParserError):
    pass


class InvalidPatientId(CarnetError):
    pass


class AccessDenied(CarnetError):
    pass
