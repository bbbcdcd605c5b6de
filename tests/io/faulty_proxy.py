"""An HTTP proxy in front of an S3 server that fails chosen requests: throttling, 5xx, resets."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ERROR_BODY = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>injected</Message></Error>'


class FaultyProxy:
    """`faults` is consumed one entry per request that `should_fault(method, path)` selects:
    an HTTP status with an S3 error code ("503 SlowDown", "500 InternalError"), "reset" (the
    connection is closed without a response) or "truncate" (the body breaks off half way)."""

    def __init__(self, upstream: str, faults: list[str], should_fault=lambda method, path: True):
        self.upstream = urlsplit(upstream)
        self.faults = list(faults)
        self.should_fault = should_fault
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FaultyProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_fault(self, method: str, path: str) -> str | None:
        with self._lock:
            self.requests.append((method, path))
            if self.faults and self.should_fault(method, path):
                return self.faults.pop(0)
        return None

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._next_fault(self.command, self.path)
                if fault == "reset":
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault and fault != "truncate":
                    status, _, code = fault.partition(" ")
                    payload = ERROR_BODY.replace(b"{code}", code.encode())
                    self.send_response(int(status))
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = proxy.upstream.netloc
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if fault == "truncate":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.close()
                elif self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        return Handler
