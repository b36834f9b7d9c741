"""Who is asking: the portal's signed bearer tokens (JWT) turned into a ``Principal``.

The portal authenticates people; Carnet only verifies its signature. A token carries
``sub`` (INS, RPPS or person id), ``role`` (patient, professional, caregiver,
representative), optionally ``name`` and ``profession``, and must carry ``exp``.
HS256 with a shared key (``CARNET_API_JWT_KEY``) and/or RS256 with the portal's public
key (``CARNET_API_JWT_PUBLIC_KEY``, PEM). Anything else is a 401.

Clocks may disagree by ``leeway_s`` seconds (an expired token is accepted that long after
its ``exp``); a token must carry ``iat`` and live at most ``max_lifetime_s``
(``CARNET_API_JWT_MAX_LIFETIME_S``, 12 hours by default). All of it is ``Settings.api``
(``pipeline.settings.ApiSettings``).
"""

from __future__ import annotations

import datetime as dt
import re

import jwt

from pipeline.access import Principal, Role
from pipeline.api.schemas import INS_PATTERN, PERSON_PATTERN, RPPS_PATTERN
from pipeline.settings import ApiSettings

# A subject is an id of the kind the record's managers name people by (the routes' path
# patterns): a professional's token with another spelling of an RPPS (full-width digits) could
# open a break-the-glass, yet the patient could never block, authorise or revoke it.
_SUBJECTS = {
    Role.PATIENT: INS_PATTERN,
    Role.PROFESSIONAL: RPPS_PATTERN,
    Role.CAREGIVER: PERSON_PATTERN,
    Role.REPRESENTATIVE: PERSON_PATTERN,
}


class InvalidToken(Exception):
    """The bearer token is missing, malformed, badly signed, expired or lacks a claim.

    ``signed_subject`` is set when the signature was good but the claims are not acceptable
    (the portal signed something wrong, or its key is misused): such refusals are audited.
    """

    def __init__(self, message: str, *, signed_subject: str | None = None) -> None:
        super().__init__(message)
        self.signed_subject = signed_subject


def _is_text(value: object) -> bool:
    """A string that is valid Unicode text (no lone surrogate, no NUL)."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class TokenVerifier:
    def __init__(self, config: ApiSettings) -> None:
        config.check()
        self._config = config

    def __repr__(self) -> str:
        return "TokenVerifier()"

    def _key_for(self, token: str) -> tuple[str, str]:
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        # The algorithm is chosen by which key we hold, never trusted from the header alone.
        if alg == "HS256" and self._config.jwt_key:
            return self._config.jwt_key, alg
        if alg == "RS256" and self._config.jwt_public_key:
            return self._config.jwt_public_key, alg
        raise InvalidToken("unsupported token algorithm")

    def principal(self, token: str) -> Principal:
        key, alg = self._key_for(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._config.audience,
                issuer=self._config.issuer,
                leeway=self._config.leeway_s,
                options={"require": ["exp", "iat", "sub"], "verify_aud": self._config.audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from exc
        subject, role, name = claims.get("sub"), claims.get("role"), claims.get("name")
        shown = str(subject).encode("utf-8", "backslashreplace").decode()[:64]
        try:
            lifetime = float(claims["exp"]) - float(claims["iat"])
        except (TypeError, ValueError):
            raise InvalidToken("token times are not numbers", signed_subject=shown) from None
        if lifetime > self._config.max_lifetime_s:
            raise InvalidToken("token lives longer than allowed", signed_subject=shown)
        if not _is_text(subject) or not str(subject).strip():
            raise InvalidToken("token has no valid subject", signed_subject=shown)
        if not isinstance(role, str) or role not in {r.value for r in Role}:
            raise InvalidToken("token has no valid role", signed_subject=shown)
        if name is not None and not _is_text(name):
            raise InvalidToken("token has an invalid name", signed_subject=shown)
        parsed_role = Role(role)
        if not re.fullmatch(_SUBJECTS[parsed_role], str(subject).strip()):
            raise InvalidToken(f"token subject is not a {parsed_role.value}'s id", signed_subject=shown)
        return Principal(
            role=parsed_role, subject=str(subject).strip(), name=name if isinstance(name, str) else None
        )


def issue_token(
    key: str,
    principal: Principal,
    *,
    ttl: dt.timedelta = dt.timedelta(hours=1),
    now: dt.datetime | None = None,
    algorithm: str = "HS256",
    **claims: object,
) -> str:
    """A token as the portal would sign it (tests, the demo and ``carnet serve --demo``)."""
    issued = now or dt.datetime.now(dt.UTC)
    payload: dict[str, object] = {
        "sub": principal.subject,
        "role": principal.role.value,
        "iat": issued,
        "exp": issued + ttl,
        **claims,
    }
    if principal.name:
        payload["name"] = principal.name
    return jwt.encode(payload, key, algorithm=algorithm)
