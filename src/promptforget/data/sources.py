"""Where a run's data lives, recorded so that the run works from any directory and on another machine.

A dataset typed as ``name:LOCATION`` (``csv:intents.csv``) names a file or folder relative to the working
directory of the moment. A run records, beside the name as typed, where the data actually is::

    "source": {"relative_to_run": "../intents.csv",   # found again when both moved together
               "absolute": "/home/me/intents.csv",
               "sha256": "..."}                        # files only: the content the run was trained on

and :func:`resolve_dataset` finds it again, trying in order: ``data_root`` (``--data-root`` or
``$PROMPTFORGET_DATA_ROOT``: a folder holding the data under its file name, or the file itself), the path
relative to the run directory, the absolute path, the location as typed (runs recorded before sources).
A file whose content differs from the recorded sha256 is refused, never used.
"""

from __future__ import annotations

import os
from pathlib import Path

from promptforget.utils.io import sha256_file

DATA_ROOT_ENV = "PROMPTFORGET_DATA_ROOT"


def local_location(dataset: str) -> Path | None:
    """The existing file or folder a typed dataset names (``csv:PATH`` -> PATH), else None (bundled, hub id)."""
    location = dataset.partition(":")[2]
    return Path(location) if location and Path(location).exists() else None


def source_record(dataset: str, run_dir: str | os.PathLike) -> dict | None:
    """Where ``dataset``'s local data is, for a run in ``run_dir`` (see the module docstring); None if not local."""
    location = local_location(dataset)
    if location is None:
        return None
    path, run_dir = location.resolve(), Path(run_dir).resolve()
    # relative: found again when the run and its data move together (a project folder copied or moved whole)
    record = {"relative_to_run": Path(os.path.relpath(path, run_dir)).as_posix(), "absolute": str(path)}
    if path.is_file():
        record["sha256"] = sha256_file(path)
    return record


def dataset_label(dataset: str) -> str:
    """A name for the data fit for a model card: the file's stem for ``csv:dir/intents.csv``, the repo id for
    ``hf:org/name``, the name itself for a bundled set."""
    name, _, location = dataset.partition(":")
    if not location:
        return name
    if name == "hf" and not Path(location).exists():
        return location
    return Path(location.rstrip("/")).name.split(".")[0] or name


def resolve_dataset(record: dict, run_dir: str | os.PathLike, data_root: str | os.PathLike | None = None) -> str:
    """The recorded dataset name (``data.json``'s ``dataset``) with a location that exists now and, for a file,
    holds the content the run was trained on. FileNotFoundError / ValueError with the fix when it cannot."""
    dataset, source = record["dataset"], record.get("source")
    name, _, typed = dataset.partition(":")
    if not source:
        return dataset
    root = data_root if data_root is not None else os.environ.get(DATA_ROOT_ENV)
    file_name = Path(source["absolute"]).name
    candidates = []
    if root:
        root = Path(root)
        candidates += [root] if root.is_file() or root.name == file_name else [root / file_name]
    if "relative_to_run" in source:
        candidates.append(Path(run_dir) / source["relative_to_run"])
    candidates += [Path(source["absolute"]), Path(typed)]
    changed = []
    for path in candidates:
        if not path.exists():
            continue
        if "sha256" in source and path.is_file() and sha256_file(path) != source["sha256"]:
            changed.append(str(path))
            continue
        return f"{name}:{path.resolve()}"
    hint = f"point --data-root (or ${DATA_ROOT_ENV}) at the folder that holds {file_name!r}"
    if changed:
        raise ValueError(f"the run's data {dataset!r}: {', '.join(changed)} differs from the file the run was trained "
                         f"on (its sha256 is not the recorded {source['sha256'][:12]}...); {hint}")
    looked = ", ".join(dict.fromkeys(str(p) for p in candidates))
    raise FileNotFoundError(f"the run's data {dataset!r} is not where it was (looked at {looked}); {hint}")
