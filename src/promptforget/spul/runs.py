"""What a command that starts from a run directory reads from it.

``spul finetune`` records the base model, the data (source, hash of the examples, template, split, seeds)
and saves the template (``template.json``). ``spul unlearn RUN``, ``baseline NAME RUN`` and
``spul evaluate RUN`` take RUN = that stage-1 run, or a run made from it (then its forget split, and its
prompt or adapter, come along too); a data flag given beside RUN must agree with the record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from promptforget.spul.config import DataConfig
from promptforget.spul.templates import Template

STAGE1_COMMAND = "spul finetune"
# Per-command knobs: free to differ from the stage-1 record (the rest define the examples).
FREE_DATA_FIELDS = ("seed", "max_length", "eval_batch_size", "forget", "min_forget")


@dataclass
class RunInputs:
    """What a run starts from: the model to load, the data, and what the record adds."""

    model: str
    data: DataConfig
    template: Template | None = None  # the stage-1 run's; None: from data.template
    stage1_run: Path | None = None
    base_model: str | None = None  # the model stage 1 fine-tuned
    data_sha256: str | None = None  # the examples' hash the record expects
    forget_ids: dict | None = None  # the forget split of the run given (by example id)
    forget_info: dict | None = None
    prompt: Path | None = None  # the SPUL prompt of the run given
    adapter: Path | None = None  # the baseline adapter of the run given


def read_run_config(run_dir) -> dict:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a run directory (no config.json)")
    return json.loads(path.read_text(encoding="utf-8"))


def find_stage1(run_dir) -> tuple[Path, dict, dict | None]:
    """``(stage1_dir, stage1_config, run_config)``: RUN itself when it is a stage-1 run (run_config None),
    else the stage-1 run RUN was made from."""
    run_dir = Path(run_dir).resolve()
    cfg = read_run_config(run_dir)
    if cfg.get("command") == STAGE1_COMMAND:
        if "data" not in cfg:
            raise ValueError(f"{run_dir} is a stage-1 run from an older version (no data record); "
                             "pass --model RUN/model and the data flags instead of RUN")
        return run_dir, cfg, None
    if "stage1_run" not in cfg:
        raise ValueError(f"{run_dir} ({cfg.get('command', '?')}) was not made from a stage-1 run directory: "
                         "give a `spul finetune` run or a run made from one")
    stage1 = recorded_stage1(run_dir, cfg)
    s1 = read_run_config(stage1)
    if s1.get("command") != STAGE1_COMMAND:
        raise ValueError(f"{stage1} (the stage-1 run {run_dir} names) is not a `spul finetune` run")
    return stage1, s1, cfg


def recorded_stage1(run_dir, cfg: dict) -> Path:
    """The stage-1 run a run's config names: where it was, else at the same place relative to the run (both moved)."""
    stage1 = Path(cfg["stage1_run"])
    relative = cfg.get("stage1_run_relative")
    if not (stage1 / "config.json").is_file() and relative and (Path(run_dir) / relative / "config.json").is_file():
        return (Path(run_dir) / relative).resolve()
    return stage1


def _normalised(value):
    """A path that exists (alone or after ``name:``) made absolute, so FILE and /abs/FILE agree."""
    if isinstance(value, str) and value:
        if Path(value).exists():
            return str(Path(value).resolve())
        name, sep, location = value.partition(":")
        if sep and location and Path(location).exists():
            return f"{name}:{Path(location).resolve()}"
    return value


def resolve_inputs(run_dir, given: dict, model: str | None = None, data_root=None) -> RunInputs:
    """The inputs of a command given RUN: ``given`` holds only the data flags typed on the command line,
    ``model`` the --model typed (None if not); ``data_root``: where the data is if it moved apart from the run
    (else ``$PROMPTFORGET_DATA_ROOT``; data/sources.py)."""
    stage1, s1, run_cfg = find_stage1(run_dir)
    recorded = dict(s1["data"])
    if s1.get("data_source"):  # where the data is now: beside the moved run, or under $PROMPTFORGET_DATA_ROOT
        from promptforget.data.sources import resolve_dataset

        recorded["data"] = resolve_dataset({"dataset": recorded["data"], "source": s1["data_source"]}, stage1, data_root)
    given = dict(given)
    if given.get("data_file"):  # the old spelling names the same source as jsonl:FILE
        given["data"] = f"jsonl:{given.pop('data_file')}"
    for name, value in given.items():
        if name in FREE_DATA_FIELDS or name not in recorded:
            continue
        if _normalised(value) != _normalised(recorded[name]):
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} {value} contradicts the stage-1 run {stage1} (recorded: {recorded[name]}); "
                             f"leave {flag} out: it is read from the run")
    model_dir = stage1 / "model"
    if model is not None and _normalised(model) != str(model_dir.resolve()):
        raise ValueError(f"--model {model}: the stage-1 run {stage1} was fine-tuned from {s1['model']!r}; with RUN "
                         f"the model is {model_dir} (leave --model out)")
    inputs = RunInputs(model=str(model_dir), stage1_run=stage1, base_model=s1["model"],
                       data=DataConfig(**{**{f.name: recorded[f.name] for f in fields(DataConfig) if f.name in recorded},
                                          **given}),
                       template=Template.from_dict(s1["template"]), data_sha256=s1["data_sha256"])
    if run_cfg is not None:
        run_dir = Path(run_dir).resolve()
        split = json.loads((run_dir / "forget_split.json").read_text()) if (run_dir / "forget_split.json").is_file() else None
        if split is not None:
            spec = split["info"].get("spec")
            if given.get("forget") not in (None, spec):
                raise ValueError(f"--forget {given['forget']} contradicts the run {run_dir} (its forget set: {spec}); "
                                 "leave --forget out, or start from the stage-1 run")
            inputs.forget_ids, inputs.forget_info = split["ids"], split["info"]
            inputs.data.forget = spec
        if (run_dir / "prompt").is_dir():
            inputs.prompt = run_dir / "prompt"
        if (run_dir / "adapter").is_dir():
            inputs.adapter = run_dir / "adapter"
    return inputs


def check_made_from(adapter_or_prompt, inputs: RunInputs) -> None:
    """A prompt or adapter directory whose run records another stage-1 run cannot sit on this model."""
    run_dir = Path(adapter_or_prompt).resolve().parent
    if inputs.stage1_run is None or not (run_dir / "config.json").is_file():
        return
    cfg = read_run_config(run_dir)
    if cfg.get("stage1_run") and recorded_stage1(run_dir, cfg).resolve() != inputs.stage1_run.resolve():
        raise ValueError(f"{adapter_or_prompt} was trained on the stage-1 run {cfg['stage1_run']}, not {inputs.stage1_run}")
