"""Deletion certificates: a signed JSON document that states what one forget request deleted, when, in
which mode, the ledger entries that record it, the ledger head it was issued against, and the audit
verdicts that apply. Torch-free, like the ledger it reads.

The document is stored and served as canonical JSON (sorted keys, no spaces, ASCII; one line) so that
**any** changed byte fails :func:`verify_certificate`: a change of content breaks the signature, and a
change of form (a space, a reordered key) is not canonical any more.

Signatures, both over the canonical JSON of the document without ``signature``:

- ``hmac_sha256``: HMAC-SHA256 with the ledger key (the one that signs the ledger, ``key_id`` names it).
  Whoever holds the key can check it, offline.
- ``ed25519`` (when the ``cryptography`` package is installed), over the body and the HMAC: an Ed25519 key
  derived from the ledger key
  (its seed is HMAC-SHA256(ledger key, a fixed label)), so there is no second secret to manage. The public
  key travels in the document (``signer.ed25519_public_key``): anyone can check the signature without the
  secret, and trusts it when that public key is the one the operator publishes
  (``promptforget ledger certificate-key``).

What a mode guarantees, in the certificate's own words (``MODE_STATEMENTS``): ``instant`` -- the class's
prompt bytes are gone from the artefact; the shared weights were trained with it and are not guaranteed
free of its knowledge. ``retraining`` -- the same, and a retrain without the data was asked for and has
not landed yet. ``exact`` -- the served model is the result of a training run without the data (the ledger
entry names the recomputation's hashes).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

from promptforget.store import layout
from promptforget.store.ledger import (Ledger, LedgerKey, canonical, committed, head, request_state, utc_now, verify)

FORMAT = "promptforget-deletion-certificate/1"
_ED25519_LABEL = b"promptforget-certificate-ed25519\0"
_CHAIN_FIELDS = ("seq", "prev_sha256", "entry_sha256", "hmac", "key_id")
# What a request deleted, as its commit states it: whichever of these the entry holds (a model family
# may forget classes, training examples as keyed hashes, or both).
DELETED_FIELDS = ("classes", "examples", "removed_prompt_sha256")
MODE_STATEMENTS = {
    "instant": "The deleted items' own parameters (prompt bytes) are gone from the model artefact and from every "
               "file of the run. The shared weights were trained with the data and are not guaranteed to be free "
               "of its knowledge; the audit verdicts below measure what remains against a retrained model.",
    "retraining": "The deleted items' own parameters are gone (as for an instant forget), and a retrain of the "
                  "shared weights without the data was requested and has not completed yet.",
    "exact": "The served model is the result of a training run without the deleted data: it equals what "
             "retraining without it gives. The ledger entry names the recomputation (its configuration, "
             "training-manifest and artefact hashes).",
}


class CertificateError(ValueError):
    """No certificate can be issued (unknown request, ledger that does not verify, no key)."""


# ---------------------------------------------------------------------- keys
def _ed25519_private(key: LedgerKey):
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError:
        return None
    seed = hmac.new(key.secret, _ED25519_LABEL, hashlib.sha256).digest()
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key(key: LedgerKey) -> str | None:
    """The Ed25519 public key (hex) that certificates signed with ``key`` carry; None without
    ``cryptography``."""
    private = _ed25519_private(key)
    if private is None:
        return None
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


# ---------------------------------------------------------------------- building
def _request_entries(entries: list[dict], request_id: str) -> list[dict]:
    """Every ledger entry about the request: its pending/commit (``request_id``) and any exact
    retrain that covers it (``request_ids``)."""
    return [e for e in entries
            if e.get("request_id") == request_id or request_id in (e.get("request_ids") or [])]


def _audit_verdicts(run_dir: Path, items: set[str]) -> dict | None:
    """The run's latest audit, when it audited (at least) these forgotten classes: its verdicts with
    intervals, and the SHA-256 of ``audit.json`` so that the certificate pins the report it quotes."""
    path = run_dir / layout.AUDIT_DIR / layout.AUDIT_JSON
    try:
        raw = path.read_bytes()
        record = json.loads(raw)
    except (OSError, ValueError):
        return None
    audited = set((record.get("audit") or {}).get("forgotten_classes") or [])
    if not items or not items & audited:
        return None
    rows = [{k: r.get(k) for k in ("metric", "kind", "verdict", "audited", "reference", "tolerance")}
            for r in record.get("table", []) if isinstance(r, dict)]
    return {"file": f"{layout.AUDIT_DIR}/{layout.AUDIT_JSON}", "sha256": hashlib.sha256(raw).hexdigest(),
            "forgotten_classes_audited": sorted(audited), "covers_all": items <= audited,
            "reference_seeds": record.get("reference_seeds"), "verdicts": rows}


def config_record(run_dir: Path) -> dict:
    """The run's config record, or {} where the run has none this layout knows (another model family)."""
    try:
        return layout.read_config_record(run_dir)
    except (OSError, ValueError):
        return {}


