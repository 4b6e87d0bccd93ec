"""A webhook receiver on loopback that records every delivery, for the spend-alert tests.

    receiver = WebhookReceiver.start()
    ... (a proxy started with PROXY_ALERT_WEBHOOK_URL=receiver.url) ...
    receiver.deliveries()  # every POST, in arrival order, failed ones included
    receiver.stop()

``reset(fail_first=N)`` makes it answer 500 to the first N deliveries of each webhook-id
(then 204), as a receiver that is down for a while would.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    status: int  # what the receiver answered

    @property
    def id(self) -> str:
        return self.headers.get("webhook-id", "")


class WebhookReceiver:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._deliveries: list[Delivery] = []
        self._seen: Counter[str] = Counter()
        self.fail_first = 0
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)

    @classmethod
    def start(cls) -> WebhookReceiver:
        receiver: WebhookReceiver

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                status = receiver._answer(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the tests read deliveries(), not a log

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        receiver = cls(server)
        receiver._thread.start()
        return receiver

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks/spend"

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            msg_id = headers.get("webhook-id", "")
            self._seen[msg_id] += 1
            status = 500 if self._seen[msg_id] <= self.fail_first else 204
            self._deliveries.append(Delivery(path=path, headers=headers, body=body, status=status))
            return status

    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def reset(self, *, fail_first: int = 0) -> None:
        with self._lock:
            self._deliveries.clear()
            self._seen.clear()
            self.fail_first = fail_first

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
