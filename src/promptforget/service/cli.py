"""``promptforget serve RUN_DIR`` and ``promptforget ledger verify|show|head RUN_DIR``, ``ledger keygen``,
``ledger certificate|verify-certificate|certificate-key`` (deletion certificates, store/certificate.py)."""

from __future__ import annotations

import argparse
import json
import sys

from promptforget.service.settings import ServiceSettings
from promptforget.utils.cli_args import add_command, add_ledger_key_flag
from promptforget.utils.config import add_config_args, config_from_args

TOKEN_FIELDS = ("admin_token", "predict_token")  # from files or the environment, never from flags


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "serve", cmd_serve,
                    help="serve a PFM run over HTTP: predict, forget on request (admin token), deletion ledger")
    p.add_argument("run_dir")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (0 = any free port; the URL is printed)")
    p.add_argument("--admin-token-file", default=None, help="file holding the admin token (else $PROMPTFORGET_ADMIN_TOKEN)")
    p.add_argument("--predict-token-file", default=None, help="file holding the predict token (else $PROMPTFORGET_PREDICT_TOKEN; unset = open)")
    add_config_args(p.add_argument_group("service (ServiceSettings)"), ServiceSettings, exclude=TOKEN_FIELDS)
    add_ledger_key_flag(p, key_file=False)  # the key file is a ServiceSettings knob
    p.add_argument("--torch-threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--log-format", default="text", choices=["text", "json"],
                   help="logs on stderr: plain text, or one JSON object per line (time, level, logger, message, "
                        "route, status, latency_ms, request_id, ...); uvicorn's logs included")

    p = sub.add_parser("ledger", help="check or show a run's deletion ledger",
                       description="The deletion ledger (RUN_DIR/forget_ledger.jsonl): append-only, hash-chained.")
    lsub = p.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    v = lsub.add_parser("verify", help="recover a crashed forget, then check the chain and the artefact (exit 1 on a problem)")
    v.add_argument("run_dir")
    v.add_argument("--no-recover", action="store_true", help="read-only: report a crashed forget instead of resolving it")
    v.add_argument("--json", action="store_true", help="print the full report as JSON")
    v.add_argument("--expect-head", default=None, metavar="SEQ:HASH",
                   help="an anchor from `ledger head`: fail if the chain no longer holds that entry (HASH alone: anywhere)")
    v.add_argument("--recompute", action="store_true",
                   help="analytic runs: retrain from the recorded data minus every forgotten class and example and "
                   "compare the artefact's hash (the proof anyone holding the retained data can run)")
    add_ledger_key_flag(v)
    v.set_defaults(func=cmd_ledger_verify)
    s = lsub.add_parser("show", help="print the ledger's entries as JSON lines")
    s.add_argument("run_dir")
    s.set_defaults(func=cmd_ledger_show)
    register_ledger_key_commands(lsub)


# ---------------------------------------------------------------------- the ledger key and the anchor
def register_ledger_key_commands(lsub) -> None:
    h = lsub.add_parser("head", help="print the ledger head (seq and hash): an anchor to keep elsewhere")
    h.add_argument("run_dir")
    h.add_argument("--json", action="store_true")
    h.set_defaults(func=cmd_ledger_head)
    k = lsub.add_parser("keygen", help="write a new ledger key (hex, mode 0600) to a file outside any run directory")
    k.add_argument("--out", required=True, help="the key file to create (never overwritten)")
    k.set_defaults(func=cmd_ledger_keygen)
    register_certificate_commands(lsub)


def cmd_ledger_head(args) -> int:
    from promptforget.store.ledger import Ledger, head

    h = head(Ledger(args.run_dir).read())
    print(json.dumps(h) if args.json else f"{h['seq']}:{h['entry_sha256']}")
    return 0


def cmd_ledger_keygen(args) -> int:
    from promptforget.store.ledger import KEY_FILE_ENV, keygen

    key = keygen(args.out)
    print(f"[ledger] wrote a new key to {args.out} (key_id {key.key_id}); use it with --ledger-key-file or "
          f"{KEY_FILE_ENV}, and keep it away from the run directory")
    return 0


# ---------------------------------------------------------------------- deletion certificates
def register_certificate_commands(lsub) -> None:
    c = lsub.add_parser("certificate", help="print (or write) the signed deletion certificate of one forget request")
    c.add_argument("run_dir")
    c.add_argument("--request-id", required=True, help="the forget request to certify")
    c.add_argument("--out", default=None, help="write the certificate to this file (else print it)")
    add_ledger_key_flag(c)
    c.set_defaults(func=cmd_ledger_certificate)
    v = lsub.add_parser("verify-certificate", help="check a deletion certificate offline (exit 0 valid, 2 invalid)")
    v.add_argument("file")
    v.add_argument("--public-key", default=None, help="the operator's Ed25519 public key (hex) to check against "
                   "without the ledger key (from `ledger certificate-key`)")
    add_ledger_key_flag(v)
    v.set_defaults(func=cmd_ledger_verify_certificate)
    k = lsub.add_parser("certificate-key", help="print the Ed25519 public key that checks this ledger key's certificates")
    add_ledger_key_flag(k)
    k.set_defaults(func=cmd_ledger_certificate_key)


def _required_key(path):
    from promptforget.store.ledger import load_key

    key = load_key(path)
    if key is None:
        raise ValueError("no ledger key: give --ledger-key-file or set PROMPTFORGET_LEDGER_KEY_FILE / PROMPTFORGET_LEDGER_KEY")
    return key


