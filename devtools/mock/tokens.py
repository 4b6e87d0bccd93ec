"""The mock's deterministic token counts, and its thinking signatures and sealed reasoning."""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import re
from collections.abc import Iterable
from typing import Any

from devtools.mock.base import WORDS_PER_PIECE
from devtools.mock.config import ConfigError


def _text_of(content: Any) -> str:
    """A string content, or the text of its ``{"type": "text"}`` parts, concatenated."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
            if isinstance(part.get("text"), str)
        )
    return ""


def _parse_tool_calls(calls: Any) -> list[dict[str, Any]] | None:
    if calls is None:
        return None
    if not isinstance(calls, list):
        raise ConfigError("tool_calls must be null or a list")
    parsed = []
    for call in calls:
        if (
            not isinstance(call, dict)
            or set(call) != {"name", "arguments"}
            or not isinstance(call["name"], str)
            or not call["name"]
            or not isinstance(call["arguments"], dict)
        ):
            raise ConfigError('each tool call must be {"name": str, "arguments": {...}}')
        parsed.append({"name": call["name"], "arguments": copy.deepcopy(call["arguments"])})
    return parsed


def _words(content: Any) -> int:
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        total = 0
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                total += len(part["text"].split())
            elif part.get("type") == "tool_result":  # Anthropic: a result's own text counts
                total += _words(part.get("content"))
        return total
    return 0


def _tool_description(tool: Any) -> Any:
    """A tool definition's description: OpenAI ``function.description``, else ``description``."""
    if not isinstance(tool, dict):
        return None
    function = tool.get("function")
    return function.get("description") if isinstance(function, dict) else tool.get("description")


def prompt_tokens(messages: Iterable[Any], system: Any = None, tools: Any = None) -> int:
    """The documented deterministic prompt-token count of a request (see the module docs)."""
    total = sum(3 + _words(m.get("content")) for m in messages if isinstance(m, dict))
    if isinstance(tools, list):
        total += sum(3 + _words(_tool_description(tool)) for tool in tools)
    return total if system is None else total + 3 + _words(system)


def _word_pieces(text: str, per: int = WORDS_PER_PIECE) -> list[str]:
    """``text`` in pieces of ``per`` words each (with their spacing); they join back to it."""
    words = [word for word in re.split(r"(?<=\s)(?=\S)", text) if word]
    return ["".join(words[i : i + per]) for i in range(0, len(words), per)]


def _sign(secret: bytes, thinking: str) -> str:
    """A thinking block's signature: only this process can make one that verifies."""
    return base64.b64encode(hmac.new(secret, thinking.encode(), hashlib.sha256).digest()).decode()


def _seal(secret: bytes, reasoning: str) -> str:
    """A Responses reasoning item's ``encrypted_content``: its text with an HMAC of it, so the
    mock can tell, when it comes back, that it is its own and unaltered."""
    text = reasoning.encode()
    mac = hmac.new(secret, text, hashlib.sha256).digest()
    return "gAAAA" + base64.urlsafe_b64encode(mac + text).decode()


def _unseal(secret: bytes, sealed: str) -> str | None:
    """The reasoning text in ``sealed``, or None when this process did not make it so."""
    try:
        raw = base64.urlsafe_b64decode(sealed.removeprefix("gAAAA").encode())
    except (binascii.Error, ValueError):
        return None
    mac, text = raw[:32], raw[32:]
    if not sealed.startswith("gAAAA") or not hmac.compare_digest(
        mac, hmac.new(secret, text, hashlib.sha256).digest()
    ):
        return None
    return text.decode(errors="replace")
