"""Claude Code, the real agent program, through the live proxy on both tiers (issue 8).

Claude Code (npm ``@anthropic-ai/claude-code`` at the version agents/package-lock.json pins,
installed by ``make agents``) runs headless, ``claude -p PROMPT --allowedTools Bash``, with
ANTHROPIC_BASE_URL at the live proxy and the tenant's JWT as its key, in a loopback-only
network namespace when the kernel allows one (see tests/support/agents.py). The mock provider
plays the model: it calls the Bash tool with a command whose output nobody can guess (a token
from a file the test wrote, and shell arithmetic), then answers "Tool results: <output>". So the
command really ran only if its output reaches the mock inside a tool result, and Claude Code
finished only if it prints that answer and exits 0.

The tier picks the provider, not the client: alice (tier auto) speaks Anthropic's Messages API
to an OpenAI-kind provider, bob (tier max) to an Anthropic-kind one.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from routing.services import alias_create
from tests.conftest import LiveProxy, World, ledger_rows
from tests.support.agents import (
    CLAUDE_CODE_MODEL,
    CLAUDE_CODE_SMALL_MODEL,
    AgentRun,
    ensure_claude_code,
    netns_command,
    node_binary,
    run_claude_code,
)
from tests.support.mockserver import MockServer

pytestmark = pytest.mark.skipif(node_binary() is None, reason="Claude Code needs node")

# Reads the token file the test writes, so the output can only come from running it.
COMMAND = 'echo "$(cat token.txt)-$((6*7))"'
PROMPT = (
    "Run one shell command that prints the token in token.txt followed by 6*7, "
    "then tell me exactly what it printed."
)


@pytest.fixture(scope="module")
def claude_code() -> Path:
    return ensure_claude_code()


def _task(workdir: Path, mock: MockServer) -> str:
    """Write the token file, make the mock call Bash with COMMAND; the expected output."""
    token = uuid.uuid4().hex
    project = workdir / "project"
    project.mkdir(parents=True)
    (project / "token.txt").write_text(token + "\n")
    mock.configure(
        tool_calls=[
            {
                "name": "Bash",
                "arguments": {"command": COMMAND, "description": "Print the token and 6*7"},
            }
        ]
    )
    return f"{token}-42"


def _assert_round_trip(run: AgentRun, mock: MockServer, expected: str) -> None:
    results = [
        result["text"].strip()
        for record in mock.requests()
        for result in record.get("tool_results") or []
    ]
    assert expected in results, run.describe()
    assert f"Tool results: {expected}" in run.stdout, run.describe()
    assert run.returncode == 0, run.describe()


@pytest.mark.parametrize("auth", ["api_key", "auth_token"])
@pytest.mark.parametrize("tier", ["auto", "max"])
def test_it_runs_claude_code_through_the_proxy(
    proxy: LiveProxy,
    world: World,
    mock: MockServer,
    claude_code: Path,
    tmp_path: Path,
    tier: str,
    auth: str,
) -> None:
    tenant, model, upstream, api = (
        (world.alice, "auto", "kimi-k2", "openai")
        if tier == "auto"
        else (world.bob, "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "anthropic")
    )
    # Claude Code asks for its own model names (CLAUDE_CODE_MODEL, CLAUDE_CODE_SMALL_MODEL):
    # the tier's alias takes them to its model, as an operator would set it up.
    alias_create(tier=tenant.tier, name="claude-*", model=model)
    expected = _task(tmp_path, mock)

    run = run_claude_code(
        base_url=proxy.url,
        api_key=world.token(tenant),
        auth=auth,
        prompt=PROMPT,
        workdir=tmp_path,
    )

    _assert_round_trip(run, mock, expected)
    records = mock.requests()
    assert {(record["api"], record["model"]) for record in records} == {(api, upstream)}
    # Nothing left the machine: where the kernel allows it the agent had no network beyond
    # loopback at all, and the harness's trap refused the one call Claude Code makes past its
    # base URL whatever its settings (metrics_enabled at api.anthropic.com, with an API key;
    # the README warns about it).
    assert set(run.egress) <= {"CONNECT api.anthropic.com:443 HTTP/1.1"}, run.describe()
    assert run.isolated or netns_command() is None, run.describe()
    rows = ledger_rows(tenant, len(records))
    assert {row.model for row in rows} <= {CLAUDE_CODE_MODEL, CLAUDE_CODE_SMALL_MODEL}
    assert {(row.wire_format, row.status) for row in rows} == {("anthropic-messages", "ok")}


def test_it_runs_claude_code_against_the_mock_itself(
    mock: MockServer, claude_code: Path, tmp_path: Path
) -> None:
    """The same task straight at the mock: when the proxy tests fail, this says whether the
    agent and the mock still work together (so the fault is the proxy's)."""
    expected = _task(tmp_path, mock)

    run = run_claude_code(
        base_url=mock.anthropic_base_url, api_key="sk-test", prompt=PROMPT, workdir=tmp_path
    )

    _assert_round_trip(run, mock, expected)
