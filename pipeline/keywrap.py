"""Wrapping of data keys under the master key (the key-encryption key), locally or by a KMS.

One small protocol, ``KeyWrapper``, with two implementations chosen by settings
(``open_key_wrapper``):

- ``LocalKeyWrapper``: the master key is a 32-byte secret held by this process
  (``CARNET_MASTER_KEY``, else the install's ``master.key`` file, created 0600). Data keys
  are random and sealed with AES-GCM under it. The embedded default: the demo and the unit
  tests need no server.
- ``KmsKeyWrapper``: the master key never leaves an AWS-KMS-compatible service
  (``CARNET_KMS_KEY_ID``, reached through boto3). Data keys come from ``GenerateDataKey``
  and are opened by ``Decrypt``; opened keys are cached briefly (``KeyCache``: bounded age
  and count), so reading a patient's record is not one KMS request per object, and a
  destroyed key leaves every process within the cache's TTL.

Every wrapped key is bound to a label naming what it protects (``patient:<INS>``,
``object:<sha256>``): AES-GCM associated data locally, the KMS encryption context
remotely, so a wrapped key copied into another patient's row does not open. KMS services
log encryption contexts in clear (CloudTrail), so the context carries a digest of the
label, never the INS itself.

Failures: a key that does not open, a KMS key that is unknown, disabled or denied, missing
credentials → ``ConfigurationError``; a KMS that cannot be reached or answers with a
server-side error after retries → ``BackendUnavailable``. Both say what failed in one line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.errors import BackendUnavailable, ConfigurationError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

NONCE_BYTES = 12
KEY_BYTES = 32
MASTER_KEY_FILE = "master.key"

_warned_default_key = False


def seal(key: bytes, data: bytes, aad: bytes) -> bytes:
    """``nonce + AES-GCM(data)`` under ``key`` with ``aad`` authenticated."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, data, aad)


def unseal(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    """The inverse of ``seal``; raises ``InvalidTag`` for a wrong key, AAD or ciphertext."""
    return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)


@runtime_checkable
class KeyWrapper(Protocol):
    """Makes data keys and opens them again; ``kind`` is recorded by the keyring."""

    kind: str  # "local" or "kms": a keyring wrapped by one is never opened by the other

    def generate(self, label: str) -> tuple[bytes, bytes]:
        """A fresh 256-bit data key and its wrapped form, bound to ``label``."""
        ...

    def unwrap(self, wrapped: bytes, label: str) -> bytes:
        """The data key of ``wrapped``; ``ConfigurationError`` when it does not open under ``label``."""
        ...

    def wrap(self, key: bytes, label: str) -> bytes:
        """An existing key wrapped and bound to ``label`` (to move keys from another wrapper)."""
        ...

    def forget(self, label: str) -> None:
        """Drop any opened copy of ``label``'s key held in memory (crypto-shredding)."""
        ...


# -- the local master key ------------------------------------------------------------------------


