"""Shared helpers for the benchmark scripts: timing, a synthetic backbone, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path

import torch

RESULTS_DIR = Path(os.environ.get("PROMPTFORGET_BENCH_DIR", "runs/bench"))


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def timeit(fn, repeats: int = 5, warmup: int = 1) -> dict:
    """Median and spread of wall-clock seconds per call (after warm-up)."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "repeats": repeats}


def vit_dir(tmp: Path, image_size=32, patch=8, hidden=192, layers=6, heads=3) -> str:
    """A random-weight ViT of a given shape (speed does not depend on the weights)."""
    from transformers import ViTConfig, ViTModel

    d = tmp / f"vit-{image_size}-{patch}-{hidden}-{layers}"
    if not (d / "config.json").exists():
        torch.manual_seed(0)
        ViTModel(ViTConfig(image_size=image_size, patch_size=patch, hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=heads, intermediate_size=4 * hidden)).save_pretrained(d)
    return str(d)


def write_result(name: str, result: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2))
    return path


class PeakRSS:
    """Samples this process's resident set size in a thread; ``peak_mb`` over the ``with`` block."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.start = self._rss()
        self.peak = self.start
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())

    def as_dict(self) -> dict:
        return {"rss_start_mb": round(self.start / 2**20, 1), "rss_peak_mb": round(self.peak / 2**20, 1),
                "rss_increase_mb": round((self.peak - self.start) / 2**20, 1)}
