"""A small HTTP proxy between boto3 and a local S3 server that fails or drops chosen requests.

Loopback only, and it stops with the test: it forwards each request to ``upstream`` unless ``fault``
(called with the method and path) answers "fail" (HTTP 503, retryable), "error" (HTTP 500 on every try of
that request) or "drop" (the connection closes without an answer).
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

Fault = Callable[[str, str], str | None]


class FaultyProxy:
    def __init__(self, upstream: str, fault: Fault):
        self.upstream = urlsplit(upstream)
        self.fault = fault
        self.requests: list[tuple[str, str, str]] = []  # (method, path, outcome)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    body = b""
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        body += self.rfile.read(size)
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return body
                return self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))

            def _handle(self):
                body = self._body()
                outcome = proxy.fault(self.command, self.path) or "forward"
                proxy.requests.append((self.command, self.path, outcome))
                if outcome == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if outcome in ("fail", "error"):
                    status = 503 if outcome == "fail" else 500
                    payload = b"<Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>"
                    if outcome == "error":
                        payload = payload.replace(b"ServiceUnavailable", b"InternalError")
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "content-length")}
                headers.pop("Expect", None)
                headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                # a HEAD answer keeps the object's length and has no body
                length = response.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