def decode_master_key(value: str) -> bytes:
    """The master key from its base64 form; it must be exactly 32 bytes."""
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError("master key is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigurationError(f"master key must be {KEY_BYTES} bytes, got {len(key)}")
    return key


def load_master_key(settings: Settings) -> bytes:
    """``settings.kms.master_key``, or this install's own key file (created 0600 when missing)."""
    global _warned_default_key
    if settings.kms.master_key:
        return decode_master_key(settings.kms.master_key)
    path = settings.data_dir / MASTER_KEY_FILE
    if not _warned_default_key:
        log.warning(
            "no master key configured (CARNET_MASTER_KEY or CARNET_KMS_KEY_ID): using the "
            "per-install key file %s; production must supply its own key",
            path,
        )
        _warned_default_key = True
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use theirs
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(base64.b64encode(os.urandom(KEY_BYTES)).decode() + "\n")
    return decode_master_key(path.read_text())


class LocalKeyWrapper:
    """Data keys sealed with AES-GCM under a master key held in this process."""

    kind = "local"

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != KEY_BYTES:
            raise ConfigurationError(f"master key must be {KEY_BYTES} bytes")
        self._master = master_key

    def __repr__(self) -> str:
        return "LocalKeyWrapper()"

    def generate(self, label: str) -> tuple[bytes, bytes]:
        key = AESGCM.generate_key(bit_length=256)
        return key, seal(self._master, key, label.encode())

    def unwrap(self, wrapped: bytes, label: str) -> bytes:
        try:
            return unseal(self._master, wrapped, label.encode())
        except InvalidTag:
            raise ConfigurationError("a wrapped key does not open with the master key") from None

    def wrap(self, key: bytes, label: str) -> bytes:
        return seal(self._master, key, label.encode())

    def forget(self, label: str) -> None:
        """Nothing to drop: local unwrapping is cheap, so nothing is cached."""


# -- a KMS ---------------------------------------------------------------------------------------


class KeyCache:
    """Opened data keys for a short while: at most ``max_entries``, each for ``ttl_s`` seconds.

    Keyed by label and a digest of the wrapped form, so a rewrapped key is not confused
    with the old one. ``ttl_s`` or ``max_entries`` at 0 turns caching off.
    """

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, bytes], tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KeyCache(ttl_s={self.ttl_s}, max_entries={self.max_entries}, held={len(self)})"

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @staticmethod
    def _slot(label: str, wrapped: bytes) -> tuple[str, bytes]:
        return label, hashlib.sha256(wrapped).digest()

    def get(self, label: str, wrapped: bytes) -> bytes | None:
        slot = self._slot(label, wrapped)
        with self._lock:
            entry = self._entries.get(slot)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._entries[slot]
                return None
            self._entries.move_to_end(slot)
            return entry[1]

    def put(self, label: str, wrapped: bytes, key: bytes) -> None:
        if self.ttl_s <= 0 or self.max_entries <= 0:
            return
        slot = self._slot(label, wrapped)
        with self._lock:
            self._entries[slot] = (self._clock() + self.ttl_s, key)
            self._entries.move_to_end(slot)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, label: str) -> None:
        with self._lock:
            for slot in [s for s in self._entries if s[0] == label]:
                del self._entries[slot]


def encryption_context(label: str) -> dict[str, str]:
    """The KMS encryption context binding a data key to ``label`` (a digest: KMS logs it)."""
    kind = label.split(":", 1)[0]
    return {"carnet:key": kind, "carnet:for": hashlib.sha256(label.encode()).hexdigest()}


# Answers meaning the service is there but failing or overloaded (after boto3's retries).
_TRANSIENT = {
    "ThrottlingException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "LimitExceededException",
    "ServiceUnavailableException",
    "InternalFailure",
}
# Answers meaning this ciphertext does not open with this key and context.
_DOES_NOT_OPEN = {"InvalidCiphertextException", "IncorrectKeyException"}


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


