"""The French health identifiers, defined once in ``pipeline.identifiers``."""

from __future__ import annotations

from pipeline.identifiers import finess_of, finess_ok, is_finess, rpps_of, rpps_ok


def test_rpps_bare_or_as_national_id() -> None:
    assert rpps_of("10101234567") == "10101234567"
    assert rpps_of("810101234567") == "10101234567"  # "8" + RPPS
    assert rpps_of("910101234567") is None and rpps_of("1010123456X") is None
    assert rpps_of("") is None


def test_finess_bare_or_as_national_id() -> None:
    assert finess_of("750712184") == "750712184"
    assert finess_of("1750712184") == "750712184"  # "1" + FINESS
    assert finess_of("12A0000019") == "2A0000019"
    # The OID says it is a structure's: a malformed one is kept for the quality check to report.
    assert finess_of("ABCDEFGHI") == "ABCDEFGHI" and finess_ok("ABCDEFGHI") is False
    assert finess_of("75071218") is None


def test_shapes_and_keys() -> None:
    assert is_finess("750712184") and is_finess("2B0000019") and not is_finess("3A0000019")
    assert finess_ok("750712184") is True and finess_ok("750712185") is False
    assert finess_ok(None) is None and rpps_ok("") is None
    assert rpps_ok("10000012343") is True and rpps_ok("10000012344") is False
    assert rpps_ok("1010123456") is False
