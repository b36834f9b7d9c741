"""A stand-in for an Elasticsearch node that dies in the middle of a bulk request.

``python -m tests.crash.es_proxy PORT UPSTREAM [--cut-bulk N]`` forwards HTTP to the real
node at ``UPSTREAM``; with ``--cut-bulk N`` the N-th ``_bulk`` request reaches the node with
only its first half of documents, and the process exits before answering: to the client,
the node is gone mid-bulk, with part of the request applied. (The shared test node itself
must not be killed; this is how the crash tests take "it" down.) Prints ``ready`` once
listening.
"""

from __future__ import annotations

import http.client
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def serve(port: int, upstream: str, cut_bulk: int | None) -> None:
    target = urlparse(upstream)
    bulks = 0

    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            nonlocal bulks
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            dying = False
            if "_bulk" in self.path and self.command in ("POST", "PUT"):
                bulks += 1
                if cut_bulk is not None and bulks == cut_bulk:
                    lines = body.splitlines(keepends=True)
                    body = b"".join(lines[: (len(lines) // 4) * 2])  # whole action/source pairs
                    dying = True
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            conn.request(self.command, self.path, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            conn.close()
            if dying:
                os._exit(0)  # applied in part, never answered: the node died mid-bulk
            self.send_response(response.status)
            for k, v in response.getheaders():
                if k.lower() not in _HOP:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Forward)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    cut = int(sys.argv[sys.argv.index("--cut-bulk") + 1]) if "--cut-bulk" in sys.argv else None
    serve(int(sys.argv[1]), sys.argv[2], cut)
