"""Load test of the forget service on loopback: predictions per second, and forget latency (p50/p99)
with and without concurrent prediction load. Bounded in requests and time; stops by itself.

Two more measurements for consistency across processes:
- the cost of the per-request artefact check (``sync_every_request``): prediction latency p50 with the
  check on and off, on the same server, alternating which goes first each round;
- the cross-process case: ``promptforget forget`` run as a separate process (the CLI) while the server
  serves, one class at a time; after each CLI forget returns, every prediction sent later is checked
  for the forgotten class with a probability above 0 ("stale answers after acknowledgement", target 0).
  Run once with the per-request check (now) and once without it and with the 1 s polling watcher (before).

The run directory is copied to a temporary directory first (forgetting is destructive), and every
round starts a fresh server (uvicorn, 127.0.0.1, a free port) on a fresh copy, so each round can
forget all classes but one.

    python benchmarks/service_load.py --run-dir runs/demo-text            # a trained run
    python benchmarks/service_load.py --make-run minilm                    # untrained run, real MiniLM-L6
    python benchmarks/service_load.py --make-run tiny --rounds 2           # tiny random BERT (fast)

An untrained run has the same shapes, so the same cost, as a trained one: speed does not depend on the
weights. Output: JSON (stdout and --out, default runs/bench/service_load.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, machine  # noqa: E402

ADMIN = "bench-admin-token-0123456789"
BBC_CLASSES = ["business", "entertainment", "politics", "sport", "tech"]
TEXTS = [
    "Shares in the telecoms group rose sharply after it reported quarterly profits well ahead of forecasts.",
    "The striker scored twice in the second half as the champions came from behind to win the derby.",
    "Ministers will publish the draft bill next week, with a vote expected before the summer recess.",
    "The new handset runs a faster chip and the update fixes a battery drain reported by many users.",
    "The film took the top prize at the festival, and its director thanked the cast in a short speech.",
]


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def summary(ms: list[float]) -> dict:
    return {"n": len(ms), "p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99), "mean_ms": statistics.fmean(ms) if ms else None,
            "max_ms": max(ms) if ms else None}


def make_run(kind: str, out: Path) -> Path:
    import torch

    from promptforget.pfm.config import PFMConfig
    from promptforget.pfm.model import PFMModel

    if kind == "tiny":
        from transformers import AutoTokenizer, BertConfig, BertModel

        from promptforget.backbones.encoder import default_text_encoder_dir

        bb = out.parent / "tiny-bert"
        torch.manual_seed(0)
        BertModel(BertConfig(vocab_size=30522, max_position_embeddings=128, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64)).save_pretrained(bb)
        AutoTokenizer.from_pretrained(default_text_encoder_dir()).save_pretrained(bb)
        backbone = str(bb)
    else:
        backbone = "minilm"
    PFMModel(PFMConfig(backbone=backbone, class_names=BBC_CLASSES, max_length=128)).save_pretrained(out)
    return out


def fresh_copy(src: Path, tmp: Path, i: int) -> Path:
    dst = tmp / f"round-{i}"
    dst.mkdir()
    for name in ("pfm_config.json", "model.safetensors"):  # not the ledger: each round starts clean
        shutil.copy2(src / name, dst / name)
    return dst


@contextmanager
def server(run_dir: Path, **settings):
    import uvicorn

    from promptforget.service.app import create_app
    from promptforget.service.server import uvicorn_config
    from promptforget.service.settings import ServiceSettings

    app = create_app(run_dir, ServiceSettings(**{"admin_token": ADMIN, "poll_interval_s": 0, **settings}))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # loopback only
    srv = uvicorn.Server(uvicorn_config(app, app.state.host.settings, log_level="warning"))
    t = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    while not srv.started:
        if not t.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app.state.host
    finally:
        srv.should_exit = True
        t.join(30)
        sock.close()


class Load:
    """``threads`` clients posting /predict back to back until stopped, ``max_requests`` or ``deadline``.
    ``top_k`` > 1 records, per response, when it was sent and which classes had a probability above 0."""

    def __init__(self, url: str, threads: int, batch: int, max_requests: int, deadline: float, top_k: int = 1):
        self.url, self.batch, self.max_requests, self.deadline, self.top_k = url, batch, max_requests, deadline, top_k
        self.lat_ms: list[float] = []
        self.answers: list[tuple[float, set[str]]] = []  # (monotonic send time, classes with probability > 0)
        self.errors: list[str] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._issued = 0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _take(self) -> bool:
        with self._lock:
            if self.stop.is_set() or self._issued >= self.max_requests or time.monotonic() > self.deadline:
                return False
            self._issued += 1
            return True

    def _run(self, i: int) -> None:
        import httpx

        texts = [TEXTS[(i + k) % len(TEXTS)] for k in range(self.batch)]
        with httpx.Client(base_url=self.url, timeout=60) as c:
            while self._take():
                t, sent = time.perf_counter(), time.monotonic()
                try:
                    r = c.post("/predict", json={"texts": texts, "top_k": self.top_k})
                    if r.status_code != 200:
                        self.errors.append(f"{r.status_code} {r.text[:200]}")
                        continue
                    if self.top_k > 1:
                        live = {x["class"] for p in r.json()["predictions"] for x in p["top"] if x["probability"] > 0}
                        self.answers.append((sent, live))
                except Exception as e:  # noqa: BLE001 - counted, reported
                    self.errors.append(repr(e))
                    continue
                self.lat_ms.append(1000 * (time.perf_counter() - t))

    def __enter__(self):
        self.t0 = time.perf_counter()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(120)
        self.seconds = time.perf_counter() - self.t0

    def wait(self) -> None:
        for t in self.threads:
            t.join()

    def report(self) -> dict:
        n = len(self.lat_ms)
        return {"requests": n, "errors": len(self.errors), "first_errors": self.errors[:3], "seconds": self.seconds,
                "requests_per_s": n / self.seconds if self.seconds else None,
                "predictions_per_s": n * self.batch / self.seconds if self.seconds else None,
                "latency": summary(self.lat_ms)}


def forget_all_but_one(url: str, classes: list[str], tag: str, pause_s: float) -> tuple[list[float], list[dict]]:
    import httpx

    client_ms, server = [], []
    with httpx.Client(base_url=url, timeout=120) as c:
        for k, cls in enumerate(classes[:-1]):
            time.sleep(pause_s)  # let the load settle between forgets
            t = time.perf_counter()
            r = c.post("/forget", json={"classes": [cls], "reason": "benchmark", "request_id": f"{tag}-{k}"},
                       headers={"Authorization": f"Bearer {ADMIN}"})
            client_ms.append(1000 * (time.perf_counter() - t))
            if r.status_code != 200:
                raise RuntimeError(f"forget failed: {r.status_code} {r.text}")
            server.append(r.json()["timings_ms"])
    return client_ms, server


def cli_forget(run: Path, cls: str, request_id: str) -> None:
    """``promptforget forget`` in its own process, as an operator would run it next to the server."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1] / "src"),
                                                                    os.environ.get("PYTHONPATH")])))
    r = subprocess.run([sys.executable, "-m", "promptforget.cli", "forget", str(run), "--classes", cls, "--reason",
                        "benchmark", "--request-id", request_id], capture_output=True, text=True, env=env, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"CLI forget failed: {r.stderr.strip()}")


