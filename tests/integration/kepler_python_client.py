#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Talks to the estimator's unix socket as a Python client would, in one of two ways.
Standard library only.

    kepler_python_client.py SOCKET < request.json
        As the Python estimator's peers: sendall the request, then recv until what
        arrived parses as JSON (a client that reads whole replies).
    kepler_python_client.py --2022 SOCKET < request.json
        As the 2022 Go client (PR #104, Kepler v0.3): one recv of at most 1024 bytes, then
        the decode Go's encoding/json does into its struct, whose "powers" is a list of
        numbers: anything else fails the decode.

Prints one JSON line for the test to check: {"reply": <decoded reply>, "bytes": n} or
{"error": "...", "bytes": n}.
"""
import json
import socket
import sys


def decode_2022(received):
    reply = json.loads(received.decode("utf-8"))
    powers = reply.get("powers") if isinstance(reply, dict) else None
    # Go decodes null into a nil slice, a list of numbers into the slice; it refuses the
    # rest (an object, a string, a bool).
    if powers is not None and not (
        isinstance(powers, list)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in powers)
    ):
        raise ValueError("cannot unmarshal %s into the powers list" % type(powers).__name__)
    return reply


def main():
    once_2022 = sys.argv[1] == "--2022"
    path = sys.argv[-1]
    request = sys.stdin.buffer.read()
    received = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(request)
            while True:
                chunk = s.recv(1024)
                received += chunk
                if once_2022 or not chunk:
                    break
                try:
                    json.loads(received.decode("utf-8"))
                    break
                except ValueError:
                    continue
        if not received:
            print(json.dumps({"error": "no reply", "bytes": 0}))
            return
        reply = decode_2022(received) if once_2022 else json.loads(received.decode("utf-8"))
    except (OSError, ValueError) as e:
        print(json.dumps({"error": "%s: %s" % (type(e).__name__, e), "bytes": len(received)}))
        return
    print(json.dumps({"reply": reply, "bytes": len(received)}))


if __name__ == "__main__":
    main()
