"""The shared unlearning loop on a toy linear model: the step it takes, its history, lr and callback,
and data parallelism (two in-process ranks, one of them with empty shards) against one process."""

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
import torch

from promptforget.unlearn.loop import cosine_schedule, cycle_batches, iterate_batches, train_loop
from promptforget.unlearn.parallel import local_rows, make_accelerator


def rows(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return [{"x": x[i], "y": x[i].sum() + 1.0} for i in range(n)]


def collate(items):
    return {"x": torch.stack([r["x"] for r in items]), "y": torch.stack([r["y"] for r in items])}


class ToyObjective:
    """Squared error on the forget rows plus a weighted penalty on the retain rows' outputs."""

    def __init__(self, weight, anchor_weight=0.5):
        self.weight = weight
        self.weights = {"fit": 1.0, "anchor": anchor_weight}
        self.calls = 0

    def predict(self, batch):
        return batch["x"] @ self.weight

    def loss_terms(self, forget, retain, counts):
        self.calls += 1
        terms = {}
        if forget is not None:
            terms["fit"] = ((self.predict(forget) - forget["y"]) ** 2).sum() / counts["forget_rows"]
        if retain is not None:
            terms["anchor"] = (self.predict(retain) ** 2).sum() / counts["retain_rows"]
        return terms


def single_process():
    return SimpleNamespace(num_processes=1, process_index=0, device=torch.device("cpu"), is_local_main_process=True)


def run(acc, forget, retain, epochs=2, batch_size=4, callback=None, anchor_weight=0.5, warmup_ratio=0.25):
    weight = torch.zeros(3, requires_grad=True)
    objective = ToyObjective(weight, anchor_weight)
    history = train_loop(objective, [weight], forget, retain, collate, batch_size=batch_size, epochs=epochs, lr=0.1,
                         weight_decay=0.01, warmup_ratio=warmup_ratio, seed=7, accelerator=acc, callback=callback)
    return weight.detach(), history, objective


def test_one_step_is_adamw_on_the_weighted_terms():
    forget, retain = rows(4, 0), rows(3, 1)
    weight, history, _ = run(single_process(), forget, retain, epochs=1, batch_size=4, warmup_ratio=0.0)
    # The same step by hand: one global batch of each set, loss = fit + 0.5 * anchor.
    expected = torch.zeros(3, requires_grad=True)
    fb, rb = collate(forget), collate(retain)
    fit = ((fb["x"] @ expected - fb["y"]) ** 2).mean()
    anchor = ((rb["x"] @ expected) ** 2).mean()
    opt = torch.optim.AdamW([expected], lr=0.1, weight_decay=0.01)
    (fit + 0.5 * anchor).backward()
    opt.step()
    torch.testing.assert_close(weight, expected.detach())
    assert history[0]["fit"] == pytest.approx(fit.item()) and history[0]["anchor"] == pytest.approx(anchor.item())
    assert history[0]["loss"] == pytest.approx(fit.item() + 0.5 * anchor.item())


def test_history_lr_and_callback():
    forget, retain = rows(10, 0), rows(3, 1)
    seen = []
    _, history, _ = run(make_accelerator(), forget, retain, epochs=3, batch_size=4,
                        callback=lambda step, info: seen.append((step, info)))
    assert len(history) == 3 * 3  # 3 epochs x ceil(10 / 4) batches
    assert [list(h) for h in history] == [["step", "epoch", "loss", "fit", "anchor", "lr"]] * 9
    assert [h["step"] for h in history] == list(range(9))
    assert [h["epoch"] for h in history] == [0] * 3 + [1] * 3 + [2] * 3
    assert seen == [(h["step"], h) for h in history]
    # lr after each step follows the schedule: warm-up over round(0.25 * 9) = 2 steps, then cosine to 0.
    lrs = [h["lr"] for h in history]
    assert lrs[0] == pytest.approx(0.1 * 2 / 3) and lrs[1] == pytest.approx(0.1)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12) and all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    assert history[-1]["fit"] < history[0]["fit"]


def test_zero_weight_term_is_logged_but_does_not_train():
    forget, retain = rows(6, 0), rows(4, 1)
    w_anchor0, hist, _ = run(single_process(), forget, retain, anchor_weight=0.0)
    w_no_retain, hist_no_retain, _ = run(single_process(), forget, [], anchor_weight=0.0)
    torch.testing.assert_close(w_anchor0, w_no_retain)
    assert all(h["anchor"] > 0 for h in hist[1:]) and all(h["anchor"] == 0.0 for h in hist_no_retain)


