"""The ``carnet`` commands a data engineer runs against what earlier runs left (``status``,
``replay``, ``search``, ``erase``…): a bad argument is a usage error (exit 2), a data
directory that does not exist a one-line error (exit 1) that creates nothing, never a
traceback nor an empty answer that reads as "nothing there"."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import main
from tests.api.conftest import make_ins


@pytest.fixture
def missing_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data_dir = tmp_path / "no-such-dir"
    monkeypatch.setenv("CARNET_DATA_DIR", str(data_dir))
    for name in ("CARNET_STATE_URL", "CARNET_INDEX_URL", "CARNET_STORE_URL"):
        monkeypatch.delenv(name, raising=False)
    return data_dir


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["replay", "--dry-run"],
        ["replay"],
        ["search", make_ins(7)],
        ["erase", make_ins(7)],
        ["account", "status", make_ins(7)],
        ["audit", "history", make_ins(7)],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_a_missing_data_directory_is_an_error_that_creates_nothing(
    missing_data_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    # Before, `status` said "no batch recorded" and `erase` closed the account in a new,
    # empty state database, a master key created beside it: a mistyped CARNET_DATA_DIR
    # read as an install with nothing in it.
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"carnet {argv[0]}: error: no data directory at {missing_data_dir}"), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not missing_data_dir.exists()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["replay", "--reason", "no_such_reason", "--dry-run"], "unknown reason code 'no_such_reason'"),
        (["replay", "--since", "2026-02-01", "--until", "2026-01-01"], "--since 2026-02-01 is after"),
        (["status", "--limit", "-3"], "not a positive number: '-3'"),
        (["search", make_ins(7), "--limit", "0"], "not a positive number: '0'"),
    ],
)
def test_bad_arguments_are_usage_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    says: str,
) -> None:
    monkeypatch.setenv("CARNET_DATA_DIR", str(tmp_path / "carnet"))
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err, err


def test_a_known_reason_code_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "carnet").mkdir()
    monkeypatch.setenv("CARNET_DATA_DIR", str(tmp_path / "carnet"))
    monkeypatch.delenv("CARNET_STATE_URL", raising=False)
    assert main(["replay", "--reason", "missing_ins", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("would replay 0 quarantined document(s)")


def test_the_quarantine_is_listed_with_its_ids_and_one_record_replayed_by_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``carnet replay --dry-run`` lists each record with its quarantine id, and ``--id``
    replays that record alone; an id the quarantine does not hold is a clear error (exit
    2), and a malformed one a usage error, never a lookup of a path it names."""
    from pipeline.settings import Settings
    from tests.test_replay import _quarantined

    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False)
    monkeypatch.setenv("CARNET_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CARNET_DATA_DOCS", "false")
    monkeypatch.delenv("CARNET_STATE_URL", raising=False)
    one = _quarantined(settings, b"%PDF-1.4 broken one", "one.pdf", None)
    two = _quarantined(settings, b"%PDF-1.4 broken two", "two.pdf", None)

    assert main(["replay", "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert one in listing and two in listing

    assert main(["replay", "--id", two]) == 0
    out = capsys.readouterr().out
    assert out.startswith("replayed 1 quarantined document(s)") and two in out and one not in out

    unknown = "0" * 32
    assert main(["replay", "--id", unknown, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"carnet replay: error: no quarantine record with the id {unknown}"

    with pytest.raises(SystemExit) as exited:
        main(["replay", "--id", "../../../etc/passwd"])
    assert exited.value.code == 2
    assert "not a quarantine id" in capsys.readouterr().err


def test_status_tells_an_unfinished_run_from_one_that_found_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that failed (an unreachable S3 prefix, a dead index) or was killed was listed
    '[no document]', as a run that found nothing: the operator read a quiet feed."""
    from pipeline.ledger import Ledger
    from pipeline.settings import Settings

    monkeypatch.setenv("CARNET_DATA_DIR", str(tmp_path / "carnet"))
    for name in ("CARNET_STATE_URL", "CARNET_INDEX_URL", "CARNET_STORE_URL"):
        monkeypatch.delenv(name, raising=False)
    ledger = Ledger(Settings.from_env())
    ledger.finish_run(ledger.start_run("ingest", "empty-folder"), {"by_status": {}})
    ledger.start_run("ingest", "s3://unreachable/p")
    ledger.close()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "s3://unreachable/p  [unfinished: failed, killed or still running]" in out
    assert "empty-folder  [no document]" in out


def test_replay_says_why_a_record_is_still_rejected_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record still rejected after a replay was listed '-> still rejected' beside the
    codes it was quarantined for: after a fix, the operator could not see that it now
    fails for another reason, nor that one was not replayed at all (its key shredded)."""
    import base64
    import os

    from pipeline.crypto import open_encrypted_store
    from pipeline.model import Reason
    from pipeline.settings import Settings
    from tests.test_replay import P, _quarantined

    key = base64.b64encode(os.urandom(32)).decode()
    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False, master_key=key)
    for name, value in {"CARNET_DATA_DIR": str(settings.data_dir), "CARNET_DATA_DOCS": "false"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CARNET_MASTER_KEY", key)
    monkeypatch.delenv("CARNET_STATE_URL", raising=False)
    other = _quarantined(settings, b"pas un document", "other.txt", None, Reason.MISSING_INS)
    shredded = _quarantined(settings, b"%PDF-1.4 broken, of P", "p.pdf", P)
    store = open_encrypted_store(settings)
    try:
        assert store.destroy_patient_key(P)
    finally:
        store.close()
    assert main(["replay"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines[other].endswith("other.txt -> still rejected: unsupported_format")
    assert "missing_ins" in lines[other]  # what it was quarantined for, in its column
    assert lines[shredded].endswith("-> still rejected (not replayed: no key opens its bytes)")
