"""What the python tests of tcm-server share: a server on free ports and a PNG decoder."""

import re
import struct
import subprocess
import time
import zlib


def stop_process(proc, grace_seconds):
    """Ends `proc`: SIGTERM, then SIGKILL if it is still running after `grace_seconds`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Server:
    """tcm-server on free ports; the port is read from its 'serving' line."""

    def __init__(self, binary, models, log_path, extra_flags=()):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [binary, "--model_repository", models, "--port", "0", "--metrics_port", "0", "--http_port", "0",
             *extra_flags],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.port = None
        self.http_port = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            with open(log_path) as f:
                match = re.search(r"serving .* on port (\d+) .* http on port (\d+)", f.read())
            if match:
                self.port = int(match.group(1))
                self.http_port = int(match.group(2))
                return
            time.sleep(0.1)
        self.stop()
        with open(log_path) as f:
            raise RuntimeError("tcm-server did not start:\n" + f.read())

    def stop(self):
        stop_process(self.proc, 60)
        self.log.close()


def decode_png(data):
    """(width, height, channels, pixels) of an 8-bit grey or RGB PNG, unfiltered here."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color = header[:4]
    assert depth == 8 and color in (0, 2), header
    channels = 1 if color == 0 else 3
    raw, stride, out = zlib.decompress(idat), width * channels, bytearray()
    previous = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - channels] if x >= channels else 0
            b, c = previous[x], previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + a) & 255
            elif kind == 2:
                line[x] = (line[x] + b) & 255
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += line
        previous = line
    return width, height, channels, bytes(out)
