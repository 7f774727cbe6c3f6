"""A fault-injecting HTTP proxy for tests: put it in front of the loopback S3 server (moto)
and point the client at it, and a share of requests fail the ways object stores and networks
fail.

    proxy = FaultProxy("http://127.0.0.1:PORT", share=0.3, seed=1).start()
    ...  # s3fs / the job with endpoint_url=proxy.url
    proxy.stop(); proxy.counts  # faults injected, by kind

Faults, drawn per request with probability `share`, one of `kinds`:
- "503": a 503 SlowDown error, as S3 answers when throttling; the request is not forwarded.
- "reset": the connection reset (RST) without an answer, before or after forwarding.
- "slow": the answer delayed by `slow_s` seconds (still whole).
- "truncate": the answer's headers with the full Content-Length, then half its body and a
  closed connection (only answers with a body of 1 kB or more; others get a reset).
- "short": like "truncate" but without a Content-Length (the body ends where the connection
  does, as HTTP/1.0 allows), so the client cannot tell the body is short: not in the default
  mix; for testing the byte count check.

`methods` limits the faults to requests of those HTTP methods (default: all).
`permanent` maps a substring of the request path to a status (404 or 403): every request
for such a key gets it, as S3 does for a missing object or a denied one. Requests are
forwarded unchanged (the signature is over the Host header, which is kept) on a new upstream
connection each.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

KINDS = ("503", "reset", "slow", "truncate")
_ERRORS = {
    404: ("NoSuchKey", "The specified key does not exist."),
    403: ("AccessDenied", "Access Denied"),
    503: ("SlowDown", "Please reduce your request rate."),
}
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}


class FaultProxy:
    """A threaded HTTP proxy on 127.0.0.1 in front of `upstream` that fails a share of
    requests (see the module docstring). `counts` holds what it did: "requests", one count
    per fault kind and per permanent status; `requests` the (method, path) of every request."""

    def __init__(self, upstream: str, share: float = 0.0, kinds: tuple[str, ...] = KINDS, seed: int = 0,
                 slow_s: float = 0.5, permanent: dict[str, int] | None = None,
                 methods: tuple[str, ...] | None = None) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.share, self.kinds, self.slow_s = share, tuple(kinds), slow_s
        self.permanent = dict(permanent or {})
        self.methods = methods
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.requests: list[tuple[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The proxy's endpoint URL."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FaultProxy:
        """Serve in a background thread; returns self."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self.server.shutdown()
        self.server.server_close()

    def draw(self, method: str, path: str) -> str | int | None:
        """The fault for one request: a permanent status, a kind, or None (forward it)."""
        with self.lock:
            self.counts["requests"] += 1
            self.requests.append((method, path))
            key = unquote(path.split("?", 1)[0])
            for part, status in self.permanent.items():
                if part in key:
                    self.counts[str(status)] += 1
                    return status
            if self.methods is not None and method not in self.methods:
                return None
            if self.share and self.rng.random() < self.share:
                kind = self.rng.choice(self.kinds)
                self.counts[kind] += 1
                return kind
            return None

    def coin(self) -> bool:
        """A fair coin from the proxy's seeded generator."""
        with self.lock:
            return self.rng.random() < 0.5


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect

        def log_message(self, *args) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                data = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline().strip():  # trailers
                            pass
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _reset(self) -> None:
            # SO_LINGER 0: close() sends a RST, as a dropped connection does
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def _error(self, status: int) -> None:
            code, message = _ERRORS[status]
            body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                    f"<Message>{message}</Message><Resource>{self.path}</Resource></Error>").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
            conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, resp.reason, resp.getheaders(), data
            finally:
                conn.close()

        def _handle(self) -> None:
            body = self._body()
            fault = proxy.draw(self.command, self.path)
            if isinstance(fault, int) or fault == "503":
                self._error(fault if isinstance(fault, int) else 503)
                return
            if fault == "reset" and proxy.coin():  # before the store saw the request
                self._reset()
                return
            status, reason, headers, data = self._forward(body)
            if fault == "reset" or (fault in ("truncate", "short") and (len(data) < 1024 or self.command == "HEAD")):
                self._reset()  # after the store applied it: the client cannot know
                return
            if fault == "slow":
                time.sleep(proxy.slow_s)
            self.send_response(status, reason)
            head = self.command == "HEAD"  # its Content-Length is the object's, with no body
            for k, v in headers:
                if k.lower() not in _HOP and (head or k.lower() != "content-length"):
                    self.send_header(k, v)
            if fault == "short":
                self.send_header("Connection", "close")
            elif not head:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if head:
                return
            if fault in ("truncate", "short"):
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                if fault == "truncate":
                    self._reset()
                self.close_connection = True  # "short": a clean close ends the body
                return
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler
