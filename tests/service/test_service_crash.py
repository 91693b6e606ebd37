"""Crash injection: kill the process at each step of a forget; recovery gives before or after, never half."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from promptforget.store import durable
from promptforget.store.ledger import LEDGER_NAME, Ledger, verify


SRC = str(Path(durable.__file__).resolve().parents[2])
# where the kill lands -> what recovery must conclude
EXPECTED = {
    "after_pending": "abort",
    "mid_artefact": "abort",
    "after_artefact": "commit",
    "before_commit": "commit",
    "mid_commit": "commit",
    "after_commit": None,  # already committed; nothing to resolve
}


def _env(crash_at=None):
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop(durable.CRASH_ENV, None)
    if crash_at:
        env[durable.CRASH_ENV] = crash_at
    return env


def _cli(*args, crash_at=None):
    return subprocess.run([sys.executable, "-m", "promptforget.cli", *args], env=_env(crash_at),
                          capture_output=True, text=True, timeout=120)


# The forget path itself in a fresh process (torch-free, starts in a fraction of a second); the CLI
# calls exactly this function, see test_crash_through_the_cli.
FORGET = ("import sys; from promptforget.store.durable import forget; "
          "forget(sys.argv[1], sys.argv[2].split(','), reason='crash test', request_id=sys.argv[3], source='cli')")


def _forget_proc(run, classes, request_id, crash_at):
    return subprocess.run([sys.executable, "-c", FORGET, str(run), ",".join(classes), request_id],
                          env=_env(crash_at), capture_output=True, text=True, timeout=120)


def _sha(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def test_every_crash_point_is_covered():
    assert set(EXPECTED) == set(durable.CRASH_POINTS)


@pytest.mark.parametrize("point", durable.CRASH_POINTS)
def test_crash_during_forget_recovers_to_before_or_after(text_run, point):
    weights = text_run / "model.safetensors"
    durable.forget(text_run, ["delta"], reason="earlier", request_id="r0")  # a non-empty ledger to chain on
    before = _sha(weights)
    r = _forget_proc(text_run, ["alpha"], "r1", point)
    assert r.returncode == durable.CRASH_EXIT_CODE, r.stderr

    # Straight after the kill the artefact is whole: the old file or the new one, never a mix.
    pending = Ledger(text_run).read()[2]
    assert pending["event"] == "pending" and pending["request_id"] == "r1"
    assert _sha(weights) in (pending["artefact_before_sha256"], pending["artefact_after_sha256"])

    # "Restart": a new process recovers from what is on disk (what `ledger verify`, serve and forget do first).
    report = {"recovery": durable.recover(text_run)}
    resolved = report["recovery"]["resolved"]
    assert (resolved and resolved["action"]) == EXPECTED[point]
    if point == "mid_commit":
        assert report["recovery"]["torn_tail_bytes"] > 0
    if point == "mid_artefact":
        assert report["recovery"]["stale_temps"]  # the half temp file (old bytes) is gone
    assert not list(text_run.glob(".*.tmp"))
    entries = Ledger(text_run).read()
    state = durable.artefact_state(text_run)
    if EXPECTED[point] == "abort":
        assert _sha(weights) == before and "alpha" in state["active_classes"]
        assert entries[-1]["event"] == "abort"
    else:
        assert _sha(weights) == pending["artefact_after_sha256"] and "alpha" in state["forgotten_classes"]
        assert entries[-1]["event"] == "commit" and entries[-1]["recovered"] == (point != "after_commit")

    # The client retries with the same request id: exactly one forget of alpha in the end.
    again = durable.forget(text_run, ["alpha"], reason="crash test", request_id="r1")
    assert again.replayed == (EXPECTED[point] != "abort")
    commits = [e for e in Ledger(text_run).read() if e["event"] == "commit" and e["request_id"] == "r1"]
    assert len(commits) == 1
    assert verify(text_run)["ok"]


def test_crash_through_the_cli(text_run):
    r = _cli("forget", str(text_run), "--classes", "gamma", "--request-id", "c1", crash_at="mid_commit")
    assert r.returncode == durable.CRASH_EXIT_CODE, r.stderr
    v = _cli("ledger", "verify", str(text_run), "--json")
    assert v.returncode == 0, v.stdout + v.stderr
    report = json.loads(v.stdout)
    assert report["recovery"]["resolved"]["action"] == "commit" and report["forgotten_classes"] == ["gamma"]
    assert [e["event"] for e in Ledger(text_run).read()] == ["pending", "commit"]


def test_server_crash_mid_forget_recovers_on_restart(text_run, admin_token, serve):
    """The real ``promptforget serve`` is killed between artefact swap and commit; a restart rolls forward."""
    ADMIN = admin_token

    def start(crash_at):
        proc = subprocess.Popen(
            [sys.executable, "-m", "promptforget.cli", "serve", str(text_run), "--port", "0", "--log-level", "warning"],
            env=dict(_env(crash_at), PROMPTFORGET_ADMIN_TOKEN=ADMIN), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        if "http://" not in line:
            proc.kill()
            raise AssertionError(f"server did not start: {line!r} {proc.stderr.read()}")
        url = line.split("on ", 1)[1].split(" ", 1)[0]
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/health", timeout=2)
                return proc, url
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    proc.kill()
                    raise
                time.sleep(0.1)

    proc, url = start("before_commit")
    try:
        with pytest.raises(httpx.TransportError):  # the process dies before it answers: no acknowledgement
            httpx.post(url + "/forget", json={"classes": ["beta"], "reason": "r", "request_id": "svc-1"},
                       headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)
        assert proc.wait(30) == durable.CRASH_EXIT_CODE
    finally:
        proc.kill()
        proc.wait()
    assert Ledger(text_run).read()[-1]["event"] == "pending"

    with serve(text_run) as (url, _):  # restarted (in-process this time): recovery runs before serving
        assert httpx.get(url + "/classes").json()["forgotten"] == ["beta"]
        entries = httpx.get(url + "/ledger", headers={"Authorization": f"Bearer {ADMIN}"}).json()["entries"]
        assert [e["event"] for e in entries] == ["pending", "commit"] and entries[1]["recovered"]
        r = httpx.post(url + "/forget", json={"classes": ["beta"], "reason": "r", "request_id": "svc-1"},
                       headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 200 and r.json()["replayed"]
        assert httpx.get(url + "/ledger/verify", headers={"Authorization": f"Bearer {ADMIN}"}).json()["ok"]
    assert (text_run / LEDGER_NAME).exists()
