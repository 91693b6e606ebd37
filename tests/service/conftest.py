"""Fixtures for the service tests: a tiny text PFM run and a real uvicorn server on loopback."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import pytest
import torch

CLASSES = ["alpha", "beta", "gamma", "delta"]
ADMIN = "admin-token-0123456789abcdef"


def make_run(backbone: str, path, classes=CLASSES, bias=None):
    """Save a tiny PFM run. ``bias`` sets the head bias, so which class wins is known in advance."""
    from promptforget.pfm.config import PFMConfig
    from promptforget.pfm.model import PFMModel

    m = PFMModel(PFMConfig(backbone=backbone, class_names=list(classes), max_length=16))
    if bias is not None:
        with torch.no_grad():
            m.head.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    m.save_pretrained(path)
    return path


@pytest.fixture
def text_run(tiny_bert_dir, tmp_path):
    # alpha >> beta >> gamma >> delta: every input predicts the highest-bias class still present.
    return make_run(tiny_bert_dir, tmp_path / "run", bias=[30.0, 20.0, 10.0, 0.0])


@contextmanager
def live_server(run_dir, **settings):
    """The real app on a real uvicorn server, 127.0.0.1, a free port; stopped on exit."""
    import uvicorn

    from promptforget.service.app import create_app
    from promptforget.service.server import uvicorn_config
    from promptforget.service.settings import ServiceSettings

    settings.setdefault("admin_token", ADMIN)
    app = create_app(run_dir, ServiceSettings(**settings))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, app.state.host.settings, log_level="warning"))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not t.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        t.join(15)
        sock.close()


@pytest.fixture
def admin_token():
    return ADMIN


@pytest.fixture
def serve():
    """``with serve(run_dir, **settings) as (url, app):`` -- a live server for the test."""
    return live_server


@pytest.fixture
def new_run():
    """``new_run(backbone, path, classes, bias)`` -- save a tiny run."""
    return make_run


def write_tiny_audit(run_dir, forgotten=("alpha",)):
    """An audit report in RUN/audit/ made by the report engine (audit/report.py) from fixed figures, with
    one plot drawn from them: what the console and certificates read, without running the attacks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from promptforget.audit.report import Metric, table, write_files

    metrics = {"forgotten_acc": Metric("accuracy on the forgotten class", "lower = forgotten", "reference", 0.05, 1),
               "retained_acc": Metric("accuracy on the kept classes", "higher = kept", "reference", 0.05, 1,
                                      kind="utility")}
    fig = lambda v, lo, hi: {"value": v, "ci95": [lo, hi], "n": 200, "how": "bootstrap over examples"}  # noqa: E731
    flat = {"audited": {"forgotten_acc": fig(0.12, 0.08, 0.16), "retained_acc": fig(0.91, 0.88, 0.94)},
            "reference": {"forgotten_acc": fig(0.11, 0.09, 0.13), "retained_acc": fig(0.92, 0.90, 0.94)}}
    out = run_dir / "audit"
    out.mkdir(exist_ok=True)
    f, ax = plt.subplots(figsize=(5, 2.6))
    for i, (model, color) in enumerate((("audited", "tab:red"), ("reference", "tab:blue"))):
        vals = [flat[model][m]["value"] for m in metrics]
        ax.bar([j + 0.4 * i for j in range(len(vals))], vals, 0.4, label=model, color=color)
    ax.set_xticks([0.2, 1.2], list(metrics))
    ax.set_ylabel("accuracy")
    ax.legend()
    f.tight_layout()
    f.savefig(out / "accuracy.png", dpi=80)
    plt.close(f)
    rows = table(flat, metrics)
    write_files(out, {"forgotten_classes": list(forgotten), "models": flat}, rows, metrics, "# audit\n", "card\n",
                {"accuracy": str(out / "accuracy.png")})
    return rows


@pytest.fixture
def tiny_audit():
    """``tiny_audit(run_dir)`` -- write an audit report (two verdicts, one plot) into RUN/audit/."""
    return write_tiny_audit
