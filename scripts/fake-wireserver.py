#!/usr/bin/env python3
"""A stand-in for the Azure wireserver (168.63.129.16), for tests and the demo only.

It speaks the real protocol: HTTP/1.1 GET of
/machine/plugins?comp=nmagent&type=getinterfaceinfov1 answered with the NMAgent XML.
Run it inside a test's node namespace, bound to that namespace's loopback:

  fake-wireserver.py --xml FILE [--mode ok|garbage|huge|slow|status500|deep]
                     [--port 0] [--port-file F]

--port 0 picks a free port and writes it to --port-file. Modes other than ok send the kinds of
bad answers the plugin must survive. It serves until killed.
"""
import argparse
import http.server
import socketserver
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--xml", required=True)
    ap.add_argument("--mode", default="ok")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    args = ap.parse_args()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def send(self, code, body, ctype="text/xml; charset=utf-8"):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            mode = args.mode
            if not self.path.startswith("/machine/plugins"):
                return self.send(404, b"not found")
            if mode == "ok":
                with open(args.xml, "rb") as f:
                    return self.send(200, f.read())
            if mode == "garbage":
                return self.send(200, b"\x00\x01 this is not <xml at all")
            if mode == "status500":
                return self.send(500, b"<Error>Internal</Error>")
            if mode == "huge":
                return self.send(200, b"<Interfaces>" + b" " * (4 << 20) + b"</Interfaces>")
            if mode == "deep":
                return self.send(200, b"<Interfaces>" + b"<a>" * 100000 + b"</a>" * 100000 + b"</Interfaces>")
            if mode == "slow":
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                for _ in range(100000):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(1)
                return None
            return self.send(400, b"unknown mode")

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

        def handle_error(self, request, client_address):
            pass  # clients that hang up early (size limits, timeouts) are expected here

    srv = Server(("127.0.0.1", args.port), Handler)
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(str(srv.server_address[1]))
        import os
        os.rename(args.port_file + ".tmp", args.port_file)
    sys.stdout.flush()
    srv.serve_forever()


if __name__ == "__main__":
    main()
