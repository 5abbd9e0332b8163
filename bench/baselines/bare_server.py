"""Baseline: the bare stdlib ThreadingHTTPServer answering a constant JSON body.

HTTP/1.1 keep-alive and TCP_NODELAY, nothing else: the ceiling for any ``http.server``-based
service on this machine. ``python bench/baselines/bare_server.py --port 8001``
"""
from __future__ import annotations

import argparse
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = b"[1,2,3,4,5,6,7,8,9,10]"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):  # skip the reverse DNS lookup of HTTPServer.server_bind
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_name, self.server_port = self.socket.getsockname()[:2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Bare ThreadingHTTPServer returning a constant body (benchmark baseline).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=8001, help="port (0: any free port)")
    args = p.parse_args(argv)
    srv = Server((args.host, args.port), Handler)
    print(f"bare: listening on http://{args.host}:{srv.server_port}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
