#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A stand-in for Kepler's model server and for INIT_URL hosts, on loopback, for
model_fetcher_test. Standard library only.

Usage: fake_model_server.py FILES_DIR
Prints the port it listens on (first line of stdout), then serves until killed:

  GET  /files/NAME           FILES_DIR/NAME
  GET  /flaky/N/NAME         503 for the first N requests of this path, then the file
  GET  /slow/S/NAME          the file, trickled in 20 pieces over S seconds (a slow link)
  GET  /slow-nolength/S/NAME as /slow, without Content-Length (the size is unknown)
  GET  /hang                 accepts, reads the request, never answers
  GET  /garbage              200 with an HTML page
  GET  /garbage.zip          200 with bytes that start like a zip and are not one
  GET  /emptyzip             200 with a valid zip that holds no model
  GET  /notmodel.json        200 with JSON that is not a weight file
  GET  /big                  200 with 1 MiB of zeros
  GET  /redirect-file        302 to file:///etc/hostname
  GET  /stats                JSON: {"counts": {path: n}, "bodies": {path: [json bodies]}}
  POST /model                the zip FILES_DIR/<trainer_name or first zip>.zip, or, when
                             "weight" is true, FILES_DIR/weight.json
  POST /slowmodel[/S]        as /model after S seconds (default 1)
  POST /nomodel              400 "cannot find model"
  POST /gone                 404
  POST /garbage-model        200 with garbage
"""
import io
import json
import os
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FILES = sys.argv[1]
LOCK = threading.Lock()
COUNTS = {}
BODIES = {}


def count(path, body=None):
    with LOCK:
        COUNTS[path] = COUNTS.get(path, 0) + 1
        if body is not None:
            BODIES.setdefault(path, []).append(body)
        return COUNTS[path]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, code, data, ctype="application/octet-stream"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def file_bytes(self, name):
        """The bytes of the served file `name`, or None once 404 is answered."""
        path = os.path.join(FILES, os.path.basename(name))
        if not os.path.isfile(path):
            self.send(404, b"no such file")
            return None
        with open(path, "rb") as f:
            return f.read()

    def send_slowly(self, name, seconds, with_length):
        data = self.file_bytes(name)
        if data is None:
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if with_length:
            self.send_header("Content-Length", str(len(data)))
        else:
            self.close_connection = True  # the end of the body is the end of the connection
        self.end_headers()
        pieces = 20
        step = (len(data) + pieces - 1) // pieces
        for i in range(pieces):
            self.wfile.write(data[i * step:(i + 1) * step])
            self.wfile.flush()
            time.sleep(seconds / pieces)

    def send_file(self, name, attachment=False):
        data = self.file_bytes(name)
        if data is None:
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if attachment:  # as Flask's send_file(as_attachment=True) in the model server
            self.send_header("Content-Disposition", "attachment; filename=" + os.path.basename(name))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path
        n = count(path)
        if path == "/stats":
            with LOCK:
                doc = {"counts": COUNTS, "bodies": BODIES}
                self.send(200, json.dumps(doc).encode(), "application/json")
        elif path.startswith("/files/"):
            self.send_file(path[len("/files/"):])
        elif path.startswith("/slow/") or path.startswith("/slow-nolength/"):
            kind, seconds, name = path[1:].split("/", 2)
            self.send_slowly(name, float(seconds), kind == "slow")
        elif path.startswith("/flaky/"):
            _, _, failures, name = path.split("/", 3)
            if n <= int(failures):
                self.send(503, b"busy")
            else:
                self.send_file(name)
        elif path == "/hang":
            time.sleep(300)
        elif path == "/garbage":
            self.send(200, b"<html><body>Sign in to continue</body></html>", "text/html")
        elif path == "/garbage.zip":
            self.send(200, b"PK\x03\x04" + b"\x00" * 100)
        elif path == "/emptyzip":
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                z.writestr("readme.txt", "no model here")
            self.send(200, buf.getvalue())
        elif path == "/notmodel.json":
            self.send(200, b'{"hello": "world"}', "application/json")
        elif path == "/big":
            self.send(200, b"\x00" * (1 << 20))
        elif path == "/redirect-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/hostname")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send(404, b"unknown path")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"unparsed": raw.decode("utf-8", "replace")}
        path = self.path
        count(path, body)
        if path == "/model" or path.startswith("/slowmodel"):
            if path.startswith("/slowmodel"):
                time.sleep(float(path[len("/slowmodel/"):] or 1))
            if body.get("weight"):
                self.send_file("weight.json")
                return
            zips = sorted(f for f in os.listdir(FILES) if f.endswith(".zip"))
            trainer = body.get("trainer_name") or ""
            chosen = [z for z in zips if trainer and z.startswith(trainer)] or zips
            if not chosen:
                self.send(400, b"cannot find model")
                return
            self.send_file(chosen[0], attachment=True)
        elif path == "/nomodel":
            self.send(400, b"cannot find model for the request at the moment")
        elif path == "/gone":
            self.send(404, b"not found")
        elif path == "/garbage-model":
            self.send(200, b"Internal error page", "text/plain")
        else:
            self.send(404, b"unknown path")


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that hangs up early (the size limit, a stopped fetcher) is expected


def main():
    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
