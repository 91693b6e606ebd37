"""Dataclass configs that own their command-line flags.

A config field carries its help (and choices) in ``field(metadata=...)``, as in peft, and
:func:`add_config_args` turns every field into a flag: ``lora_r`` -> ``--lora-r`` with the field's type,
default (shown in --help) and choices; a bool -> ``--x/--no-x``; ``X | None`` -> type X, default None;
a ``list`` -> comma-separated (``--generic-labels neutral,unknown``) or, with ``metadata["nargs"]``,
space-separated. A knob added to a config is on the command line with no second edit.

Metadata keys: ``help``, ``choices``, ``flag`` (a flag name other than the field's), ``aliases`` (more flag
names, e.g. another command's word for the same thing), ``nargs``;
:func:`knob` writes such a field in one line.
"""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, asdict, field, fields
from typing import Any, Iterable, Mapping


class ConfigMixin:
    """``to_dict``/``from_dict`` for a dataclass config (``from_dict`` rejects unknown keys)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        return cls(**d)


def knob(default, help: str = "", **metadata):
    """A config field with its help and flag metadata; a list default is copied for every instance."""
    metadata = {"help": help, **metadata}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def check_positive(config, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise ValueError(f"{type(config).__name__}.{name} must be > 0, got {value!r}")


def flag_name(f) -> str:
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def _default(f):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise TypeError(f"config field {f.name!r} needs a default to become a flag")


def _without_none(tp):
    """``X`` for ``X | None`` / ``Optional[X]``, else ``tp``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _comma_list(item_type):
    def parse(text: str) -> list:
        return [item_type(w.strip()) for w in text.split(",") if w.strip()]

    parse.__name__ = f"comma-separated {item_type.__name__}"
    return parse


def _argument(f, tp, default, help_text: str) -> dict[str, Any]:
    """``add_argument`` keywords for a field of type ``tp``."""
    md, tp = f.metadata, _without_none(tp)
    kw: dict[str, Any] = {"default": default, "dest": f.name}
    shown = default
    if "choices" in md:
        kw["choices"] = md["choices"]
    if tp is bool:
        kw["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(tp) in (list, tuple):
        item = typing.get_args(tp)[0] if typing.get_args(tp) else str
        separator = " " if "nargs" in md else ","
        if default is not None:
            kw["default"] = list(default)  # each parse gets its own list
            shown = separator.join(map(str, default))
        if "nargs" in md:
            kw.update(nargs=md["nargs"], type=item)
        else:
            kw.update(type=_comma_list(item), metavar=f.name.upper().rstrip("S") + ",...")
    elif tp in (int, float, str):
        kw["type"] = tp
        if "choices" not in md:
            kw["metavar"] = flag_name(f).lstrip("-").upper().replace("-", "_")
    else:
        raise TypeError(f"config field {f.name!r}: no flag for type {tp!r}")
    text = f"{help_text} (default: {shown})" if help_text else f"(default: {shown})"
    kw["help"] = text.replace("%", "%%")  # argparse %-formats help
    return kw


def add_config_args(parser, config_cls, *, exclude: Iterable[str] = (), defaults: Mapping[str, Any] | None = None,
                    help_texts: Mapping[str, str] | None = None) -> None:
    """A flag for every field of ``config_cls`` but ``exclude`` on ``parser`` (a parser or argument group).

    ``defaults`` replaces a field's default on this command only (e.g. None meaning "chosen later");
    ``help_texts`` replaces its help text (the default is still shown).
    """
    hints = typing.get_type_hints(config_cls)
    exclude, defaults, help_texts = set(exclude), dict(defaults or {}), dict(help_texts or {})
    for f in fields(config_cls):
        if f.name in exclude:
            continue
        default = defaults[f.name] if f.name in defaults else _default(f)
        help_text = help_texts.get(f.name, f.metadata.get("help", ""))
        parser.add_argument(flag_name(f), *f.metadata.get("aliases", ()), **_argument(f, hints[f.name], default, help_text))


def config_kwargs(config_cls, args, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The fields of ``config_cls`` that ``args`` (a Namespace or a mapping) carries."""
    values = args if isinstance(args, Mapping) else vars(args)
    return {f.name: values[f.name] for f in fields(config_cls) if f.name in values and f.name not in set(exclude)}


def config_from_args(config_cls, args, **overrides):
    """``config_cls`` from the fields ``args`` carries (its defaults for the rest), then ``overrides``."""
    return config_cls(**{**config_kwargs(config_cls, args), **overrides})
