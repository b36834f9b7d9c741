"""Settings: read from the environment by from_env only, validated, one-line errors naming the variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import AliasChoices, BaseModel

from pipeline.errors import ConfigurationError
from pipeline.settings import FLAT_NAMES, IndexSettings, Settings


def test_ocr_workers_default_to_the_cpus_this_process_may_use() -> None:
    assert Settings.from_env({}).ocr.workers == len(os.sched_getaffinity(0))


def test_the_ocr_page_limit_reaches_the_parsers(tmp_path: Path) -> None:
    from pipeline.ingest import open_backends

    settings = Settings.from_env({"CARNET_OCR_MAX_PAGES": "7", "CARNET_DATA_DIR": str(tmp_path)})
    assert Settings.from_env({}).ocr.max_pages == 200
    backends = open_backends(settings)
    try:
        assert backends.recipe is not None and backends.recipe.options.ocr_max_pages == 7
        assert backends.registry.parsers[0].ocr.max_pages == 7  # type: ignore[attr-defined]
    finally:
        backends.close()


def test_ocr_workers_from_the_environment() -> None:
    assert Settings.from_env({"CARNET_OCR_WORKERS": "3"}).ocr.workers == 3
    assert Settings.from_env({"CARNET_OCR_WORKERS": "0"}).ocr.workers == 1  # never no OCR at all
    with pytest.raises(ConfigurationError, match="CARNET_OCR_WORKERS"):
        Settings.from_env({"CARNET_OCR_WORKERS": "many"})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CARNET_OCR_WORKERS", "-1"),
        ("CARNET_FLUSH_EVERY", "-5"),
        ("CARNET_KMS_CACHE_TTL_S", "-1"),
        ("CARNET_KMS_CACHE_SIZE", "-1"),
        ("CARNET_MAX_REJECT_RATE", "-0.1"),
        ("CARNET_MAX_REJECT_RATE", "half"),
        ("CARNET_DATA_DOCS", "maybe"),
        ("CARNET_FAULT_POINT", "after_lunch"),
        ("CARNET_FAULT_POINT", "after_ack:x"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=variable) as refused:
        Settings.from_env({variable: value})
    assert "\n" not in str(refused.value) and repr(value) in str(refused.value)


def test_values_from_the_environment() -> None:
    s = Settings.from_env(
        {
            "CARNET_FLUSH_EVERY": "0",
            "CARNET_DATA_DOCS": "No",
            "CARNET_ENV": " Production ",
            "CARNET_FAULT_POINT": "after_ack:2",
            "CARNET_DATA_DIR": "relative",
            "CARNET_MAX_REJECT_RATE": "0.25",
            "CARNET_FEEDS_FILE": "feeds.toml",
        }
    )
    assert (s.ingestion.flush_every, s.ingestion.data_docs, s.environment) == (1, False, "production")
    assert s.ingestion.fault_point == "after_ack:2"
    assert s.data_dir == (Path.cwd() / "relative").resolve() and s.ingestion.max_reject_rate == 0.25
    assert s.ingestion.feeds_file == Path("feeds.toml")


def test_aws_region_wins_over_aws_default_region() -> None:
    both = Settings.from_env({"AWS_REGION": "eu-west-3", "AWS_DEFAULT_REGION": "us-west-2"})
    assert (both.s3.region, both.kms.region) == ("eu-west-3", "eu-west-3")
    assert Settings.from_env({"AWS_DEFAULT_REGION": "us-west-2"}).s3.region == "us-west-2"
    assert Settings.from_env({}).kms.region == "us-east-1"


def test_an_empty_variable_is_unset() -> None:
    s = Settings.from_env({"CARNET_STATE_URL": "", "CARNET_KMS_KEY_ID": "", "CARNET_OCR_LANG": ""})
    assert (s.state.url, s.kms.key_id, s.ocr.lang) == ("", None, "fra")


def test_overrides_win_and_none_leaves_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARNET_INDEX_URL", "http://env.example:9200")
    monkeypatch.setenv("CARNET_STORE_URL", "s3://env/raw")
    s = Settings.from_env(index_url="http://flag.example:9200", store_url=None)
    assert (s.index.url, s.store.url) == ("http://flag.example:9200", "s3://env/raw")
    assert Settings.from_env({}).index.url == ""  # a given mapping replaces os.environ


def test_keyword_construction_never_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CARNET_INDEX_URL", "http://env.example:9200")
    monkeypatch.setenv("CARNET_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("CARNET_FAULT_POINT", "before_ack")
    s = Settings(master_key="k")
    assert (s.index.url, s.ingestion.fault_point, s.data_dir) == (
        "",
        None,
        (Path.cwd() / ".carnet").resolve(),
    )
    assert "'k'" not in repr(s)  # the master key stays out of logs


def test_keyword_construction_is_validated_and_frozen(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="ocr_workers"):
        Settings(data_dir=tmp_path, ocr_workers=-1)
    with pytest.raises(ConfigurationError, match="no_such_setting"):
        Settings(data_dir=tmp_path, no_such_setting=1)
    s = Settings(data_dir=tmp_path, ocr_workers=0)
    assert s.ocr.workers == 1 and s == Settings(data_dir=tmp_path, ocr_workers=1)
    with pytest.raises(ValueError, match="frozen"):
        s.ocr.workers = 2  # type: ignore[misc]


def test_an_override_replaces_one_setting_only() -> None:
    s = Settings.from_env(
        {"AWS_REGION": "eu-west-3", "CARNET_OCR_WORKERS": "-1"}, s3_region="eu-west-1", ocr_workers=2
    )
    assert (s.s3.region, s.kms.region, s.ocr.workers) == ("eu-west-1", "eu-west-3", 2)
    with pytest.raises(ConfigurationError, match="^ocr_workers: "):  # named as it was given
        Settings.from_env({}, ocr_workers=-1)


def test_the_api_section_from_the_environment(tmp_path: Path) -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"
    (tmp_path / "portal.pem").write_text(pem, encoding="ascii")
    api = Settings.from_env(
        {
            "CARNET_API_JWT_KEY": "k" * 32,
            "CARNET_API_JWT_ISSUER": "https://portail.example",
            "CARNET_API_JWT_PUBLIC_KEY": str(tmp_path / "portal.pem"),
            "CARNET_API_JWT_MAX_LIFETIME_S": "600",
        }
    ).api
    assert (api.jwt_key, api.jwt_public_key, api.issuer, api.max_lifetime_s) == (
        "k" * 32,
        pem,
        "https://portail.example",
        600,
    )
    assert "k" * 32 not in repr(api) and "MFkw" not in repr(api)
    assert Settings.from_env({}).api == Settings().api
    with pytest.raises(ConfigurationError, match="^CARNET_API_JWT_MAX_LIFETIME_S: .*'0'"):
        Settings.from_env({"CARNET_API_JWT_MAX_LIFETIME_S": "0"})
    with pytest.raises(ConfigurationError, match="^CARNET_API_JWT_PUBLIC_KEY: .*PEM"):
        Settings.from_env({"CARNET_API_JWT_PUBLIC_KEY": str(tmp_path / "missing.pem")})


def test_every_variable_is_in_the_readme_configuration_table() -> None:
    section = (
        (Path(__file__).parents[1] / "README.md")
        .read_text(encoding="utf-8")
        .split("\n## Configuration\n", 1)[1]
        .split("\n## ", 1)[0]
    )
    models = [Settings, *(f.annotation for f in Settings.model_fields.values() if _is_section(f.annotation))]
    aliases = [f.validation_alias for model in models for f in model.model_fields.values()]
    variables = {
        v for a in aliases for v in (a.choices if isinstance(a, AliasChoices) else [a]) if isinstance(v, str)
    }
    assert {"CARNET_DATA_DIR", "CARNET_API_JWT_KEY", "AWS_DEFAULT_REGION", "CARNET_KMS_KEY_ID"} <= variables
    assert not {v for v in variables if f"`{v}`" not in section}, "document them in README's table"


def _is_section(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def test_every_flat_name_names_a_field_of_its_section() -> None:
    for flat, (section, field) in FLAT_NAMES.items():
        assert field in Settings.model_fields[section].annotation.model_fields, flat  # type: ignore[union-attr]


def test_a_section_given_whole_replaces_the_environment_s() -> None:
    env = {"CARNET_INDEX_URL": "http://env.example:9200", "CARNET_ES_ALIAS": "env-alias"}
    s = Settings.from_env(env, index=IndexSettings(url="http://given.example:9200"))
    assert s.index == IndexSettings(url="http://given.example:9200")  # its alias is the default again
    assert Settings.from_env(env, index_url="http://one.example:9200").index.es_alias == "env-alias"
    assert Settings(index=IndexSettings(es_alias="a"), index_url="http://u").index == IndexSettings(
        url="http://u", es_alias="a"
    )


def test_a_section_field_error_names_its_variable_or_flat_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="^CARNET_KMS_CACHE_SIZE: "):
        Settings.from_env({"CARNET_KMS_CACHE_SIZE": "lots"})
    with pytest.raises(ConfigurationError, match="^flush_every: "):
        Settings(data_dir=tmp_path, flush_every=-1)


def test_a_copy_applies_flat_names_to_their_section_and_checks_them() -> None:
    base = Settings(data_dir=Path("/tmp/carnet-copy"))
    copy = base.model_copy(update={"ocr_workers": 1, "data_docs": False, "master_key": "k" * 44})
    assert (copy.ocr.workers, copy.ingestion.data_docs, copy.kms.master_key) == (1, False, "k" * 44)
    assert copy.data_dir == base.data_dir and base.ingestion.data_docs is True
    with pytest.raises(ConfigurationError, match="flush_every"):
        base.model_copy(update={"flush_every": -3})
