"""``carnet serve``, ``carnet erase`` and ``carnet audit``: the confidentiality commands.

``register(sub)`` adds them to the main parser (``pipeline/cli.py``). Exit codes follow
the CLI contract: 0 done, 1 the run could not proceed (or the audit log is tampered
with), 2 usage errors (an invalid patient id).
"""

from __future__ import annotations

import argparse
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
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False,
                proxy_headers=False)
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    from pipeline.erasure import erase_patient

    patient = _patient(args.patient_id, "erase")
    if patient is None:
        return 2
    receipt = erase_patient(Settings.from_env(index_url=args.index, store_url=args.store), patient,
                            actor=f"cli:{getpass.getuser()}")
    print(receipt.model_dump_json())
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from pipeline.audit import AuditLog, audit_log_path

    result = AuditLog(audit_log_path(Settings.from_env().data_dir)).verify()
    if result.ok:
        print(f"audit log intact: {result.entries} entries")
        return 0
    print(f"audit log TAMPERED: entry {result.first_bad_seq}: {result.problem} "
          f"({result.entries} entries verified before it)")
    return 1


def cmd_audit_history(args: argparse.Namespace) -> int:
    from pipeline.audit import AuditLog, audit_log_path

    patient = _patient(args.patient_id, "audit history")
    if patient is None:
        return 2
    entries = AuditLog(audit_log_path(Settings.from_env().data_dir)).for_patient(patient)
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
    ve.set_defaults(func=cmd_audit_verify)
    hi = au_sub.add_parser("history", help="who accessed a patient's record")
    hi.add_argument("patient_id", metavar="PATIENT_ID")
    hi.add_argument("--json", action="store_true", help="one JSON object per line")
    hi.set_defaults(func=cmd_audit_history)


def main(argv: list[str] | None = None) -> int:
    """Run only these commands (tests, and until ``pipeline/cli.py`` registers them)."""
    parser = argparse.ArgumentParser(prog="carnet")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
