"""The model a service process serves, kept in step with the run directory.

Forgetting under load (RCU): a prediction takes one reference to the prompt bank and never takes the
forget lock. A forget (``store.durable.forget``, the same path as the CLI) replaces the artefact, then
swaps the in-memory bank by assignment under a short swap lock, then waits for predictions that started
before the swap to finish (a grace period, at most one forward pass), then commits the ledger and
answers. So predictions never wait on a forget, and once a forget has answered no prediction can come
from the deleted prompt.

Forgets made by another process (the CLI, another server on the same run): before each prediction the
host compares a ``stat`` of the artefact (inode, mtime, size) with the one it last loaded; the forget's
atomic rename happens before that forget is acknowledged, so a prediction that starts after the
acknowledgement sees the new file and drops the prompts first (a header read, then the same swap). A
polling watcher keeps ``/classes`` fresh between requests.

The ledger is verified at start, on every forget, and on ``/health`` whenever the ledger or the artefact
changed on disk (a ``stat``); while it does not verify -- or does not match its anchor -- the host is not
ready (``ledger_problem``): forgets are refused, predictions go on. The ledger rules what is served: a class
that the ledger or its anchor says is forgotten is never answered, whatever the artefact holds (its prompt
is left out at load, ``model_in_sync`` is 0 and ``/health`` says why). The served weights are a copy in
memory: overwriting or truncating ``model.safetensors`` in place cannot reach them.

Exact forgets (``exact=True``, :mod:`promptforget.pfm.exact`): the instant forget answers as above; a
background thread then retrains without the forgotten classes' data -- every open request in one retrain
-- and, once the new artefact is in place, swaps the retrained model in by assignment (the same RCU: a
prediction keeps the model it started with). Open requests left by a crash are retrained at start.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from promptforget.service.settings import ServiceSettings
from promptforget.store import durable, layout
from promptforget.store.anchor import claimed_forgotten
from promptforget.store.artefact import Safetensors
from promptforget.store.layout import WEIGHTS_NAME
from promptforget.store.ledger import Ledger, LedgerError, load_key, open_exact_requests, request_state, verify

log = logging.getLogger("promptforget.service")


class Readers:
    """Counts predictions per generation; ``synchronize`` waits until every reader that may hold the
    bank from before the last swap has finished (readers never block on it)."""

    def __init__(self):
        self._cv = threading.Condition()
        self._gen = 0
        self._count: collections.Counter[int] = collections.Counter()

    @contextmanager
    def read(self):
        with self._cv:
            g = self._gen
            self._count[g] += 1
        try:
            yield g
        finally:
            with self._cv:
                self._count[g] -= 1
                if not self._count[g]:
                    del self._count[g]
                    self._cv.notify_all()

    def synchronize(self, timeout: float) -> bool:
        with self._cv:
            self._gen += 1
            new = self._gen
            return self._cv.wait_for(lambda: all(g >= new for g in self._count), timeout)


# ---------------------------------------------------------------------- the model host
class ModelHost:
    def __init__(self, run_dir: str | os.PathLike, settings: ServiceSettings, model=None):
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.key = load_key(settings.ledger_key_file)
        self.ledger_problem: str | None = None
        try:
            self.recovery = durable.recover(self.run_dir, self.key)  # a crashed forget is resolved before serving
        except LedgerError as e:
            self.recovery, self.ledger_problem = None, str(e)
        if self.recovery and (self.recovery["resolved"] or self.recovery["torn_tail_bytes"] or self.recovery["stale_temps"]):
            log.warning("recovered run %s: %s", self.run_dir, self.recovery)
        from promptforget.families import family_of

        self.family = family_of(self.run_dir)
        if model is None:
            model = self.family.load(self.run_dir, ledger_key=self.key)
        self.model = model.eval()
        self.masked_by_ledger = self._mask_forgotten_by_ledger()
        self.modality = model.encoder.modality
        self.readers = Readers()
        self._swap_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._tok_lock = threading.Lock()  # HF fast tokenizers are not safe to call from several threads
        self.in_sync = not self.masked_by_ledger
        self.started = time.time()
        self._stat = None
        self._verified_stat = None
        self._stop = threading.Event()
        self.sync_if_changed()
        if self.ledger_problem is None:
            self.check_ledger()
        self._exact_wake = threading.Event()
        self._exact_guard = threading.Lock()
        self._exact_thread: threading.Thread | None = None
        self.exact_problem: str | None = None  # why the last exact retrain failed (it is retried on the next one)
        if self.ready and open_exact_requests(Ledger(self.run_dir).read()):
            self.start_exact()  # requests left open by a crash mid-retrain
        self._watcher = None
        if settings.poll_interval_s > 0:
            self._watcher = threading.Thread(target=self._watch, name="promptforget-artefact-watch", daemon=True)
            self._watcher.start()

    def close(self) -> None:
        self._stop.set()

    # ---------------------------------------------------------------- the ledger
    @property
    def ready(self) -> bool:
        return self.ledger_problem is None

    def _mask_forgotten_by_ledger(self) -> list[str]:
        """Drop from memory every prompt the ledger or its anchor says is forgotten (the artefact may hold it)."""
        stale = [c for c in claimed_forgotten(self.run_dir, self.key) if c in self.model.active_classes]
        if stale:
            if len(stale) == len(self.model.active_classes):
                raise ValueError(f"{self.run_dir}: the ledger says every class the artefact holds is forgotten ({stale})")
            self.model.forget(stale)
            log.error("the artefact holds prompts the ledger says are forgotten (%s); they are not served", stale)
        return sorted(set(stale) | set(getattr(self.model, "masked_by_ledger", ())))

    def _files_stat(self):
        out = []
        for name in (layout.LEDGER_NAME, WEIGHTS_NAME):
            try:
                s = os.lstat(self.run_dir / name)
                out.append((s.st_ino, s.st_mtime_ns, s.st_ctime_ns, s.st_size, s.st_mode))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    def check_ledger_if_changed(self) -> None:
        """A full check when the ledger or the artefact changed on disk since the last one (a ``stat``)."""
        if not self.ready or self._files_stat() != self._verified_stat:
            self.check_ledger()

    def check_ledger(self) -> dict:
        """Full verification (chain, signatures, artefact, anchor); sets or clears ``ledger_problem``."""
        self._verified_stat = self._files_stat()  # before reading: a later change is seen by the next call
        report = verify(self.run_dir, self.key)
        self.ledger_problem = None if report["ok"] else report["problems"][0]
        if self.ledger_problem:
            log.error("the deletion ledger does not verify; forgets are refused: %s", self.ledger_problem)
        return report

    # ---------------------------------------------------------------- predictions
    def predict(self, raw, top_k: int = 1) -> dict:
        import torch

        try:
            if self.modality == "text":
                with self._tok_lock:
                    inputs = self.model.preprocess(raw)
            else:
                inputs = self.model.preprocess(raw)
        except (TypeError, UnicodeError) as e:  # what tokenizers raise on text they cannot take
            raise ValueError(f"{type(e).__name__}: {e}") from None
        if self.settings.sync_every_request:
            self.sync_if_changed()
        with self.readers.read() as gen, torch.inference_mode():
            logits = self.model(inputs, mask_forgotten=self.settings.mask_forgotten)
        probs = torch.softmax(logits.float(), dim=-1)
        k = min(top_k, probs.shape[1])
        p, idx = probs.topk(k, dim=-1)
        names = self.model.class_names
        preds = []
        for row_p, row_i in zip(p.tolist(), idx.tolist()):
            top = [{"class": names[i], "probability": q} for i, q in zip(row_i, row_p)]
            preds.append({"label": top[0]["class"], "probability": top[0]["probability"], "top": top})
        return {"predictions": preds, "generation": gen}

    # ---------------------------------------------------------------- forgetting
    def swap(self, active: list[str]) -> None:
        """Serve the new artefact (PFM: drop the prompts it no longer holds; analytic: its re-solved head),
        then wait out older readers."""
        with self._swap_lock:
            changed = self.model.apply_forget(self.run_dir, active)  # by assignment (RCU)
            extra = [c for c in active if c not in self.model.active_classes]
            self.in_sync = not extra
            if extra:
                log.error("artefact holds prompts this process has forgotten (%s): it was replaced outside "
                          "the ledger; keeping them forgotten in memory", extra)
        if changed and not self.readers.synchronize(self.settings.grace_timeout_s):
            log.warning("grace period: predictions started before the swap still running after %.0fs",
                        self.settings.grace_timeout_s)

    def forget(self, classes: list[str], reason: str, request_id: str, exact: bool = False,
               examples: list[str] = ()) -> durable.ForgetResult:
        exact = exact and not self.family.exact_forget  # an exact family's every forget is exact already
        if exact:
            from promptforget.pfm.exact import exact_training_data

            exact_training_data(self.run_dir, self.settings.data_root)  # no or changed data: refused, nothing written
        try:
            r = durable.forget(self.run_dir, classes, reason=reason, request_id=request_id, source="service",
                               on_artefact=self.swap, key=self.key, exact=exact, examples=examples,
                               rewrite=self.family.rewrite(self.run_dir, self.key))
        except LedgerError as e:
            self.ledger_problem = str(e)
            raise
        self.ledger_problem = None  # the forget verified the whole ledger first
        self._stat = self._weights_stat()
        log.info("forget %s examples=%d request_id=%s replayed=%s seq=%d total=%.1fms exact=%s", r.classes,
                 len(r.examples), r.request_id, r.replayed, r.ledger_seq, r.timings_ms.get("total", 0.0),
                 r.exact_requested or r.exact_at_commit,
                 extra={"request_id": r.request_id, "classes": r.classes, "replayed": r.replayed,
                        "ledger_seq": r.ledger_seq, "latency_ms": r.timings_ms.get("total", 0.0),
                        "exact": r.exact_requested})
        if r.exact_requested:
            self.start_exact()
        return r

    def update_model_card(self) -> None:
        """Rewrite the run's model card (README.md) after a forget. Under the run lock: a forget's
        recovery deletes temp files, and its verification counts them as leftovers. Never raises."""
        try:
            with durable.run_lock(self.run_dir, timeout=self.settings.grace_timeout_s):
                self.family.write_card(self.run_dir)
        except Exception:  # noqa: BLE001 - the forget is committed; a stale card must not hide that
            log.exception("could not update the model card of %s after a forget", self.run_dir)

    def request_state(self, request_id: str) -> dict | None:
        """A forget request's state (instant | retraining | exact) from the ledger; None if never committed."""
        state = request_state(Ledger(self.run_dir).read(), request_id)
        if state is not None and state["state"] == "retraining" and self.exact_problem:
            state["exact_problem"] = self.exact_problem
        return state

    # ---------------------------------------------------------------- exact forgets (background retrain)
    def start_exact(self) -> None:
        """Make sure a retrain runs for every open exact request (one thread; requests that arrive while it
        trains are covered by its next round)."""
        with self._exact_guard:
            self._exact_wake.set()
            if self._exact_thread is None:
                self._exact_thread = threading.Thread(target=self._exact_worker, name="promptforget-exact", daemon=True)
                self._exact_thread.start()

    def wait_exact(self, timeout: float) -> bool:
        """Wait until no retrain is running (tests, shutdown). True when idle."""
        t = self._exact_thread
        if t is not None:
            t.join(timeout)
        return self._exact_thread is None

    @property
    def exact_running(self) -> bool:
        """An exact retrain runs in the background now (the console shows it)."""
        return self._exact_thread is not None

    def _exact_worker(self) -> None:
        from promptforget.pfm.exact import run_exact

        while True:
            self._exact_wake.clear()
            try:
                done = run_exact(self.run_dir, self.key, on_model=self.install_model, log=log.info,
                                 data_root=self.settings.data_root)
                self.exact_problem = None
                if done is not None:
                    self._stat = self._weights_stat()
                    self.update_model_card()
            except Exception as e:  # noqa: BLE001 - the request stays open; the next forget or start retries
                self.exact_problem = f"{type(e).__name__}: {e}"
                log.exception("exact retrain failed; the instant forget stands and the request stays open")
            with self._exact_guard:
                if not self._exact_wake.is_set() or self._stop.is_set():
                    self._exact_thread = None
                    return

    def install_model(self, model) -> None:
        """Serve ``model`` (the retrain, already on disk) from now on; wait out predictions on the old one."""
        model = model.to(next(self.model.parameters()).device).eval()
        with self._swap_lock:
            self.model = model
            self.in_sync = True
        if not self.readers.synchronize(self.settings.grace_timeout_s):
            log.warning("grace period: predictions started before the retrained model still running after %.0fs",
                        self.settings.grace_timeout_s)

    # ---------------------------------------------------------------- forgets made elsewhere (CLI)
    def _weights_stat(self):
        try:
            s = (self.run_dir / WEIGHTS_NAME).stat()
            return (s.st_ino, s.st_mtime_ns, s.st_size)
        except FileNotFoundError:
            return None

    def sync_if_changed(self) -> None:
        """If the artefact file changed since it was last loaded (a forget by any process), drop from
        memory the prompts it no longer holds. One ``stat`` when nothing changed."""
        if self._weights_stat() == self._stat:
            return
        with self._sync_lock:
            st = self._weights_stat()  # before reading: a later change is seen by the next call
            if st == self._stat or st is None:
                return
            try:
                names = Safetensors.read_names(self.run_dir / WEIGHTS_NAME)
            except (OSError, ValueError) as e:
                log.error("could not read the artefact's header (%s); keeping the prompts in memory as they are", e)
                self._stat = st  # one report per change; the next change is read again
                return
            self.swap(layout.active_classes(self.model.class_names, names))
            self._stat = st

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.poll_interval_s):
            try:
                self.sync_if_changed()
            except Exception:  # noqa: BLE001 - a watcher must not die; the next change retries
                log.exception("could not sync with the artefact")

    def classes(self) -> dict:
        self.sync_if_changed()
        m = self.model
        return {"classes": m.class_names, "active": m.active_classes, "forgotten": m.forgotten_classes,
                "mask_forgotten": self.settings.mask_forgotten}