def cross_process(run: Path, classes: list[str], args, tag: str, writer: str = "cli", **settings) -> dict:
    """Forgets by another writer while the server serves; count answers sent after an acknowledgement that
    still give the forgotten class a probability above 0. ``writer``: "cli" (``promptforget forget`` in its
    own process; its ack comes after the process exits) or "library" (``store.durable.forget`` called here,
    beside the server: the ack is immediate, as for a second server on the same run)."""
    from promptforget.store.durable import forget as durable_forget

    acks: list[tuple[str, float]] = []
    with server(run, **settings) as (url, _):
        with Load(url, args.threads, args.batch, 10**9, time.monotonic() + 300, top_k=len(classes)) as load:
            time.sleep(0.5)
            for k, cls in enumerate(classes[:-1]):
                if writer == "cli":
                    cli_forget(run, cls, f"{tag}-{k}")
                else:
                    durable_forget(run, [cls], reason="benchmark", request_id=f"{tag}-{k}", source="python")
                acks.append((cls, time.monotonic()))
                time.sleep(1.5)  # longer than the old watcher's 1 s period
            load.stop.set()
    # The CLI process also needs time to exit after its commit; answers sent after the commit was on disk
    # show the window a watcher leaves even when the ack comes late.
    from datetime import datetime

    from promptforget.store.ledger import Ledger, committed

    wall_minus_mono = time.time() - time.monotonic()
    commits = {e["classes"][0]: datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp() - wall_minus_mono
               for e in committed(Ledger(run).read())}

    def late_answers(since: dict) -> list[float]:
        return [sent - t for cls, t in since.items() for sent, live in load.answers if sent > t and cls in live]

    after_ack = late_answers(dict(acks))
    after_commit = late_answers(commits)
    return {"forgets": len(acks), "answers": len(load.answers), "stale_after_ack": len(after_ack),
            "stale_window_s": max(after_ack, default=0.0), "stale_after_commit": len(after_commit),
            "stale_after_commit_window_s": max(after_commit, default=0.0),
            "ack_after_commit_s": [round(t - commits[c], 3) for c, t in acks], "errors": len(load.errors)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", help="a PFM run directory (copied, never modified)")
    src.add_argument("--make-run", choices=["tiny", "minilm"], help="build an untrained run with this backbone")
    ap.add_argument("--rounds", type=int, default=3, help="fresh server + copy per round (default 3)")
    ap.add_argument("--threads", type=int, default=4, help="concurrent prediction clients (default 4)")
    ap.add_argument("--batch", type=int, default=1, help="texts per /predict request (default 1)")
    ap.add_argument("--max-requests", type=int, default=2000, help="cap on /predict requests per phase (default 2000)")
    ap.add_argument("--phase-seconds", type=float, default=15.0, help="cap on one prediction phase (default 15)")
    ap.add_argument("--max-seconds", type=float, default=600.0, help="stop starting new rounds after this (default 600)")
    ap.add_argument("--torch-threads", type=int, default=None)
    ap.add_argument("--no-cross-process", action="store_true", help="skip the CLI-forget and per-request-check phases")
    ap.add_argument("--out", default=str(RESULTS_DIR / "service_load.json"))
    args = ap.parse_args(argv)

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="pf-service-load-"))
    try:
        src_run = Path(args.run_dir) if args.run_dir else make_run(args.make_run, tmp / "src-run")
        classes = json.loads((src_run / "pfm_config.json").read_text())["config"]
        backbone, max_length, classes = classes["backbone"], classes["max_length"], classes["class_names"]
        pred_idle, pred_during = [], []
        idle_client, idle_server, load_client, load_server = [], [], [], []
        check_on, check_off, xproc_now, xproc_before, check_us = [], [], [], [], []
        lib_now, lib_before = [], []
        rounds = 0
        for r in range(args.rounds):
            if time.monotonic() - t_start > args.max_seconds:
                break
            # (a) predictions only, then (b) forgets with no load -- one server
            run = fresh_copy(src_run, tmp, 2 * r)
            with server(run) as (url, _):
                with Load(url, args.threads, args.batch, 20, time.monotonic() + 30) as warm:  # warm-up
                    warm.wait()
                with Load(url, args.threads, args.batch, args.max_requests, time.monotonic() + args.phase_seconds) as load:
                    load.wait()
                pred_idle.append(load.report())
                c, s = forget_all_but_one(url, classes, f"idle{r}", pause_s=0.2)
                idle_client += c
                idle_server += s
            # (c) forgets while the prediction load runs -- a fresh server on a fresh copy
            run = fresh_copy(src_run, tmp, 2 * r + 1)
            with server(run) as (url, _):
                with Load(url, args.threads, args.batch, args.max_requests, time.monotonic() + args.phase_seconds) as load:
                    time.sleep(0.5)
                    c, s = forget_all_but_one(url, classes, f"load{r}", pause_s=0.3)
                    load.stop.set()
                pred_during.append(load.report())
                load_client += c
                load_server += s
            if not args.no_cross_process:
                # (d) the per-request artefact check: same server, on and off, alternating order
                run = fresh_copy(src_run, tmp, 100 + r)
                with server(run) as (url, host):
                    with Load(url, args.threads, args.batch, 20, time.monotonic() + 30) as warm:
                        warm.wait()
                    for on in ((True, False) if r % 2 == 0 else (False, True)):
                        host.settings.sync_every_request = on
                        with Load(url, args.threads, args.batch, args.max_requests,
                                  time.monotonic() + args.phase_seconds) as load:
                            load.wait()
                        (check_on if on else check_off).append(load.report() | {"latency_ms": load.lat_ms})
                t = time.perf_counter()
                for _ in range(20_000):
                    host.sync_if_changed()  # the check alone, nothing changed: one stat
                check_us.append(1e6 * (time.perf_counter() - t) / 20_000)
                # (e) forgets by the CLI (another process) while the server serves: now and before
                xproc_now.append(cross_process(fresh_copy(src_run, tmp, 200 + r), classes, args, f"xnow{r}"))
                xproc_before.append(cross_process(fresh_copy(src_run, tmp, 300 + r), classes, args, f"xold{r}",
                                                  sync_every_request=False, poll_interval_s=1.0))
                lib_now.append(cross_process(fresh_copy(src_run, tmp, 400 + r), classes, args, f"lnow{r}", "library"))
                lib_before.append(cross_process(fresh_copy(src_run, tmp, 500 + r), classes, args, f"lold{r}", "library",
                                                sync_every_request=False, poll_interval_s=1.0))
                print(f"[service_load] round {r + 1}: stale answers after a CLI forget's ack: "
                      f"{xproc_now[-1]['stale_after_ack']} now, {xproc_before[-1]['stale_after_ack']} before", file=sys.stderr)
            rounds += 1
            print(f"[service_load] round {r + 1}: {pred_idle[-1]['predictions_per_s']:.1f} pred/s idle, "
                  f"{pred_during[-1]['predictions_per_s']:.1f} pred/s while forgetting; forget p50 so far "
                  f"{pct(idle_client, 50):.1f} ms idle / {pct(load_client, 50):.1f} ms under load", file=sys.stderr)

        def agg(reports):
            n = sum(x["requests"] for x in reports)
            secs = sum(x["seconds"] for x in reports)
            return {"requests": n, "errors": sum(x["errors"] for x in reports), "seconds": secs,
                    "predictions_per_s": n * args.batch / secs if secs else None, "per_round": reports}

        def check_cost(on, off):
            if not on:
                return None
            lat_on = [x for rep in on for x in rep["latency_ms"]]
            lat_off = [x for rep in off for x in rep["latency_ms"]]
            return {"p50_ms_check_on": pct(lat_on, 50), "p50_ms_check_off": pct(lat_off, 50),
                    "p99_ms_check_on": pct(lat_on, 99), "p99_ms_check_off": pct(lat_off, 99),
                    "p50_cost_pct": 100 * (pct(lat_on, 50) / pct(lat_off, 50) - 1),
                    "check_alone_us": statistics.median(check_us),
                    "requests": {"on": len(lat_on), "off": len(lat_off)},
                    "errors": sum(x["errors"] for x in on + off)}

        def xproc(reports):
            if not reports:
                return None
            return {"stale_after_ack": sum(x["stale_after_ack"] for x in reports),
                    "stale_window_s": max(x["stale_window_s"] for x in reports),
                    "stale_after_commit": sum(x["stale_after_commit"] for x in reports),
                    "stale_after_commit_window_s": max(x["stale_after_commit_window_s"] for x in reports),
                    "answers": sum(x["answers"] for x in reports), "forgets": sum(x["forgets"] for x in reports),
                    "errors": sum(x["errors"] for x in reports), "per_round": reports}

        def server_side(ts):
            keys = sorted({k for t in ts for k in t})
            return {k: summary([t[k] for t in ts if k in t]) for k in keys}

        result = {
            "benchmark": "service_load",
            "run": {"source": args.run_dir or f"untrained, built with --make-run {args.make_run}", "backbone": backbone,
                    "classes": len(classes), "max_length": max_length},
            "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
            "rounds": rounds,
            "machine": machine(),
            "predictions_without_forgets": agg(pred_idle),
            "predictions_while_forgetting": agg(pred_during),
            "forget_latency_no_load": {"client": summary(idle_client), "server_timings": server_side(idle_server)},
            "forget_latency_under_load": {"client": summary(load_client), "server_timings": server_side(load_server)},
            "per_request_check_cost": check_cost(check_on, check_off),
            "cross_process": {"cli, now (per-request check)": xproc(xproc_now),
                              "cli, before (1 s watcher, no per-request check)": xproc(xproc_before),
                              "library writer, now (per-request check)": xproc(lib_now),
                              "library writer, before (1 s watcher, no per-request check)": xproc(lib_before)},
            "load": os.getloadavg(),
            "note": "client = HTTP round trip of POST /forget (durable: pending fsync, artefact write+fsync+rename+dir "
                    "fsync, swap + grace period, commit fsync). 'swap' includes waiting for in-flight predictions.",
            "seconds": time.monotonic() - t_start,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("run", "rounds", "forget_latency_no_load", "forget_latency_under_load",
                                             "per_request_check_cost", "load")}
                     | {"stale_after_ack": {k: v and v["stale_after_ack"] for k, v in result["cross_process"].items()}}
                     | {"predictions_per_s": {"without_forgets": result["predictions_without_forgets"]["predictions_per_s"],
                                              "while_forgetting": result["predictions_while_forgetting"]["predictions_per_s"]}},
                     indent=2))
    print(f"[service_load] JSON -> {out}", file=sys.stderr)
    return 0 if not (result["predictions_without_forgets"]["errors"] or result["predictions_while_forgetting"]["errors"]) else 1


if __name__ == "__main__":
    sys.exit(main())
