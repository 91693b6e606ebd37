"""Every config knob is a command-line flag, its default is the config's, and a value given on the
command line reaches the config object: a field added to a config needs no second edit."""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, fields

import pytest

from promptforget.audit.config import AuditConfig
from promptforget.baselines.config import BaselineConfig
from promptforget.cli import build_parser
from promptforget.pfm.config import PFMConfig
from promptforget.service.settings import ServiceSettings
from promptforget.spul.config import DataConfig, FinetuneConfig, SPULConfig
from promptforget.utils.config import config_from_args, flag_name

# config class, the command line that carries it (its required arguments included), fields left out, and
# the defaults a command deliberately overrides.
COMMANDS = [
    (PFMConfig, ["train", "--out", "RUN"], {"class_names"}, {"backbone": None}),
    (FinetuneConfig, ["spul", "finetune", "--out", "RUN"], set(), {}),
    (SPULConfig, ["spul", "unlearn", "--out", "RUN"], set(), {}),
    (DataConfig, ["spul", "unlearn", "--out", "RUN"], set(), {}),
    (DataConfig, ["spul", "evaluate", "--out", "RUN"], set(), {}),
    (DataConfig, ["baseline", "ga", "--out", "RUN"], set(), {}),
    (BaselineConfig, ["baseline", "ga", "--out", "RUN"], {"method"}, {}),
    (AuditConfig, ["audit", "RUN"], set(), {}),
    (ServiceSettings, ["serve", "RUN"], {"admin_token", "predict_token"}, {}),
]
IDS = [f"{cls.__name__}@{' '.join(w for w in argv if w not in ('--out', 'RUN'))}" for cls, argv, _, _ in COMMANDS]


def subparser(argv: list[str]):
    """The parser of the (sub-)command ``argv`` names."""
    parser = build_parser()
    for word in argv:
        sub = next((a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"), None)
        if sub is None or word not in sub.choices:
            break
        parser = sub.choices[word]
    return parser


def default_of(f):
    return f.default if f.default is not MISSING else f.default_factory()


@pytest.mark.parametrize("cls,argv,left_out,overrides", COMMANDS, ids=IDS)
def test_every_config_field_is_a_flag_with_the_config_default(cls, argv, left_out, overrides):
    actions = {a.dest: a for a in subparser(argv)._actions}
    for f in fields(cls):
        if f.name in left_out:
            continue
        assert f.name in actions, f"{cls.__name__}.{f.name} has no flag on `promptforget {' '.join(argv[:2])}`"
        action = actions[f.name]
        expected = overrides.get(f.name, default_of(f))
        assert action.default == expected, f"{f.name}: flag default {action.default!r} != config default {expected!r}"
        assert "(default: " in action.help, f"{f.name}: --help does not show the default"


def non_default(cls, f):
    """A valid value for ``f`` other than its default."""
    special = {"ulira_shadows": 8, "key_budgets": [30, 100], "test_size": 0.3, "retained_probes": ["none"], "ns": [2, 7],
               "data": "sst2", "method": "rl"}
    if f.name in special:
        return special[f.name]
    if f.metadata.get("choices"):
        return next(c for c in f.metadata["choices"] if c != default_of(f))
    hint = typing.get_type_hints(cls)[f.name]
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    tp = [a for a in typing.get_args(hint) if a is not type(None)][0] if optional else hint
    default = default_of(f)
    if tp is bool:
        return not default
    if typing.get_origin(tp) is list:
        return [2, 7] if typing.get_args(tp)[0] is int else ["alpha", "beta"]
    if tp is int:
        return 3 if default is None else default + 1
    if tp is float:
        return 0.5 if default is None else (default / 2 if default else 0.05)
    return "value"


def argv_for(f, value) -> list[str]:
    flag = flag_name(f)
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    if isinstance(value, list):
        return [flag, *map(str, value)] if "nargs" in f.metadata else [flag, ",".join(map(str, value))]
    return [flag, str(value)]


CASES = [(cls, argv, f) for cls, argv, left_out, _ in COMMANDS for f in fields(cls)
         if f.name not in left_out and f.name != "method"]


@pytest.mark.parametrize("cls,argv,f", CASES, ids=[f"{cls.__name__}.{f.name}@{argv[0]}" for cls, argv, f in CASES])
def test_a_value_on_the_command_line_reaches_the_config(cls, argv, f):
    value = non_default(cls, f)
    assert value != default_of(f)
    args = build_parser().parse_args(argv + argv_for(f, value))
    assert getattr(config_from_args(cls, args), f.name) == value


def test_list_flags_keep_their_syntax():
    parser = build_parser()
    args = parser.parse_args(["spul", "unlearn", "--out", "R", "--generic-labels", "neutral, unknown,other"])
    assert config_from_args(SPULConfig, args).generic_labels == ["neutral", "unknown", "other"]
    args = parser.parse_args(["audit", "R", "--ns", "1", "5", "--retained-probes", "--no-attacks"])
    cfg = config_from_args(AuditConfig, args)
    assert (cfg.ns, cfg.retained_probes, cfg.attacks, cfg.plots) == ([1, 5], [], False, True)
    assert config_from_args(AuditConfig, parser.parse_args(["audit", "R"])).retained_probes is None
    args = parser.parse_args(["serve", "R", "--no-mask-forgotten", "--poll-interval", "0"])
    settings = config_from_args(ServiceSettings, args, admin_token="x" * 16)
    assert (settings.mask_forgotten, settings.poll_interval_s) == (False, 0.0)


def test_a_list_default_is_not_shared_between_configs():
    a, b = SPULConfig(), SPULConfig()
    a.generic_labels.append("other")
    assert b.generic_labels == ["neutral", "unknown"]


def test_a_bad_value_is_a_one_line_error(capsys):
    from promptforget.cli import main

    assert main(["audit", "RUN", "--no-reference", "--ulira-shadows", "3"]) == 2
    assert "--ulira-shadows must be an even number" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown SPULConfig keys"):
        SPULConfig.from_dict({"colour": "red"})


def test_the_evaluate_help_names_the_evaluation_file():
    from promptforget.store.layout import EVAL_NAME

    output = next(a for a in subparser(["evaluate"])._actions if a.dest == "output")
    assert EVAL_NAME in output.help