class KmsKeyWrapper:
    """Data keys generated and opened by an AWS-KMS-compatible service, under ``key_id``."""

    kind = "kms"

    def __init__(
        self,
        key_id: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        cache: KeyCache | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.key_id = key_id
        self.endpoint_url = endpoint_url
        self._where = endpoint_url or f"the AWS KMS endpoint of {region or 'the default region'}"
        self._cache = cache if cache is not None else KeyCache(ttl_s=0, max_entries=0)
        config = Config(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            # The endpoint comes from Carnet's settings only: boto3 must not pick up
            # AWS_ENDPOINT_URL (which may name the S3 server) on its own.
            ignore_configured_endpoint_urls=True,
        )
        # A session per client: boto3's default session is shared process-wide state.
        self._client: Any = boto3.session.Session().client(
            "kms", endpoint_url=endpoint_url, region_name=region, config=config
        )

    def __repr__(self) -> str:
        return f"KmsKeyWrapper({self.key_id!r}, endpoint_url={self.endpoint_url!r})"

    @contextmanager
    def _translated(self, operation: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            message = _one_line(error.get("Message", ""))
            if code in _DOES_NOT_OPEN:
                raise ConfigurationError(
                    f"a wrapped key does not open with the KMS key {self.key_id} "
                    f"(another key, or a key bound to another patient or object)"
                ) from None
            if code in _TRANSIENT:
                raise BackendUnavailable(
                    f"KMS {operation} failed at {self._where}: {code} {message}"
                ) from None
            raise ConfigurationError(
                f"KMS {operation} refused for key {self.key_id} at {self._where}: {code} {message}"
            ) from None
        except NoCredentialsError:
            raise ConfigurationError(
                f"no AWS credentials for the KMS at {self._where} (AWS_ACCESS_KEY_ID… or a profile)"
            ) from None
        except BotoCoreError as exc:  # connection refused, DNS, timeouts
            raise BackendUnavailable(f"KMS unreachable at {self._where}: {_one_line(exc)}") from None

    def generate(self, label: str) -> tuple[bytes, bytes]:
        with self._translated("GenerateDataKey"):
            answer = self._client.generate_data_key(
                KeyId=self.key_id, KeySpec="AES_256", EncryptionContext=encryption_context(label)
            )
        key, wrapped = bytes(answer["Plaintext"]), bytes(answer["CiphertextBlob"])
        if len(key) != KEY_BYTES:
            raise ConfigurationError(f"KMS GenerateDataKey returned a {len(key)}-byte key, not {KEY_BYTES}")
        self._cache.put(label, wrapped, key)
        return key, wrapped

    def unwrap(self, wrapped: bytes, label: str) -> bytes:
        key = self._cache.get(label, wrapped)
        if key is not None:
            return key
        with self._translated("Decrypt"):
            # KeyId too: KMS then refuses a ciphertext made under any other key.
            answer = self._client.decrypt(
                CiphertextBlob=wrapped, KeyId=self.key_id, EncryptionContext=encryption_context(label)
            )
        key = bytes(answer["Plaintext"])
        self._cache.put(label, wrapped, key)
        return key

    def wrap(self, key: bytes, label: str) -> bytes:
        with self._translated("Encrypt"):
            answer = self._client.encrypt(
                KeyId=self.key_id, Plaintext=key, EncryptionContext=encryption_context(label)
            )
        return bytes(answer["CiphertextBlob"])

    def forget(self, label: str) -> None:
        self._cache.forget(label)


def kms_key_wrapper(settings: Settings) -> KmsKeyWrapper:
    """The wrapper of the KMS key the settings name (``ConfigurationError`` when none)."""
    if not settings.kms.key_id:
        raise ConfigurationError("no KMS key configured (CARNET_KMS_KEY_ID)")
    return KmsKeyWrapper(
        settings.kms.key_id,
        endpoint_url=settings.kms.endpoint_url,
        region=settings.kms.region,
        cache=KeyCache(settings.kms.cache_ttl_s, settings.kms.cache_size),
    )


def existing_local_key_wrapper(settings: Settings) -> LocalKeyWrapper:
    """The local master key the install already has (never creates a key file)."""
    if settings.kms.master_key:
        return LocalKeyWrapper(decode_master_key(settings.kms.master_key))
    path = settings.data_dir / MASTER_KEY_FILE
    if not path.exists():
        raise ConfigurationError(f"no local master key: neither CARNET_MASTER_KEY nor {path}")
    return LocalKeyWrapper(decode_master_key(path.read_text()))


def open_key_wrapper(settings: Settings) -> KeyWrapper:
    """The KMS wrapper when ``kms_key_id`` is set, else the local master key (file by default)."""
    if settings.kms.key_id:
        if settings.kms.master_key:
            raise ConfigurationError(
                "both CARNET_KMS_KEY_ID and CARNET_MASTER_KEY are set: "
                "the master key is either in the KMS or local, choose one"
            )
        return kms_key_wrapper(settings)
    return LocalKeyWrapper(load_master_key(settings))
