"""JSON from files that others may have written: bounded size and nesting, no duplicate keys, no NaN.

``json.loads`` recurses once per nesting level (100k ``[`` is a RecursionError, not a ValueError) and keeps
the last of duplicate keys (another reader may keep the first). :func:`loads` fails on both, and on
anything else that is not plain JSON, with one :class:`ValueError` line.
"""

from __future__ import annotations

import json
import re

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_depth(data: bytes, limit: int) -> int:
    """The deepest nesting of ``[``/``{`` outside strings; stops counting once past ``limit``."""
    depth = deepest = 0
    for b in _STRINGS.sub(b'""', data).translate(None, _NOT_BRACKETS):
        if b in (0x5B, 0x7B):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def loads(data: bytes | str, max_bytes: int, max_depth: int):
    """Parse ``data`` as strict JSON within the bounds, or raise ValueError with the reason (one line)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise ValueError(f"{len(raw)} bytes, over the limit of {max_bytes}")
    if nesting_depth(raw, max_depth) > max_depth:
        raise ValueError(f"nested deeper than {max_depth} levels")
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 ({e.reason} at byte {e.start})") from None
    except RecursionError:  # the depth check above makes this unreachable; kept so no caller ever sees one
        raise ValueError("nested too deeply") from None
    except ValueError as e:
        raise ValueError(f"not JSON ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
