"""A webhook endpoint on 127.0.0.1 for the emulator to deliver to: records raw bodies and headers,
and can answer 500 to the first N posts (to see the emulator retry)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["WebhookSink"]


class WebhookSink:
    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[tuple[bytes, dict[str, str]]] = []
        self.fail_first = fail_first
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.posts.append((body, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(500 if len(sink.posts) <= sink.fail_first else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/webhooks/quickbooks"
        # shutdown() returns within one poll: 0.05 s instead of the default 0.5 s
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
