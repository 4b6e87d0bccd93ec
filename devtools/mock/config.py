"""The mock provider's configuration: ``Config``, ``Fault``, and validating ``/_mock/config``."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from devtools.mock.base import FAULT_ACTIONS, MATCH_APIS, MATCH_KEYS, RESPONSES_STREAM_ERRORS, Api


class ConfigError(ValueError):
    """A control-API payload that does not describe a valid configuration."""


@dataclass
class Fault:
    match: dict[str, str]
    times: int | None
    action: dict[str, Any]

    def fits(self, api: Api, api_key: str, model: str) -> bool:
        seen = {"api": api, "api_key": api_key, "model": model}
        return all(seen[name] == want for name, want in self.match.items())

    def as_json(self) -> dict[str, Any]:
        return {"match": self.match, "times": self.times, "action": self.action}


@dataclass
class Config:
    chunks: int
    chunk_delay: float
    ttft: float
    text: list[str] | None = None
    faults: list[Fault] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] | None = None  # [{"name": str, "arguments": {...}}]
    tool_text: str | None = None  # a text piece before the tool calls
    arguments_chunk: int = 8  # characters of arguments JSON per streamed piece
    thinking: str | None = None
    cache: dict[str, int] | None = None  # {"read": N, "write": M}

    def as_json(self) -> dict[str, Any]:
        return {
            "chunks": self.chunks,
            "chunk_delay": self.chunk_delay,
            "ttft": self.ttft,
            "text": self.text,
            "faults": [fault.as_json() for fault in self.faults],
            "tool_calls": copy.deepcopy(self.tool_calls),
            "tool_text": self.tool_text,
            "arguments_chunk": self.arguments_chunk,
            "thinking": self.thinking,
            "cache": None if self.cache is None else dict(self.cache),
        }


def _count(cfg: Mapping[str, Any], name: str) -> int:
    value = cfg.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer")
    return value


def _seconds(cfg: Mapping[str, Any], name: str) -> float:
    value = cfg.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ConfigError(f"{name} must be a non-negative number of seconds")
    return float(value)


def _parse_fault(rule: Any) -> Fault:
    if not isinstance(rule, dict):
        raise ConfigError("each fault must be an object")
    match = rule.get("match") or {}
    if not isinstance(match, dict) or not set(match) <= MATCH_KEYS:
        raise ConfigError(f"fault match may only use {sorted(MATCH_KEYS)}")
    if not all(isinstance(value, str) for value in match.values()):
        raise ConfigError("fault match values must be strings")
    if "api" in match and match["api"] not in MATCH_APIS:
        raise ConfigError(f"fault match api must be one of {list(MATCH_APIS)}")
    times = rule.get("times")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 0):
        raise ConfigError("fault times must be null or a non-negative integer")
    action = rule.get("action")
    if not isinstance(action, dict) or action.get("type") not in FAULT_ACTIONS:
        raise ConfigError(f"fault action type must be one of {sorted(FAULT_ACTIONS)}")
    kind = action["type"]
    if kind == "status":
        status = action.get("status")
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ConfigError("a status fault needs a status between 400 and 599")
        if not isinstance(action.get("headers", {}), dict):
            raise ConfigError("status fault headers must be an object")
    elif kind == "delay_headers":
        _seconds(action, "seconds")
    elif kind in ("break_after", "stream_error", "garbage_line"):
        _count(action, "chunks")
        if kind == "stream_error" and action.get("event", "error") not in RESPONSES_STREAM_ERRORS:
            raise ConfigError(f"stream_error event must be one of {list(RESPONSES_STREAM_ERRORS)}")
    elif kind == "body":
        if not isinstance(action.get("body"), dict):
            raise ConfigError("a body fault needs a body object")
    elif kind == "usage":
        if "usage" not in action or not isinstance(action["usage"], dict | None):
            raise ConfigError("a usage fault needs usage: an object or null")
    elif kind == "drip":
        if _seconds(action, "interval") <= 0:
            raise ConfigError("drip interval must be positive")
        _seconds(action, "max_seconds")
    return Fault(match=dict(match), times=times, action=copy.deepcopy(action))
