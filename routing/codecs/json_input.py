"""A client's JSON body, parsed strictly enough that nothing in it can fail later.

Python's json module accepts what no provider (and no JSON encoder of ours) will: numbers
like ``1e400`` become ``inf``, ``NaN``/``Infinity`` literals parse, and a lone surrogate
(``"\\ud800"``, or its raw UTF-8 bytes, which ``json.loads`` lets through with
``surrogatepass``) becomes a ``str`` that cannot be encoded again. Left in, each surfaces
after admission as an encoding failure: a 500 and a ledger row for a request that never
reached a provider. So they are refused here, with a 400 naming the field, and so is a
``__proto__`` key, which unknown-field pass-through must not carry to a JavaScript server.

Clean bodies pay one regular-expression scan of the raw bytes and nothing else: only when
a non-finite number was parsed or a surrogate may be present is the parsed body walked to
find which field holds it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, NoReturn

# An escaped UTF-16 surrogate (\uD800-\uDFFF; a valid pair matches too, the walk tells them
# apart) or a surrogate itself (its raw UTF-8 bytes, let through by surrogatepass).
_MAYBE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")


class _Flags:
    __slots__ = ("non_finite",)

    def __init__(self) -> None:
        self.non_finite = False


def load_json_object(
    raw: bytes, *, invalid: Callable[..., NoReturn], what: str = "The request body"
) -> dict[str, Any]:
    """``raw`` as a JSON object, or ``invalid(message, param=...)`` saying what is wrong.

    ``invalid`` raises the client format's 400 (each wire format names fields its own way).
    """
    flags = _Flags()

    def parse_float(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            flags.non_finite = True
        return value

    def reject_constant(name: str) -> NoReturn:
        invalid(f"Invalid JSON: {name} is not a number.")

    try:
        # JSON over HTTP is UTF-8 (RFC 8259). Decoded here rather than by json.loads, which
        # would also take UTF-16 and UTF-32 bodies (and their surrogates) past the check
        # below; surrogatepass keeps a raw surrogate for the walk to name.
        text = raw.decode("utf-8", "surrogatepass").removeprefix("\ufeff")  # a BOM may be ignored
        body = json.loads(text, parse_float=parse_float, parse_constant=reject_constant)
    except UnicodeDecodeError:
        invalid(f"{what} is not valid UTF-8.")
    except json.JSONDecodeError as exc:
        invalid(f"{what} is not valid JSON: {exc.msg} (line {exc.lineno}).")
    except (RecursionError, ValueError):
        # RecursionError: absurdly nested arrays; ValueError: an integer with more digits
        # than Python will parse (int_max_str_digits).
        invalid(f"{what} is not valid JSON.")
    if not isinstance(body, dict):
        invalid(f"{what} must be a JSON object.")
    if '"__proto__"' in text:
        # Unknown fields are passed on to a provider of the same format; this one never is:
        # a JavaScript server (or gateway) in front of a provider may merge it into an
        # object's prototype. Looked for only when the text holds it at all.
        path = _proto_key(body, "")
        if path is not None:
            invalid(f"`{path}` is not a field any API has.", param=path)
    if flags.non_finite or _MAYBE_SURROGATE.search(text):
        try:
            problem = _first_problem(body, "")
        except RecursionError:
            invalid(f"{what} is not valid JSON.")
        if problem is not None:
            path, message = problem
            invalid(f"`{path}` {message}", param=path)
    return body


def _first_problem(value: Any, path: str) -> tuple[str, str] | None:
    """(path, what is wrong) for the first unencodable value under ``value``."""
    if isinstance(value, str):
        return None if _encodable(value) else (path, "contains an unpaired UTF-16 surrogate.")
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, "is a number too large to represent.")
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if not _encodable(key):
                return where, "has a key with an unpaired UTF-16 surrogate."
            found = _first_problem(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _first_problem(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _proto_key(value: Any, path: str) -> str | None:
    """The path of the first ``__proto__`` key under ``value``."""
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if key == "__proto__":
                return where
            if (found := _proto_key(item, where)) is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (found := _proto_key(item, f"{path}[{index}]")) is not None:
                return found
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
