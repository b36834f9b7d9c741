"""The ``carnet`` command line. Its ``ingest`` and ``search`` contract (names, options,
report and JSON fields) is relied upon by other tools: change it only compatibly.

Exit codes: 0 when the run completed (rejects included), 1 with a one-line error when the
run itself could not proceed (unreachable index or store, one dying mid-run, unreadable
source, bad settings, another ingest or replay holding the data directory, a data
directory that does not exist for a command that reads what runs left there), 2 for
usage errors (including an invalid patient id, an unknown reason code or quarantine id, a
date window that ends before it starts).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import CarnetError, ConfigurationError, InvalidPatientId, UnknownQuarantineRecord
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.model import Outcome
    from pipeline.store import QuarantineRecord

log = logging.getLogger("carnet")


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"not a positive number: {value!r}")
    return number


def _quarantine_id(value: str) -> str:
    from pipeline.replay import is_quarantine_id

    if not is_quarantine_id(value):
        raise argparse.ArgumentTypeError(f"not a quarantine id (32 hex digits, see --dry-run): {value!r}")
    return value


def _reason(value: str) -> str:
    from pipeline.model import Reason

    codes = {r.value for r in Reason}
    if value not in codes:
        known = ", ".join(sorted(codes))
        raise argparse.ArgumentTypeError(f"unknown reason code {value!r} (one of: {known})")
    return value


# Commands that read or change what earlier runs left, and which of the embedded stores
# under the data directory they use (unless its URL points elsewhere). Run on a data
# directory that does not exist (a mistyped CARNET_DATA_DIR, a volume not mounted), they
# would create an empty one, a new master key with it, and answer "nothing there".
_READS_DATA = {
    "search": "index",
    "status": "state",
    "replay": "state",
    "erase": "state",
    "audit": "state",
    "account": "state",
}


def check_data_dir(args: argparse.Namespace) -> None:
    """Refuse a command of ``_READS_DATA`` on an embedded store whose data directory does
    not exist (``ConfigurationError``), before anything is opened or created."""
    uses = _READS_DATA.get(args.command)
    if uses is None:
        return
    settings = _settings(args)
    embedded = not settings.index.url if uses == "index" else not settings.state.url
    if embedded and not settings.data_dir.is_dir():
        raise ConfigurationError(
            f"no data directory at {settings.data_dir} (CARNET_DATA_DIR): nothing was ingested there"
        )


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(index_url=getattr(args, "index", None), store_url=getattr(args, "store", None))


def cmd_ingest(args: argparse.Namespace) -> int:
    from pipeline.ingest.sources import ingest_sources

    settings = _settings(args)
    if args.report and Path(args.report).is_dir():
        # Found before the run, not after it: the documents would be filed and no report kept.
        raise ConfigurationError(f"--report {args.report} is a folder: give a file's path")
    summary = ingest_sources(
        args.sources,
        settings,
        producer=args.producer,
        report_path=Path(args.report) if args.report else None,
        progress=sys.stderr.isatty() and not args.quiet,
    )
    if not args.quiet:
        print_summary(summary.metrics, file=sys.stderr)
    return 0


def print_summary(metrics: dict[str, object], *, file: object = sys.stdout) -> None:
    """A readable run summary: per status, class, producer and reject reason."""
    out = file  # typed loosely: a text stream

    def line(text: str = "") -> None:
        print(text, file=out)  # type: ignore[call-overload]

    line(f"Documents: {metrics['documents']}")
    for title, key in (
        ("By status", "by_status"),
        ("By class", "by_class"),
        ("Rejected by reason", "rejected_by_reason"),
    ):
        values: dict[str, int] = metrics.get(key) or {}  # type: ignore[assignment]
        if values:
            line(f"{title}:")
            for k, v in sorted(values.items(), key=lambda kv: (-kv[1], kv[0])):
                line(f"  {k:<24} {v:>6}")
    producers: dict[str, dict[str, int]] = metrics.get("by_producer") or {}  # type: ignore[assignment]
    if producers:
        line("By producer:")
        for p, counts in producers.items():
            detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            line(f"  {p:<28} {detail}")
    if metrics.get("ocr_pages"):
        line(f"OCR: {metrics['ocr_pages']} pages, mean confidence {metrics['ocr_mean_confidence']}")


def cmd_search(args: argparse.Namespace) -> int:
    from pipeline.identity import require_ins
    from pipeline.index import open_index
    from pipeline.model import DocClass, SearchQuery

    try:
        patient = require_ins(args.patient_id)
    except InvalidPatientId as exc:
        print(f"carnet search: error: {exc.message}", file=sys.stderr)
        return 2
    settings = _settings(args)
    index = open_index(settings.effective_index_url, alias=settings.index.es_alias)
    try:
        doc_class = DocClass(args.doc_class) if args.doc_class else None
        result = index.search(
            SearchQuery(
                patient_id=patient,
                text=args.query,
                doc_class=doc_class,
                since=args.since,
                until=args.until,
                limit=args.limit,
            )
        )
    finally:
        index.close()
    if args.json:
        print(
            json.dumps(
                {
                    "total": result.total,
                    "hits": [
                        {
                            "doc_id": h.doc_id,
                            "doc_class": h.doc_class.value,
                            "type_code": h.type_code,
                            "title": h.title,
                            "date": h.date.isoformat() if h.date else None,
                            "score": round(h.score, 4),
                            "snippet": h.snippet,
                            "highlights": [list(span) for span in h.highlights],
                        }
                        for h in result.hits
                    ],
                },
                ensure_ascii=False,
            )
        )
        return 0
    print(f"{result.total} document(s) for {patient}" + (f" matching {args.query!r}" if args.query else ""))
    for h in result.hits:
        date = h.date.isoformat() if h.date else "----------"
        print(f"  {date}  {h.doc_class.value:<12} {h.title[:50]:<50}  {h.doc_id[:12]}")
        if h.snippet:
            from pipeline.analysis import mark

            print(f"      {mark(h.snippet, h.highlights)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from collections import Counter

    from pipeline.crypto import open_encrypted_store
    from pipeline.ledger import Ledger
    from pipeline.monitoring import format_alerts, format_producer_status

    settings = _settings(args)
    ledger = Ledger(settings)
    try:
        runs = ledger.recent_runs(args.limit)
    finally:
        ledger.close()
    print(f"Last runs ({len(runs)}, newest first):")
    for r in runs:
        counts: dict[str, int] = (r.metrics or {}).get("by_status", {})  # type: ignore[assignment]
        detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no document"
        if r.finished_at is None:
            # Counts are recorded when a run finishes: one that did not has none to show,
            # and is no run that found nothing.
            detail = "unfinished: failed, killed or still running"
        # The run's detail (feed and batch key, or the sources) in full: keys are not cut.
        print(f"  {r.started_at:%Y-%m-%d %H:%M}  {r.kind:<7} {r.detail}  [{detail}]")
    print(format_producer_status(settings))
    print(format_alerts(settings))
    store = open_encrypted_store(settings)
    backlog = Counter(
        (q.producer, q.reasons[0].code.value if q.reasons else "?") for q in store.list_quarantine()
    )
    print(f"Quarantine backlog: {sum(backlog.values())}")
    for (producer, reason), n in sorted(backlog.items()):
        print(f"  {producer:<28} {reason:<22} {n:>5}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Print a bearer token for the local API (development only)."""
    from pipeline.access import Principal, Role
    from pipeline.api.auth import issue_token

    settings = Settings.from_env()
    config = settings.api
    # Production is said by CARNET_ENV, or shown by a portal's token settings: there,
    # tokens come from the identity provider and a locally minted one has no place.
    production = [
        name
        for name, value in (
            ("CARNET_API_JWT_PUBLIC_KEY", config.jwt_public_key),
            ("CARNET_API_JWT_ISSUER", config.issuer),
        )
        if value
    ]
    if settings.environment in ("production", "prod"):
        production.insert(0, "CARNET_ENV=production")
    if production:
        print(
            f"carnet token: error: refused in production settings ({', '.join(production)}): "
            "tokens come from the portal's identity provider",
            file=sys.stderr,
        )
        return 2
    key = config.jwt_key
    if not key:
        print(
            "carnet token: error: CARNET_API_JWT_KEY is not set (the key `carnet serve` "
            "verifies tokens with)",
            file=sys.stderr,
        )
        return 2
    role = Role(args.role)
    if role is Role.PATIENT:
        from pipeline.identity import require_ins

        try:
            subject = require_ins(args.subject)
        except InvalidPatientId as exc:
            print(f"carnet token: error: {exc.message}", file=sys.stderr)
            return 2
    else:
        subject = args.subject
    token = issue_token(
        key, Principal(role=role, subject=subject, name=args.name), ttl=dt.timedelta(minutes=args.minutes)
    )
    print(token)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    try:
        # The generator is demo tooling outside the production package; its PDF writer
        # (reportlab) comes with the ``demo`` extra only.
        from generator import generate_feed
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"carnet generate needs the demo extra ({exc.name} is missing): pip install 'carnet[demo]'"
        ) from exc

    feed = generate_feed(
        Path(args.root),
        seed=args.seed,
        patients=args.patients,
        documents=args.documents,
        include_bad=not args.no_bad,
        scans=args.scans,
    )
    if args.expected:
        feed.write_jsonl(Path(args.expected))
    print(f"generated {len(feed.documents)} documents under {args.root}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from pipeline.replay import ReplayFilter, replay_quarantine, replayable

    selection = ReplayFilter(
        producer=args.producer, reason=args.reason, since=args.since, until=args.until, ids=tuple(args.ids)
    )
    try:
        result = replay_quarantine(_settings(args), selection, dry_run=args.dry_run)
    except UnknownQuarantineRecord as exc:
        print(f"carnet replay: error: {exc.message}", file=sys.stderr)
        return 2
    verb = "would replay" if result.dry_run else "replayed"
    print(f"{verb} {len(result.selected)} quarantined document(s)")
    for q in result.selected:
        codes = ",".join(r.code.value for r in q.reasons)
        state = (
            " -> not replayable: the producer must send it again"
            if not replayable(q)
            else ""
            if result.dry_run
            else " -> released"
            if q.quarantine_id in result.released
            else f" -> still rejected{_rejected_now(q, result.outcomes)}"
        )
        print(f"  {q.quarantine_id}  {q.producer:<24} {codes:<22} {q.source}{state}")
    return 0


def _rejected_now(q: QuarantineRecord, outcomes: Sequence[Outcome]) -> str:
    """Why a replayed record is still rejected: the codes of its new attempt (they may not
    be those it was quarantined for), or that it was not replayed at all."""
    # A record of a whole HL7 file (part None) is answered by its messages, "file#n".
    mine = [
        o
        for o in outcomes
        if o.source == q.source or (q.part is None and o.source.startswith(f"{q.source}#"))
    ]
    if not mine:
        return " (not replayed: no key opens its bytes)"
    now = dict.fromkeys(r.code.value for o in mine for r in o.reasons if r.blocking)
    return f": {','.join(now)}" if now else ""


def cmd_rewrap_keys(args: argparse.Namespace) -> int:
    from pipeline.crypto import open_keyring
    from pipeline.keywrap import MASTER_KEY_FILE, existing_local_key_wrapper, kms_key_wrapper

    settings = _settings(args)
    target = kms_key_wrapper(settings)
    ring = open_keyring(settings, existing_local_key_wrapper(settings), create=False)
    try:
        moved = ring.rewrap(target)
    finally:
        ring.close()
    print(f"re-wrapped {moved} keys of the keyring in {ring.where} under the KMS key {settings.kms.key_id}")
    print(
        f"the local master key no longer opens this keyring: unset CARNET_MASTER_KEY and remove "
        f"{settings.data_dir / MASTER_KEY_FILE} once its backups are no longer needed"
    )
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    """``carnet db upgrade`` migrates the state database; ``carnet db current`` shows its revision."""
    from pipeline.state import current_revision, head_revision, open_engine, upgrade
    from pipeline.state.imports import import_legacy_files

    settings = _settings(args)
    engine = open_engine(settings)
    try:
        where = engine.url.render_as_string(hide_password=True)
        if args.action == "upgrade":
            before = current_revision(engine)
            reached = upgrade(engine)
            print(
                f"state database {where}: {before or 'empty'} -> {reached}"
                if before != reached
                else f"state database {where}: already at {reached}"
            )
            # Files of earlier versions in this data directory: access rules, keys, audit chain.
            for name, rows in import_legacy_files(settings.data_dir, engine).items():
                print(f"state database {where}: imported {settings.data_dir / name} ({rows} rows)")
        else:
            current = current_revision(engine)
            state = "up to date" if current == head_revision() else f"needs {head_revision()}"
            print(f"state database {where}: at {current or 'none (empty)'}, {state}")
    finally:
        engine.dispose()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carnet", description=__doc__.split("\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    ing = sub.add_parser("ingest", help="ingest files, folders or s3:// prefixes")
    ing.add_argument("sources", nargs="+", metavar="SOURCE")
    ing.add_argument("--index", help="sqlite:///path.db (default) or http(s)://host:9200")
    ing.add_argument("--store", help="file:///path (default) or s3://bucket/prefix")
    ing.add_argument("--report", help="write the JSON Lines run report here")
    ing.add_argument("--producer", help="producer id (default: from the feed layout)")
    ing.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    ing.set_defaults(func=cmd_ingest)

    se = sub.add_parser("search", help="search one patient's documents")
    se.add_argument("patient_id", metavar="PATIENT_ID", help="the patient's 15-character INS")
    se.add_argument("query", nargs="?", metavar="QUERY")
    se.add_argument("--index")
    se.add_argument("--class", dest="doc_class", choices=["biology", "imaging", "prescription", "other"])
    se.add_argument("--since", type=_date)
    se.add_argument("--until", type=_date)
    se.add_argument("--limit", type=_positive, default=20)
    se.add_argument("--json", action="store_true")
    se.set_defaults(func=cmd_search)

    st = sub.add_parser("status", help="last runs and the quarantine backlog")
    st.add_argument("--store")
    st.add_argument("--limit", type=_positive, default=10)
    st.set_defaults(func=cmd_status)

    rp = sub.add_parser("replay", help="reprocess quarantined documents")
    rp.add_argument(
        "--id",
        dest="ids",
        action="append",
        default=[],
        type=_quarantine_id,
        metavar="QID",
        help="only this quarantine record (repeatable; --dry-run lists the ids)",
    )
    rp.add_argument("--producer")
    rp.add_argument("--reason", type=_reason, help="only documents rejected with this reason code")
    rp.add_argument("--since", type=_date, help="quarantined on or after this day")
    rp.add_argument("--until", type=_date, help="quarantined on or before this day")
    rp.add_argument("--dry-run", action="store_true", help="list what would be replayed")
    rp.add_argument("--index")
    rp.add_argument("--store")
    rp.set_defaults(func=cmd_replay)

    tk = sub.add_parser(
        "token", help="a bearer token for the local API (development only; refused in production settings)"
    )
    tk.add_argument("subject", help="the patient's INS, or the professional's RPPS…")
    tk.add_argument(
        "--role", default="patient", choices=["patient", "professional", "caregiver", "representative"]
    )
    tk.add_argument("--name", help="display name carried by the token")
    tk.add_argument("--minutes", type=int, default=60, help="lifetime (default 60)")
    tk.set_defaults(func=cmd_token)

    ge = sub.add_parser("generate", help="write a synthetic producer feed")
    ge.add_argument("root")
    ge.add_argument("--seed", type=int, default=42)
    ge.add_argument("--patients", type=int, default=30)
    ge.add_argument("--documents", type=int, default=120)
    ge.add_argument("--scans", type=int, default=None)
    ge.add_argument("--no-bad", action="store_true", help="only good documents")
    ge.add_argument("--expected", help="write the expected outcomes (JSON Lines) here")
    ge.set_defaults(func=cmd_generate)

    rw = sub.add_parser(
        "rewrap-keys",
        help="move the keyring from the local master key to the "
        "KMS key CARNET_KMS_KEY_ID (stop workers and API first)",
    )
    rw.set_defaults(func=cmd_rewrap_keys)

    db = sub.add_parser("db", help="the state database's schema (CARNET_STATE_URL)")
    db.add_argument(
        "action",
        choices=["upgrade", "current"],
        help="upgrade: migrate to this version's schema (run once, before starting "
        "workers, on PostgreSQL); current: show the schema revision",
    )
    db.set_defaults(func=cmd_db)

    from pipeline.cli_access import register

    register(sub)  # serve, erase, audit
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from sqlalchemy.exc import DBAPIError

    parser = build_parser()
    args = parser.parse_args(argv)
    since, until = getattr(args, "since", None), getattr(args, "until", None)
    if since is not None and until is not None and since > until:
        parser.error(f"--since {since} is after --until {until}: no day is in that window")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        # The Elasticsearch client logs every failed attempt with its traceback; when the
        # node is gone the run ends with one line naming the failure instead (-v shows them).
        logging.getLogger("elastic_transport").setLevel(logging.ERROR)
    try:
        check_data_dir(args)
        return int(args.func(args))
    except CarnetError as exc:  # SourceError, BackendUnavailable, ConfigurationError…
        print(f"carnet {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except (OSError, sqlite3.Error, DBAPIError) as exc:  # a full disk, an unwritable data dir,
        # a locked or unreachable state database
        print(f"carnet {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
