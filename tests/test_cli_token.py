"""``carnet token``: a bearer token for local development, refused in production settings."""

from __future__ import annotations

import pytest

from pipeline.access import Role
from pipeline.api.auth import TokenVerifier
from pipeline.cli import main
from pipeline.settings import ApiSettings
from tests.api.conftest import TEST_JWT_KEY, make_ins


@pytest.fixture
def dev_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARNET_API_JWT_KEY", TEST_JWT_KEY)
    for name in ("CARNET_ENV", "CARNET_API_JWT_PUBLIC_KEY", "CARNET_API_JWT_ISSUER"):
        monkeypatch.delenv(name, raising=False)


def test_a_development_token_opens_the_api(dev_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    ins = make_ins(7)
    assert main(["token", ins, "--name", "Claire D.", "--minutes", "5"]) == 0
    token = capsys.readouterr().out.strip()
    who = TokenVerifier(ApiSettings(jwt_key=TEST_JWT_KEY)).principal(token)
    assert (who.role, who.subject, who.name) == (Role.PATIENT, ins, "Claire D.")


@pytest.mark.parametrize(
    "setting", [("CARNET_ENV", "production"), ("CARNET_API_JWT_ISSUER", "https://portail.example")]
)
def test_production_settings_refuse_it(
    dev_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    setting: tuple[str, str],
) -> None:
    monkeypatch.setenv(*setting)
    assert main(["token", make_ins(7)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "refused in production settings" in captured.err


def test_a_patient_token_needs_a_valid_ins(dev_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "123"]) == 2
    assert capsys.readouterr().out == ""
