"""``manage.py mock_provider``: serve the fake LLM provider (devtools.mockprovider) with Daphne."""

from __future__ import annotations

import sys
from argparse import ArgumentParser
from typing import Any

# Daphne installs Twisted's asyncio reactor on import, so it must come before anything Twisted.
from daphne.server import Server
from django.core.management.base import BaseCommand, CommandError

from devtools.mockprovider import ConfigError, build_app


class _Server(Server):  # type: ignore[misc]  # daphne ships no type hints
    """Daphne's server, announcing the address once its listener is up.

    The announcement is the readiness signal test harnesses wait for, so it must follow the
    bind, which happens in ``listen_success`` (with port 0, it also reveals the chosen port).
    """

    def listen_success(self, port: Any) -> None:
        super().listen_success(port)
        host, bound_port = self.listening_addresses[-1]
        sys.stdout.write(f"mock provider listening on http://{host}:{bound_port}\n")
        sys.stdout.flush()


class Command(BaseCommand):
    help = (
        "Serve a fake upstream LLM provider (OpenAI chat completions and Anthropic Messages, "
        "streaming included) for tests and benchmarks. Control it over /_mock/stats, "
        "/_mock/reset and /_mock/config."
    )
    # The mock touches neither the database nor the project's models.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--port", type=int, required=True, help="TCP port; 0 picks a free one")
        parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
        parser.add_argument("--chunks", type=int, default=8, help="content pieces per reply")
        parser.add_argument(
            "--chunk-delay", type=float, default=0.0, help="seconds between content pieces"
        )
        parser.add_argument(
            "--ttft", type=float, default=0.0, help="seconds before the first content piece"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        port: int = options["port"]
        host: str = options["host"]
        if not 0 <= port <= 65535:
            raise CommandError(f"--port must be between 0 and 65535, not {port}")
        try:
            app = build_app(
                chunks=options["chunks"], chunk_delay=options["chunk_delay"], ttft=options["ttft"]
            )
        except ConfigError as exc:
            raise CommandError(f"invalid option: {exc}") from None
        server = _Server(
            application=app,
            endpoints=[f"tcp:port={port}:interface={host}"],
            # No access log: it would cost time on the benchmark's baseline.
            action_logger=None,
            verbosity=0,
        )
        server.run()
        if not server.listening_addresses:
            raise CommandError(f"could not listen on {host}:{port}")
