#!/usr/bin/env python3
"""Talks to the estimator's unix socket as Kepler's Python-side peers do (the style of the
Python estimator itself): connect, sendall the JSON request, then recv until what arrived
parses as JSON. Standard library only.

    kepler_python_client.py SOCKET < request.json

Prints one JSON line for the test to check: {"reply": <decoded reply>} or {"error": "..."}.
"""
import json
import socket
import sys


def main():
    path = sys.argv[1]
    request = sys.stdin.buffer.read()
    received = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(request)
            while True:
                chunk = s.recv(1024)
                if not chunk:
                    break
                received += chunk
                try:
                    json.loads(received.decode("utf-8"))
                    break
                except ValueError:
                    continue
        if not received:
            print(json.dumps({"error": "no reply"}))
            return
        reply = json.loads(received.decode("utf-8"))
    except (OSError, ValueError) as e:
        print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))
        return
    print(json.dumps({"reply": reply}))


if __name__ == "__main__":
    main()
