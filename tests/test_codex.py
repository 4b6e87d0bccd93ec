"""Codex CLI, the real agent, through the live proxy's Responses API on both tiers (issue 9).

Codex (npm ``@openai/codex`` at the version agents/package-lock.json pins, installed by
``make agents``) runs headless, ``codex exec PROMPT``, with a fresh CODEX_HOME whose config.toml
names one model provider: ``wire_api = "responses"``, ``base_url`` the live proxy's ``/v1``, and
the tenant's JWT as its key; in a loopback-only network namespace when the kernel allows one (see
tests/support/agents.py). It asks for ``gpt-5.5``, which each tier maps to its own route with an
alias, so the request is the one a Codex user of that model sends: every tool Codex offers
(``exec_command``, the ``custom`` tool ``apply_patch``, ``tool_search``, ``web_search``, ...),
developer messages, ``reasoning``, ``include``, ``store: false``, streamed.

The mock provider plays the model: it calls ``exec_command`` with a command whose output nobody
can guess (a token from a file the test wrote, and shell arithmetic), then answers "Tool results:
<output>". So the command really ran only if its output reaches the mock inside a tool result
(the ``function_call_output`` Codex sends back, translated for the provider), and Codex finished
only if it prints that answer and exits 0; it exits 1 when the stream ends without
``response.completed``, and never runs a call that no ``response.output_item.done`` carried.

The tier picks the provider, not the client: alice (tier auto) speaks Responses to an
OpenAI-kind provider that gets chat completions, bob (tier max) to an Anthropic-kind one.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from routing.services import alias_create
from tests.conftest import LiveProxy, World
from tests.support.agents import (
    CODEX_MODEL,
    CODEX_SHELL_TOOL,
    AgentRun,
    ensure_codex,
    node_binary,
    run_codex,
)
from tests.support.mockserver import MockServer

pytestmark = pytest.mark.skipif(node_binary() is None, reason="Codex needs node")

# Reads the token file the test writes, so the output can only come from running it.
COMMAND = 'echo "$(cat token.txt)-$((6*7))"'
PROMPT = (
    "Run one shell command that prints the token in token.txt followed by 6*7, "
    "then tell me exactly what it printed."
)


@pytest.fixture(scope="module")
def codex() -> Path:
    return ensure_codex()


def _task(workdir: Path, mock: MockServer) -> str:
    """Write the token file, make the mock call Codex's shell tool with COMMAND; the output."""
    token = uuid.uuid4().hex
    project = workdir / "project"
    project.mkdir(parents=True)
    (project / "token.txt").write_text(token + "\n")
    mock.configure(tool_calls=[{"name": CODEX_SHELL_TOOL, "arguments": {"cmd": COMMAND}}])
    return f"{token}-42"


def _assert_round_trip(run: AgentRun, mock: MockServer, expected: str) -> None:
    # Codex wraps a command's output ("Chunk ID: ...\nProcess exited with code 0\n...Output:\n"),
    # so the output is inside the tool result rather than all of it.
    results = [
        result["text"] for record in mock.requests() for result in record.get("tool_results") or []
    ]
    assert any(expected in text for text in results), run.describe()
    assert "Tool results:" in run.stdout and expected in run.stdout, run.describe()
    assert run.returncode == 0, run.describe()
    # With plugins and analytics off (codex_config) nothing but the provider is called.
    assert run.egress == [], run.describe()


@pytest.mark.parametrize("tier", ["auto", "max"])
def test_it_runs_codex_through_the_proxy(
    proxy: LiveProxy,
    world: World,
    mock: MockServer,
    codex: Path,
    tmp_path: Path,
    tier: str,
) -> None:
    tenant, model, upstream, api = (
        (world.alice, "auto", "kimi-k2", "openai")
        if tier == "auto"
        else (world.bob, "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "anthropic")
    )
    # The name Codex asks for, sent to the tier's own route.
    alias_create(tier=tenant.tier, name=CODEX_MODEL, model=model)
    expected = _task(tmp_path, mock)

    run = run_codex(
        base_url=proxy.openai_base_url,
        api_key=world.token(tenant),
        prompt=PROMPT,
        workdir=tmp_path,
    )

    _assert_round_trip(run, mock, expected)
    records = mock.requests()
    # One call that runs the tool, one that answers; Codex retries nothing (codex_config).
    assert len(records) == 2, run.describe()
    assert {(record["api"], record["model"]) for record in records} == {(api, upstream)}


def test_it_runs_codex_against_the_mock_itself(
    mock: MockServer, codex: Path, tmp_path: Path
) -> None:
    """The same task straight at the mock's Responses API: when the proxy tests fail, this says
    whether the agent and the mock still work together (so the fault is the proxy's)."""
    expected = _task(tmp_path, mock)

    run = run_codex(
        base_url=mock.openai_base_url, api_key="sk-test", prompt=PROMPT, workdir=tmp_path
    )

    _assert_round_trip(run, mock, expected)


def test_it_runs_codex_on_a_model_outside_its_catalog(
    proxy: LiveProxy, world: World, mock: MockServer, codex: Path, tmp_path: Path
) -> None:
    """A name Codex does not know (alice's tier alias ``auto``): it then sends its fallback
    tools, one a ``namespace`` tool, which the translation flattens for the provider."""
    expected = _task(tmp_path, mock)

    run = run_codex(
        base_url=proxy.openai_base_url,
        api_key=world.token(world.alice),
        prompt=PROMPT,
        workdir=tmp_path,
        model="auto",
    )

    _assert_round_trip(run, mock, expected)
    records = mock.requests()
    assert len(records) == 2, run.describe()
    assert {(record["api"], record["model"]) for record in records} == {("openai", "kimi-k2")}
