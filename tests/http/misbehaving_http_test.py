#!/usr/bin/python3
"""HTTP callers that misbehave, against a real tcm-server.

Six callers (a fixed seed, printed, so that a failure replays the same choices) mix, on
the HTTP port: image streams abandoned after a random number of lines, infer and PNG
calls whose connection closes before the answer, complete streams, PNG and infer calls
that must succeed, and malformed requests that must be refused with 400. Afterwards
the server must still serve, no call may be left in flight, and its image ledger must
add up for every model: every accepted image generated or dropped with a reason.

Usage: misbehaving_http_test.py --server BIN --models DIR [--seed N]
"""

import argparse
import json
import os
import random
import re
import shutil
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from tcm_server import Server  # noqa: E402

MODELS = ("fashion-mnist-tcm", "fashion-mnist-ct")
CALLERS = 6
ACTIONS_PER_CALLER = 30


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=300)
    return sock


def send_request(sock, method, target, body=b""):
    head = f"{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    sock.sendall(head.encode() + b"\r\n" + body)


def read_all(sock):
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def parse_reply(raw):
    """(status, headers text, body) of a whole HTTP/1.1 reply, chunked bodies joined."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head[9:12])
    if b"transfer-encoding: chunked" in head.lower():
        joined, rest = b"", body
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            joined, rest = joined + rest[:size], rest[size + 2:]
        body = joined
    return status, head.decode(), body


def infer_body(labels):
    return json.dumps({"parameters": {"steps": 1},
                       "inputs": [{"name": "class_label", "datatype": "INT64", "shape": [len(labels)],
                                   "data": labels}]}).encode()


class Caller(threading.Thread):
    def __init__(self, port, rng, failures):
        super().__init__()
        self.port, self.rng, self.failures = port, rng, failures

    def fail(self, what):
        self.failures.append(what)

    def run(self):
        for _ in range(ACTIONS_PER_CALLER):
            try:
                getattr(self, self.rng.choice(["abandon_stream", "abandon_call", "full_stream", "png", "infer",
                                               "malformed"]))()
            except Exception as error:  # noqa: BLE001 - any exception is a failure of the server's promise
                self.fail(f"{type(error).__name__}: {error}")

    def stream_target(self):
        model, num, steps = self.rng.choice(MODELS), self.rng.randint(1, 8), self.rng.randint(1, 2)
        preview = self.rng.randint(0, 1)
        return (f"/v1/models/{model}/stream?class={self.rng.randint(0, 9)}&steps={steps}&num={num}"
                f"&seed={self.rng.randint(0, 1000)}&preview={preview}"), num, steps, preview

    def abandon_stream(self):
        target, _, _, _ = self.stream_target()
        lines = self.rng.randint(0, 3)
        with connect(self.port) as sock:
            send_request(sock, "GET", target)
            received = b""
            while received.count(b"\n") < lines + 8:  # the headers, then some lines
                data = sock.recv(4096)
                if not data:
                    break
                received += data

    def abandon_call(self):
        labels = [self.rng.randint(0, 9) for _ in range(self.rng.randint(1, 16))]
        with connect(self.port) as sock:
            if self.rng.random() < 0.5:
                send_request(sock, "POST", f"/v2/models/{self.rng.choice(MODELS)}/infer", infer_body(labels))
            else:
                send_request(sock, "GET", f"/v1/models/{self.rng.choice(MODELS)}/generate?num={len(labels)}")
            # closed without reading the answer

    def full_stream(self):
        target, num, steps, preview = self.stream_target()
        with connect(self.port) as sock:
            send_request(sock, "GET", target)
            status, _, body = parse_reply(read_all(sock))
        lines = [json.loads(line) for line in body.decode().splitlines() if line]
        if status != 200 or not lines or lines[-1].get("status") != "OK":
            self.fail(f"stream {target}: {status} {lines[-1:] or body[:200]}")
            return
        images = [line for line in lines[:-1] if not line["preview"]]
        previews = [line for line in lines[:-1] if line["preview"]]
        if sorted(line["index"] for line in images) != list(range(num)):
            self.fail(f"stream {target}: final images {[line['index'] for line in images]}")
        if len(previews) != (num if steps == 2 and preview else 0):
            self.fail(f"stream {target}: {len(previews)} previews")

    def png(self):
        with connect(self.port) as sock:
            send_request(sock, "GET", f"/v1/models/{self.rng.choice(MODELS)}/generate?num={self.rng.randint(1, 9)}")
            status, head, body = parse_reply(read_all(sock))
        if status != 200 or not body.startswith(b"\x89PNG\r\n\x1a\n"):
            self.fail(f"png: {status} {body[:100]}")

    def infer(self):
        labels = [self.rng.randint(0, 9) for _ in range(self.rng.randint(1, 8))]
        with connect(self.port) as sock:
            send_request(sock, "POST", f"/v2/models/{self.rng.choice(MODELS)}/infer", infer_body(labels))
            status, _, body = parse_reply(read_all(sock))
        if status != 200:
            self.fail(f"infer: {status} {body[:200]}")
            return
        output = json.loads(body)["outputs"][0]
        if output["shape"] != [len(labels), 32, 32, 1] or len(output["data"]) != len(labels) * 1024:
            self.fail(f"infer: shape {output['shape']}, {len(output['data'])} values")

    def malformed(self):
        method, target, body = self.rng.choice([
            ("POST", "/v2/models/fashion-mnist-tcm/infer", b"{\"inputs\": [{\"name\": \"class_label\""),
            ("POST", "/v2/models/fashion-mnist-tcm/infer", b"[" * 100 + b"]" * 100),
            ("POST", "/v2/models/fashion-mnist-tcm/infer", infer_body([3, 99])),
            ("GET", "/v1/models/fashion-mnist-tcm/stream?num=0", b""),
            ("GET", "/v1/models/fashion-mnist-tcm/generate?steps=7", b""),
            ("GET", "/v1/models/fashion-mnist-tcm/stream?preview=yes", b""),
        ])
        with connect(self.port) as sock:
            send_request(sock, method, target, body)
            status, _, reply = parse_reply(read_all(sock))
        if status != 400 or "error" not in json.loads(reply):
            self.fail(f"malformed {target}: {status} {reply[:200]}")


def metrics(port):
    with connect(port) as sock:
        send_request(sock, "GET", "/metrics")
        return parse_reply(read_all(sock))[2].decode()


def metric_sum(text, name, model):
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf'^{name}\{{([^}}]*)\}} (\S+)$', line)
        if match and f'model="{model}"' in match.group(1):
            total += float(match.group(2))
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="the tcm-server binary")
    parser.add_argument("--models", required=True, help="a model repository holding fashion-mnist-tcm and -ct")
    parser.add_argument("--seed", type=int, default=1, help="the callers' random choices (default 1)")
    args = parser.parse_args()
    print(f"seed {args.seed} (rerun with --seed {args.seed} to replay the same choices)")
    work = tempfile.mkdtemp()
    server = Server(args.server, args.models, os.path.join(work, "server.log"))
    failures = []
    try:
        master = random.Random(args.seed)
        callers = [Caller(server.http_port, random.Random(master.getrandbits(32)), failures) for _ in range(CALLERS)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()

        # Nothing may stay in flight once the abandoned calls have been dropped.
        deadline, text = time.monotonic() + 120, ""
        while time.monotonic() < deadline:
            text = metrics(server.http_port)
            if all(metric_sum(text, "tcm_requests_in_flight", m) == 0 for m in MODELS):
                break
            time.sleep(0.1)
        for model in MODELS:
            in_flight = metric_sum(text, "tcm_requests_in_flight", model)
            accepted = metric_sum(text, "tcm_images_accepted_total", model)
            generated = metric_sum(text, "tcm_images_generated_total", model)
            dropped = metric_sum(text, "tcm_images_dropped_total", model)
            print(f"{model}: accepted {accepted:.0f} = generated {generated:.0f} + dropped {dropped:.0f}; "
                  f"in flight {in_flight:.0f}")
            if in_flight != 0:
                failures.append(f"{model}: {in_flight} calls still in flight")
            if accepted != generated + dropped or accepted == 0:
                failures.append(f"{model}: ledger: accepted {accepted} != generated {generated} + dropped {dropped}")
        cancelled = sum(metric_sum(text, "tcm_client_cancellations_total", m) for m in MODELS)
        print(f"calls cancelled by their callers: {cancelled:.0f}")
        # Still serving.
        with connect(server.http_port) as sock:
            send_request(sock, "GET", "/v2/health/ready")
            if parse_reply(read_all(sock))[0] != 200:
                failures.append("not ready afterwards")
        if server.proc.poll() is not None:
            failures.append(f"the server exited with {server.proc.returncode}")
    finally:
        server.stop()
        if failures:
            with open(os.path.join(work, "server.log")) as log:
                print(log.read()[-3000:])
        shutil.rmtree(work, ignore_errors=True)
    for failure in failures:
        print("FAIL:", failure)
    print("PASS" if not failures else f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
