"""``carnet serve``, ``carnet erase``, ``carnet audit`` and ``carnet account``: the
confidentiality commands.

``register(sub)`` adds them to the main parser (``pipeline/cli.py``). Exit codes follow
the CLI contract: 0 done, 1 the run could not proceed (or the audit log is tampered
with), 2 usage errors (an invalid patient id).
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys

from pipeline.errors import InvalidPatientId
from pipeline.settings import Settings


def _patient(value: str, command: str) -> str | None:
    from pipeline.identity import require_ins

    try:
        return require_ins(value)
    except InvalidPatientId as exc:
        print(f"carnet {command}: error: {exc.message}", file=sys.stderr)
        return None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from pipeline.api import create_app

    app = create_app(Settings.from_env(index_url=args.index, store_url=args.store))
    # No access log: request lines carry search words (health data) and the demo's ?token=.
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False, proxy_headers=False)
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    from pipeline.erasure import erase_patient

    patient = _patient(args.patient_id, "erase")
    if patient is None:
        return 2
    receipt = erase_patient(
        Settings.from_env(index_url=args.index, store_url=args.store),
        patient,
        actor=f"cli:{getpass.getuser()}",
    )
    print(receipt.model_dump_json())
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from pipeline.audit import open_audit_log

    result = open_audit_log(Settings.from_env()).verify(accept_legacy=args.accept_legacy)
    if result.ok:
        anchored = (
            f", anchored head {result.anchored_seq} present"
            if result.anchored_seq
            else ", no anchored head yet"
        )
        legacy = f", {result.legacy_entries} legacy unkeyed" if result.legacy_entries else ""
        print(f"audit log intact: {result.entries} entries{legacy}{anchored}")
        return 0
    print(
        f"audit log TAMPERED: entry {result.first_bad_seq}: {result.problem} "
        f"({result.entries} entries verified before it)"
    )
    return 1


def cmd_audit_anchor(args: argparse.Namespace) -> int:
    from pipeline.audit import open_audit_log

    head = open_audit_log(Settings.from_env()).anchor()
    print(head.model_dump_json() if head else "{}")
    return 0


def cmd_account(args: argparse.Namespace) -> int:
    from pipeline.access import AccessRules
    from pipeline.audit import open_audit_log
    from pipeline.crypto import patient_ref, patient_ref_key
    from pipeline.model import Reason

    patient = _patient(args.patient_id, f"account {args.account_command}")
    if patient is None:
        return 2
    settings = Settings.from_env()
    ref = patient_ref(patient_ref_key(settings), patient)
    rules = AccessRules(settings)
    try:
        if args.account_command == "status":
            closure = rules.closure(ref)
            print(f"{patient}: {'open' if closure is None else closure.value}")
            return 0
        if args.account_command == "oppose":
            rules.close_account(ref, Reason.OPPOSITION, dt.datetime.now(dt.UTC))
            what = "opposition recorded: new documents are refused"
        else:
            changed = rules.reopen_account(ref)
            what = "reopened: new documents are accepted" if changed else "was not closed"
    finally:
        rules.close()
    open_audit_log(settings).append(
        actor=f"cli:{getpass.getuser()}",
        role="operator",
        action=f"account_{args.account_command}",
        patient_id=patient,
        reason=args.why,
    )
    print(f"{patient}: {what}")
    return 0


def cmd_audit_history(args: argparse.Namespace) -> int:
    from pipeline.audit import open_audit_log

    patient = _patient(args.patient_id, "audit history")
    if patient is None:
        return 2
    entries = open_audit_log(Settings.from_env()).for_patient(patient)
    for e in entries:
        if args.json:
            print(e.model_dump_json(exclude={"prev_hash", "hash"}))
        else:
            who = f"{e.actor} ({e.actor_name})" if e.actor_name else e.actor
            docs = f" docs={','.join(e.doc_ids)}" if e.doc_ids else ""
            why = f" why={e.reason!r}" if e.reason else ""
            print(f"{e.at:%Y-%m-%d %H:%M:%S}  {e.role:<14} {who:<32} {e.action:<11}{docs}{why}")
    if not args.json:
        print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} for {patient}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``serve``, ``erase`` and ``audit`` to the ``carnet`` parser's subcommands."""
    sv = sub.add_parser("serve", help="run the search API and the patient page")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--index")
    sv.add_argument("--store")
    sv.set_defaults(func=cmd_serve)

    er = sub.add_parser("erase", help="erase a patient's account and every document (prints the receipt)")
    er.add_argument("patient_id", metavar="PATIENT_ID", help="the patient's 15-character INS")
    er.add_argument("--index")
    er.add_argument("--store")
    er.set_defaults(func=cmd_erase)

    au = sub.add_parser("audit", help="the access audit log")
    au_sub = au.add_subparsers(dest="audit_command", required=True)
    ve = au_sub.add_parser("verify", help="check the hash chain (exit 1 when tampered with)")
    ve.add_argument(
        "--accept-legacy",
        action="store_true",
        help="accept unkeyed entries written before keyed ones existed (a log from an "
        "older Carnet); anyone can write such entries",
    )
    ve.set_defaults(func=cmd_audit_verify)
    an = au_sub.add_parser("anchor", help="write the chain's head to the object store (run it from cron)")
    an.set_defaults(func=cmd_audit_anchor)
    hi = au_sub.add_parser("history", help="who accessed a patient's record")
    hi.add_argument("patient_id", metavar="PATIENT_ID")
    hi.add_argument("--json", action="store_true", help="one JSON object per line")
    hi.set_defaults(func=cmd_audit_history)
    register_account(sub)


def register_account(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``carnet account oppose|reopen|status PATIENT_ID``: closed accounts and oppositions."""
    ac = sub.add_parser("account", help="a patient's opposition, or reopening a closed account")
    ac_sub = ac.add_subparsers(dest="account_command", required=True)
    for name, text in (
        ("oppose", "record the patient's opposition: new documents are refused"),
        ("reopen", "accept documents again for a closed account or an opposition (at the patient's request)"),
        ("status", "open, account_closed or opposition"),
    ):
        p = ac_sub.add_parser(name, help=text)
        p.add_argument("patient_id", metavar="PATIENT_ID")
        p.add_argument("--why", help="the patient's request, for the audit log")
        p.set_defaults(func=cmd_account)


def main(argv: list[str] | None = None) -> int:
    """Run only these commands (tests, and until ``pipeline/cli.py`` registers them)."""
    parser = argparse.ArgumentParser(prog="carnet")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