def build_certificate(run_dir: str | os.PathLike, request_id: str, key: LedgerKey | None,
                      report: dict | None = None) -> dict:
    """The signed certificate of the committed forget ``request_id``. ``report``: a :func:`verify` report
    already made (else one is made). Raises :class:`CertificateError` when the request has no commit,
    the ledger does not verify, or there is no key to sign with."""
    run_dir = Path(run_dir)
    if key is None:
        raise CertificateError("a certificate is signed with the ledger key and none is set "
                               "(--ledger-key-file, $PROMPTFORGET_LEDGER_KEY_FILE or $PROMPTFORGET_LEDGER_KEY)")
    report = report if report is not None else verify(run_dir, key)
    if not report["ok"]:
        raise CertificateError(f"the ledger does not verify, no certificate is issued: {report['problems'][0]}")
    entries = Ledger(run_dir).read()
    state = request_state(entries, request_id)
    if state is None:
        raise CertificateError(f"no committed forget has request_id {request_id!r}")
    commit = next(e for e in committed(entries) if e["request_id"] == request_id)
    own = _request_entries(entries, request_id)
    done = next((e for e in entries if e["seq"] == state.get("exact_seq")), None)
    record = config_record(run_dir)
    backbone = record.get("backbone") or {}
    deleted = {k: commit[k] for k in DELETED_FIELDS if k in commit}
    mode = state["state"]
    body = {
        "format": FORMAT,
        "issued_at": utc_now(),
        "request": {"request_id": request_id, "reason": commit.get("reason", next(
            (e.get("reason") for e in own if e.get("event") == "pending"), None)),
                    "source": commit.get("source") or next((e.get("source") for e in own if "source" in e), None),
                    "forgotten_at": commit["time"],
                    "exact_at": done["time"] if done else None},
        "deleted": deleted,
        "mode": mode,
        "statement": MODE_STATEMENTS.get(mode, f"state {mode!r} (see the ledger entries)"),
        "recomputation": ({k: v for k, v in done.items() if k not in _CHAIN_FIELDS and k not in ("event", "time")}
                          if done else None),
        "model": {"run": run_dir.resolve().name, "family": record.get("family") or "pfm",
                  "backbone": backbone.get("name_or_path"), "backbone_family": backbone.get("family"),
                  "backbone_sha256": backbone.get("sha256"), "artefact_sha256": report["artefact_sha256"],
                  "active_classes": report["active_classes"]},
        "ledger": {"head": head(entries), "entries": own, "verified": True, "authenticated": report["authenticated"],
                   "key_id": key.key_id},
        "audit": _audit_verdicts(run_dir, set(deleted.get("classes") or [])),
        "signer": {"key_id": key.key_id, "ed25519_public_key": public_key(key)},
    }
    return sign(body, key)


def sign(body: dict, key: LedgerKey) -> dict:
    """HMAC over the body; Ed25519 over the body *and* its HMAC, so that a public check covers every byte."""
    sig = {"hmac_sha256": hmac.new(key.secret, canonical(body), hashlib.sha256).hexdigest()}
    private = _ed25519_private(key)
    if private is not None:
        sig["ed25519"] = private.sign(canonical({**body, "signature": sig})).hex()
    return {**body, "signature": sig}


