"""The settings a Carnet DAG task runs with: the environment's (``Settings.from_env``), with
the Airflow Connections ``carnet_index``, ``carnet_store`` and ``carnet_state`` over them.

A data engineer configures Carnet as any other DAG: in Airflow's Connections (the UI,
``airflow connections add``, a secrets backend, or ``AIRFLOW_CONN_<ID>`` variables in URI
or JSON form). A Connection that is not defined leaves the environment's setting as it is
(the demo and the tests define none).

- ``carnet_index``, an Elasticsearch node (type ``elasticsearch`` or ``http``): host, port,
  scheme in *schema* or in extra ``scheme`` (``http`` by default), login and password for
  basic authentication → ``index_url``; extra ``alias`` → ``es_index_alias``.
- ``carnet_store``, an S3 service (type ``aws``): extra ``endpoint_url`` and ``region_name``
  (as the Amazon provider reads them) → ``s3_endpoint_url``, ``s3_region`` (the S3 store and
  S3 feeds alike); extra ``store_url`` (``s3://bucket/prefix``) → ``store_url``. Access
  keys in login/password are refused: the store takes its keys from boto3's credential
  chain (instance role, ``AWS_*`` variables, profile), not from settings.
- ``carnet_state``, the state database (type ``postgres`` or ``sqlite``) → ``state_url``.

Neither the Elasticsearch nor the Amazon provider is installed with Carnet: the
Connections' fields are read here directly, as those providers' hooks read them.
Called inside tasks only: a Connection lookup at parse time would query Airflow on every
parse of every DAG file. ``.airflowignore`` keeps the DAG processor from parsing this file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pipeline.errors import ConfigurationError
from pipeline.settings import Settings

if TYPE_CHECKING:
    from airflow.sdk import Connection

INDEX_CONN_ID = "carnet_index"
STORE_CONN_ID = "carnet_store"
STATE_CONN_ID = "carnet_state"


def task_settings(**overrides: Any) -> Settings:
    """The environment's settings, the Connections' over them, then ``overrides`` (None: unset)."""
    return Settings.from_env(**{**connection_settings(), **overrides})


def connection_settings() -> dict[str, Any]:
    """The settings the defined Connections give (none defined: an empty dict)."""
    values: dict[str, Any] = {}
    for conn_id, read in (
        (INDEX_CONN_ID, index_settings),
        (STORE_CONN_ID, store_settings),
        (STATE_CONN_ID, state_settings),
    ):
        conn = _connection(conn_id)
        if conn is not None:
            values.update(read(conn))
    return values


def _connection(conn_id: str) -> Connection | None:
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import Connection

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


def _userinfo(conn: Connection) -> str:
    if not conn.login:
        return ""
    return f"{quote(conn.login, safe='')}:{quote(conn.password or '', safe='')}@"


def index_settings(conn: Connection) -> dict[str, Any]:
    """``carnet_index`` → the Elasticsearch URL (credentials in it) and the alias."""
    if not conn.host:
        raise ConfigurationError(f"Airflow Connection {conn.conn_id!r} names no host")
    extra = conn.extra_dejson
    scheme = (extra.get("scheme") or conn.schema or "http").lower()
    if scheme not in ("http", "https"):
        raise ConfigurationError(
            f"Airflow Connection {conn.conn_id!r}: scheme must be http or https, got {scheme!r}"
        )
    port = f":{conn.port}" if conn.port else ""
    values: dict[str, Any] = {"index_url": f"{scheme}://{_userinfo(conn)}{conn.host}{port}"}
    if extra.get("alias"):
        values["es_index_alias"] = str(extra["alias"])
    return values


def store_settings(conn: Connection) -> dict[str, Any]:
    """``carnet_store`` → the S3 endpoint and region, and the store's URL when given."""
    if conn.login or conn.password:
        raise ConfigurationError(
            f"Airflow Connection {conn.conn_id!r} holds access keys, which Carnet does not take "
            "from settings: give the workers an instance role, AWS_* variables or a profile"
        )
    extra = conn.extra_dejson
    values: dict[str, Any] = {}
    if extra.get("endpoint_url"):
        values["s3_endpoint_url"] = str(extra["endpoint_url"])
    if extra.get("region_name"):
        values["s3_region"] = str(extra["region_name"])
    if extra.get("store_url"):
        if not str(extra["store_url"]).startswith("s3://"):
            raise ConfigurationError(
                f"Airflow Connection {conn.conn_id!r}: store_url must be "
                f"s3://bucket/prefix, got {extra['store_url']!r}"
            )
        values["store_url"] = str(extra["store_url"])
    return values


def state_settings(conn: Connection) -> dict[str, Any]:
    """``carnet_state`` → the state database's URL."""
    kind = (conn.conn_type or "").lower()
    if kind == "sqlite":
        if not conn.host:
            raise ConfigurationError(f"Airflow Connection {conn.conn_id!r} names no database file")
        return {"state_url": f"sqlite:///{conn.host}"}
    if kind in ("postgres", "postgresql"):
        if not conn.host:
            raise ConfigurationError(f"Airflow Connection {conn.conn_id!r} names no host")
        port = f":{conn.port}" if conn.port else ""
        return {"state_url": f"postgresql://{_userinfo(conn)}{conn.host}{port}/{conn.schema or ''}"}
    raise ConfigurationError(
        f"Airflow Connection {conn.conn_id!r} must be of type postgres or sqlite, got {conn.conn_type!r}"
    )