def test_term_without_weight_is_an_error():
    class Bad(ToyObjective):
        def loss_terms(self, forget, retain, counts):
            return {"typo": super().loss_terms(forget, retain, counts)["fit"]}

    weight = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="typo"):
        train_loop(Bad(weight), [weight], rows(2, 0), [], collate, batch_size=2, epochs=1, lr=0.1, weight_decay=0.0,
                   warmup_ratio=0.0, seed=0, accelerator=single_process())


class ThreadRank:
    """One rank of an in-process group: ``reduce`` sums a tensor over the ranks (threads) in rank order."""

    def __init__(self, group, index):
        self.group, self.process_index = group, index
        self.num_processes = group["n"]
        self.device = torch.device("cpu")
        self.is_local_main_process = index == 0
        self.reductions = 0

    def reduce(self, tensor, reduction):
        assert reduction == "sum"
        self.reductions += 1
        slots, barrier = self.group["slots"], self.group["barrier"]
        slots[self.process_index] = tensor.clone()
        barrier.wait()
        total = sum(slots[1:], slots[0].clone())
        barrier.wait()  # every rank has read the slots before they are reused
        return total


def test_two_ranks_with_empty_shards_match_one_process():
    # 5 forget rows in batches of 4: the last batch has 1 row, so rank 0 holds no forget rows there;
    # 1 retain row: rank 0 never holds a retain row.
    forget, retain = rows(5, 0), rows(1, 1)
    weight1, history1, _ = run(single_process(), forget, retain, epochs=3)
    group = {"n": 2, "slots": [None, None], "barrier": threading.Barrier(2, timeout=60)}
    ranks = [ThreadRank(group, i) for i in range(2)]
    with ThreadPoolExecutor(2) as pool:
        results = [f.result() for f in [pool.submit(run, r, forget, retain, 3) for r in ranks]]
    (w0, h0, obj0), (w1, h1, obj1) = results
    # Rank 0 skipped its loss on the empty 1-row batch (once per epoch) but joined every all-reduce.
    assert obj0.calls == 3 * 2 - 3 and obj1.calls == 3 * 2
    assert ranks[0].reductions == ranks[1].reductions == 2 * len(history1)  # gradients + logged terms
    torch.testing.assert_close(w0, weight1)
    torch.testing.assert_close(w1, weight1)
    for a, b, c in zip(history1, h0, h1):
        assert a.keys() == b.keys() == c.keys() and b == c
        for k in ("loss", "fit", "anchor", "lr"):
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7)


def test_local_rows_split_contiguously():
    batch = {"x": torch.arange(5), "index": torch.arange(5)}
    acc = lambda i: SimpleNamespace(process_index=i, num_processes=2, device=torch.device("cpu"))  # noqa: E731
    assert local_rows(batch, acc(0))["x"].tolist() == [0, 1] and local_rows(batch, acc(1))["x"].tolist() == [2, 3, 4]
    assert local_rows({"x": torch.arange(1)}, acc(0)) is None and local_rows(None, acc(0)) is None


def test_batches_are_seeded_and_cycle_reshuffles():
    data = list(range(10))
    col = lambda items: {"v": torch.tensor(items)}  # noqa: E731
    a = [b["v"].tolist() for b in iterate_batches(data, 4, col, shuffle=True, seed=3)]
    assert a == [b["v"].tolist() for b in iterate_batches(data, 4, col, shuffle=True, seed=3)]
    assert sorted(sum(a, [])) == data and [len(x) for x in a] == [4, 4, 2]
    plain = next(iterate_batches(data, 4, col, shuffle=False, seed=0))
    assert plain["v"].tolist() == plain["index"].tolist() == [0, 1, 2, 3]
    stream = cycle_batches(data, 5, col, seed=3)
    passes = [[next(stream)["v"].tolist() for _ in range(2)] for _ in range(2)]
    assert all(sorted(sum(p, [])) == data for p in passes) and passes[0] != passes[1]


def test_cosine_schedule_warms_up_then_decays_to_zero():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = cosine_schedule(opt, total_steps=10, warmup_ratio=0.2)
    factors = []
    for _ in range(10):
        factors.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert factors[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert factors[3] == pytest.approx(0.5 * (1 + math.cos(math.pi / 8)))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("total, ratio", [(10, 0.0), (10, 0.2), (9, 0.25), (1, 0.0), (37, 0.1), (5, 0.5)])
def test_cosine_schedule_has_the_figures_of_the_hand_written_one(total, ratio):
    """transformers' schedule, one step ahead, gives what the former hand-written LambdaLR gave, step by step."""
    warmup = int(round(ratio * total))

    def former(step):
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
    sched = cosine_schedule(opt, total_steps=total, warmup_ratio=ratio)
    got = []
    for _ in range(total + 1):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert got == pytest.approx([2.0 * former(s) for s in range(total + 1)], abs=1e-12)