def dumps(cert: dict) -> bytes:
    """The certificate's one true byte form: canonical JSON and a newline."""
    return canonical(cert) + b"\n"


# ---------------------------------------------------------------------- checking
def _hex(text, n: int) -> bytes | None:
    """``n`` bytes as lowercase hex, in its one canonical spelling (so no changed character decodes alike)."""
    if not isinstance(text, str) or len(text) != 2 * n:
        return None
    try:
        data = bytes.fromhex(text)
    except ValueError:
        return None
    return data if data.hex() == text else None


def _ed25519_problem(body: dict, sig: dict, pub_hex) -> str | None:
    """Why the Ed25519 signature (over the body and the HMAC) does not check, or None."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    pub, value = _hex(pub_hex, 32), _hex(sig.get("ed25519"), 64)
    if pub is None or value is None:
        return "the Ed25519 public key or signature is not 32/64 bytes of lowercase hex"
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(value, canonical({**body, "signature": {
            "hmac_sha256": sig.get("hmac_sha256")}}))
    except InvalidSignature:
        return "Ed25519 signature does not match: the certificate was changed or forged"
    return None


def _has_cryptography() -> bool:
    try:
        import cryptography.hazmat.primitives.asymmetric.ed25519  # noqa: F401
    except ImportError:
        return False
    return True


def verify_certificate(raw: bytes, key: LedgerKey | None = None, public: str | None = None) -> tuple[bool, str]:
    """Check a certificate's bytes offline. With ``key``: its HMAC and key id, and its Ed25519 signature
    with the public key the ledger key derives. Without: its Ed25519 signature, against ``public`` (hex)
    when given, else against the public key it carries (which proves only that nothing changed since
    whoever holds that key signed it). Returns (valid, one line saying why)."""
    try:
        cert = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        return False, f"not JSON ({e})"
    if not isinstance(cert, dict) or cert.get("format") != FORMAT:
        return False, f"not a {FORMAT} document"
    if raw not in (dumps(cert), canonical(cert)):
        return False, "not in canonical form: the file was modified after it was issued"
    sig = cert.get("signature")
    body = {k: v for k, v in cert.items() if k != "signature"}
    signer = body.get("signer") if isinstance(body.get("signer"), dict) else {}
    if not isinstance(sig, dict) or not set(sig) <= {"hmac_sha256", "ed25519"} or _hex(sig.get("hmac_sha256"), 32) is None:
        return False, "no valid signature block (hmac_sha256 and optionally ed25519)"
    what = f"request {(body.get('request') or {}).get('request_id')!r}, mode {body.get('mode')}"
    crypto = _has_cryptography()
    if key is not None:
        if signer.get("key_id") != key.key_id:
            return False, f"signed with key {signer.get('key_id')!r}, not with this key ({key.key_id})"
        want = hmac.new(key.secret, canonical(body), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(sig["hmac_sha256"], want):
            return False, "HMAC does not match: the certificate was changed or forged"
        if "ed25519" in sig and crypto:
            if signer.get("ed25519_public_key") != public_key(key):
                return False, "the Ed25519 public key is not the one this ledger key derives"
            why = _ed25519_problem(body, sig, signer.get("ed25519_public_key"))
            if why:
                return False, why
        checked = "HMAC-SHA256" + (" and Ed25519" if "ed25519" in sig and crypto else "")
        return True, f"valid: {checked} with ledger key {key.key_id}; {what}"
    if "ed25519" not in sig:
        return False, "no ledger key given and no Ed25519 signature: cannot check (give --ledger-key-file)"
    if not crypto:
        return False, "no ledger key given, and checking Ed25519 needs the `cryptography` package"
    if public is not None and public != signer.get("ed25519_public_key"):
        return False, "signed with another Ed25519 key than the one given"
    why = _ed25519_problem(body, sig, signer.get("ed25519_public_key"))
    if why:
        return False, why
    pinned = ("the given public key" if public else
              f"the public key it carries ({signer.get('ed25519_public_key')}); compare it with the operator's")
    return True, f"valid: Ed25519 signature by {pinned}; {what}"