def cmd_ledger_certificate(args) -> int:
    from promptforget.store.certificate import build_certificate, dumps
    from promptforget.utils.io import atomic_write_bytes

    data = dumps(build_certificate(args.run_dir, args.request_id, _required_key(args.ledger_key_file)))
    if args.out:
        atomic_write_bytes(args.out, data)
        print(f"[ledger] wrote the deletion certificate of {args.request_id} to {args.out}")
    else:
        sys.stdout.write(data.decode("ascii"))
    return 0


def cmd_ledger_verify_certificate(args) -> int:
    from pathlib import Path

    from promptforget.store.certificate import verify_certificate
    from promptforget.store.ledger import load_key

    try:
        raw = Path(args.file).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {args.file}: {e.strerror}") from None
    ok, why = verify_certificate(raw, load_key(args.ledger_key_file), args.public_key)
    print(f"[certificate] {'VALID' if ok else 'INVALID'}: {why}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 2


def cmd_ledger_certificate_key(args) -> int:
    from promptforget.store.certificate import public_key

    pub = public_key(_required_key(args.ledger_key_file))
    if pub is None:
        raise ValueError("Ed25519 signatures need the `cryptography` package (pip install cryptography)")
    print(pub)
    return 0


def cmd_serve(args) -> int:
    """Run the forget service (FastAPI + uvicorn; OpenAPI page at /docs). The admin token comes from
    PROMPTFORGET_ADMIN_TOKEN or --admin-token-file; predictions are open unless PROMPTFORGET_PREDICT_TOKEN
    or --predict-token-file is set. Forgotten classes are masked in the head."""
    import socket

    import uvicorn

    from promptforget.service.app import create_app
    from promptforget.service.logs import configure_logging
    from promptforget.service.server import uvicorn_config
    from promptforget.service.settings import read_token

    settings = config_from_args(
        ServiceSettings, args,
        admin_token=read_token("PROMPTFORGET_ADMIN_TOKEN", args.admin_token_file) or "",
        predict_token=read_token("PROMPTFORGET_PREDICT_TOKEN", args.predict_token_file),
    )
    settings.validate()  # before loading the model: a missing token is a one-line error
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    log_config = configure_logging(args.log_level, args.log_format)
    app = create_app(args.run_dir, settings)
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    host, port = sock.getsockname()[:2]
    print(f"[serve] {args.run_dir} on http://{host}:{port} (OpenAPI: /docs); predict "
          f"{'needs a token' if settings.predict_token else 'is open'}", flush=True)
    if not app.state.host.ready:
        print(f"[serve] not ready, forgets refused: {app.state.host.ledger_problem}", file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn_config(app, settings, log_level=args.log_level, log_config=log_config,
                                           access_log=args.log_level == "debug"))
    server.run(sockets=[sock])
    return 0


def cmd_ledger_verify(args) -> int:
    from promptforget.store.durable import recover
    from promptforget.store.anchor import ANCHOR_DIR_ENV
    from promptforget.store.ledger import KEY_ENV, KEY_FILE_ENV, LedgerError, load_key, verify

    key = load_key(args.ledger_key_file)
    recovery = None
    if not args.no_recover:
        try:
            recovery = recover(args.run_dir, key)
        except LedgerError:
            pass  # nothing was written; the report below names the problem
    report = verify(args.run_dir, key, expect_head=args.expect_head)
    if report["anchor_dir"] is None:
        print(f"[ledger] no anchor store ({ANCHOR_DIR_ENV} / --anchor-dir / a key file): a ledger cut behind its "
              "last entry cannot be told from a short one", file=sys.stderr)
    if recovery is not None:
        report["recovery"] = recovery
    if args.recompute:
        from promptforget.families import family_of

        proof = family_of(args.run_dir).recompute(args.run_dir, key)
        report["recompute"] = proof
        report["problems"] += proof["problems"]
        report["ok"] = report["ok"] and proof["ok"]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        if recovery and recovery["resolved"]:
            r = recovery["resolved"]
            print(f"[ledger] recovered a crashed forget: seq {r['pending_seq']} -> {r['action']} (request {r['request_id']})")
        state = "OK" if report["ok"] else "FAILED"
        print(f"[ledger] {state}: {report['entries']} entries, {report['commits']} forgets; forgotten "
              f"{report['forgotten_classes'] or '-'}; artefact sha256 {report['artefact_sha256'][:16]}...")
        if key is None:
            print(f"[ledger] no ledger key given ({KEY_ENV} / {KEY_FILE_ENV} / --ledger-key-file): could only check "
                  "the chain, not who wrote it")
        elif report["authenticated"]:
            print(f"[ledger] authenticated: every entry signed with key {key.key_id}")
        if report["anchor"]:
            a = report["anchor"]
            print(f"[ledger] anchored: seq {a['seq']} ({a['entry_sha256'][:16]}...) in {report['anchor_dir']}")
        elif report["anchor_dir"] and report["entries"]:
            print(f"[ledger] not anchored yet in {report['anchor_dir']} (the next forget anchors it)")
        if args.recompute:
            proof = report["recompute"]
            verdict = "equals" if proof["ok"] else "does NOT equal"
            print(f"[ledger] recompute: a retrain on {proof['n_train']} retained examples (without "
                  f"{proof['forgotten_classes'] or 'no class'} and {proof['forgotten_examples']} forgotten examples) "
                  f"{verdict} the artefact: sha256 {proof['recomputed_sha256'][:16]}... in {proof['seconds']:.1f} s")
        for p in report["problems"]:
            print(f"[ledger] problem: {p}", file=sys.stderr)
    return 0 if report["ok"] else 1


def cmd_ledger_show(args) -> int:
    from promptforget.store.ledger import Ledger, canonical

    for e in Ledger(args.run_dir).read():
        print(canonical(e).decode())
    return 0
