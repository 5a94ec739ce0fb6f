"""A Standard Webhooks receiver on loopback: each delivery verified with the `standardwebhooks` library.

Every request is recorded (webhook-id, arrival time, verified or not). A verified delivery is
processed once per `webhook-id` (the dedup a receiver must do: delivery is at least once); a
repeat is answered 200 and counted in `duplicates`; a delivery that does not verify gets 400.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Arrival:
    webhook_id: str
    at: float
    verified: bool


class WebhookReceiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, secret: str | None = None, port: int = 0, status: int = 200) -> None:
        """Without `secret`, a random one (set `webhook` once the endpoint's secret is known)."""
        self.webhook = Webhook(secret or "whsec_" + base64.b64encode(os.urandom(32)).decode())
        self.status = status
        self.lock = threading.Lock()
        self.arrivals: list[Arrival] = []
        self.processed: dict[str, Any] = {}
        self.duplicates = 0
        self.refused = 0
        super().__init__(("127.0.0.1", port), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def start(self) -> WebhookReceiver:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass

    def take(self, body: bytes, headers: dict[str, str]) -> int:
        try:
            payload = self.webhook.verify(body, headers)
        except WebhookVerificationError:
            with self.lock:
                self.refused += 1
                self.arrivals.append(Arrival(headers.get("webhook-id", ""), time.monotonic(), False))
            return 400
        webhook_id = headers["webhook-id"]
        with self.lock:
            self.arrivals.append(Arrival(webhook_id, time.monotonic(), True))
            if webhook_id in self.processed:
                self.duplicates += 1
            else:
                self.processed[webhook_id] = payload
        return self.status


class _Handler(BaseHTTPRequestHandler):
    server: WebhookReceiver

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        status = self.server.take(body, {k.lower(): v for k, v in self.headers.items()})
        answer = json.dumps({"ok": status < 300}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
