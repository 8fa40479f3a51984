#!/usr/bin/python3
"""An independent Open Inference Protocol client against a real tcm-server.

Debian's python3-grpcio with the project's .proto compiled here by protoc, and
urllib for the REST form: no C++ of the project in the loop. Checks every RPC of
inference.GRPCInferenceService and every REST endpoint, the error codes, and
that both give the pixels of tcm.v1 Generate's raw images for the same model,
class, steps, seed and number of images.

Usage: oip_client_test.py --server BIN --models DIR --proto_dir DIR
"""

import argparse
import base64
import importlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from tcm_server import Server, decode_png  # noqa: E402

ARGS = None
PB = None  # inference messages (grpc_predict_v2_pb2)
V1 = None  # tcm.v1 messages (tcm_service_pb2)


def compile_protos(proto_dir, out_dir):
    """Runs protoc --python_out on both services and imports their modules."""
    protos = ["inference/grpc_predict_v2.proto", "tcm/v1/tcm_service.proto"]
    subprocess.run(["protoc", f"-I{proto_dir}", f"--python_out={out_dir}"] + protos, check=True)
    sys.path.insert(0, out_dir)
    return (importlib.import_module("inference.grpc_predict_v2_pb2"),
            importlib.import_module("tcm.v1.tcm_service_pb2"))


SERVER = None
SERVER_DIR = None


def setUpModule():
    global SERVER, SERVER_DIR
    SERVER_DIR = tempfile.mkdtemp()
    SERVER = Server(ARGS.server, ARGS.models, os.path.join(SERVER_DIR, "server.log"),
                    ["--access_log", os.path.join(SERVER_DIR, "access.log")])
    SERVER.access_log = os.path.join(SERVER_DIR, "access.log")


def tearDownModule():
    SERVER.stop()
    shutil.rmtree(SERVER_DIR)


def generate_raw(channel, model, class_label, steps, seed, num_images):
    """tcm.v1 Generate's raw pixels, all images concatenated in index order."""
    request = V1.GenerateRequest(model=model, class_label=class_label, steps=steps, seed=seed, num_images=num_images,
                                 format=V1.IMAGE_FORMAT_RAW)
    rpc = channel.unary_unary("/tcm.v1.TcmService/Generate", request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=V1.GenerateResponse.FromString)
    response = rpc(request, timeout=300)
    return b"".join(image.data for image in sorted(response.images, key=lambda i: i.index))


class ServerTest(unittest.TestCase):
    """Holds a gRPC channel to the server (for tcm.v1 Generate, the reference pixels)."""

    @classmethod
    def setUpClass(cls):
        cls.channel = grpc.insecure_channel(f"127.0.0.1:{SERVER.port}")

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()


class OpenInferenceProtocolTest(ServerTest):
    """inference.GRPCInferenceService over gRPC."""

    def call(self, service, method, request, response_type):
        rpc = self.channel.unary_unary(f"/{service}/{method}", request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=response_type.FromString)
        return rpc(request, timeout=300)

    def infer(self, request):
        return self.call("inference.GRPCInferenceService", "ModelInfer", request, PB.ModelInferResponse)

    def infer_error(self, request):
        with self.assertRaises(grpc.RpcError) as raised:
            self.infer(request)
        return raised.exception.code(), raised.exception.details()

    def generate_raw(self, *args):
        return generate_raw(self.channel, *args)

    @staticmethod
    def class_request(model, labels, steps=None, seed=None, raw=False):
        request = PB.ModelInferRequest(model_name=model, id="call-1")
        tensor = request.inputs.add(name="class_label", datatype="INT64", shape=[len(labels)])
        if raw:
            request.raw_input_contents.append(struct.pack(f"<{len(labels)}q", *labels))
        else:
            tensor.contents.int64_contents.extend(labels)
        if steps is not None:
            request.parameters["steps"].int64_param = steps
        if seed is not None:
            request.parameters["seed"].int64_param = seed
        return request

    def test_health_rpcs(self):
        self.assertTrue(self.call("inference.GRPCInferenceService", "ServerLive", PB.ServerLiveRequest(),
                                  PB.ServerLiveResponse).live)
        self.assertTrue(self.call("inference.GRPCInferenceService", "ServerReady", PB.ServerReadyRequest(),
                                  PB.ServerReadyResponse).ready)
        for model in ("fashion-mnist-tcm", "fashion-mnist-ct"):
            ready = self.call("inference.GRPCInferenceService", "ModelReady", PB.ModelReadyRequest(name=model),
                              PB.ModelReadyResponse)
            self.assertTrue(ready.ready, model)
        with self.assertRaises(grpc.RpcError) as raised:
            self.call("inference.GRPCInferenceService", "ModelReady", PB.ModelReadyRequest(name="nope"),
                      PB.ModelReadyResponse)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_metadata_rpcs(self):
        server = self.call("inference.GRPCInferenceService", "ServerMetadata", PB.ServerMetadataRequest(),
                           PB.ServerMetadataResponse)
        self.assertEqual(server.name, "tcm-serve")
        self.assertRegex(server.version, r"^\d+\.\d+\.\d+$")

        model = self.call("inference.GRPCInferenceService", "ModelMetadata",
                          PB.ModelMetadataRequest(name="fashion-mnist-tcm"), PB.ModelMetadataResponse)
        self.assertEqual(model.name, "fashion-mnist-tcm")
        self.assertEqual(model.platform, "tcm_libtorch")
        self.assertEqual(list(model.versions), ["1"])
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in model.inputs], [("class_label", "INT64", [-1])])
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in model.outputs],
                         [("image", "UINT8", [-1, 32, 32, 1])])
        with self.assertRaises(grpc.RpcError) as raised:
            self.call("inference.GRPCInferenceService", "ModelMetadata", PB.ModelMetadataRequest(name="nope"),
                      PB.ModelMetadataResponse)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_infer_pixels_equal_tcm_v1_generate(self):
        for steps in (1, 2):
            for raw in (False, True):
                with self.subTest(steps=steps, raw_input_contents=raw):
                    response = self.infer(self.class_request("fashion-mnist-tcm", [3, 3, 3], steps, 7, raw))
                    self.assertEqual(response.model_name, "fashion-mnist-tcm")
                    self.assertEqual(response.id, "call-1")
                    self.assertEqual(response.parameters["seed"].int64_param, 7)
                    self.assertEqual(response.parameters["steps"].int64_param, steps)
                    self.assertEqual(len(response.outputs), 1)
                    image = response.outputs[0]
                    self.assertEqual((image.name, image.datatype, list(image.shape)), ("image", "UINT8", [3, 32, 32, 1]))
                    self.assertEqual(len(response.raw_output_contents), 1)
                    pixels = response.raw_output_contents[0]
                    self.assertEqual(len(pixels), 3 * 32 * 32)
                    self.assertEqual(pixels, self.generate_raw("fashion-mnist-tcm", 3, steps, 7, 3))
                    self.assertGreater(len(set(pixels)), 10)  # an image, not a constant

    def test_infer_without_seed_returns_the_one_it_used(self):
        response = self.infer(self.class_request("fashion-mnist-ct", [5]))
        seed = response.parameters["seed"].int64_param
        self.assertEqual(response.raw_output_contents[0],
                         self.generate_raw("fashion-mnist-ct", 5, response.parameters["steps"].int64_param, seed, 1))

    def test_errors_name_the_tensor_or_parameter(self):
        code, details = self.infer_error(self.class_request("fashion-mnist-tcm", [3, 10], 1, 7))
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("class_label", details)
        code, details = self.infer_error(self.class_request("fashion-mnist-tcm", [3], 3, 7))
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("steps", details)
        request = self.class_request("fashion-mnist-tcm", [3], 1, 7)
        request.parameters["temperature"].double_param = 0.5
        code, details = self.infer_error(request)
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("temperature", details)
        code, details = self.infer_error(PB.ModelInferRequest(model_name="fashion-mnist-tcm"))
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("class_label", details)
        request = self.class_request("fashion-mnist-tcm", [3, 4], 1, 7)
        request.inputs[0].datatype = "FP32"
        code, details = self.infer_error(request)
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("INT64", details)
        code, _ = self.infer_error(self.class_request("nope", [3]))
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND)
        request = self.class_request("fashion-mnist-tcm", [3])
        request.model_version = "2"
        code, _ = self.infer_error(request)
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND)


class RestTest(ServerTest):
    """The protocol's REST form on --http_port."""

    def http(self, method, path, body=None, host="127.0.0.1"):
        """(status, parsed JSON or text, content type) of one request."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        request = urllib.request.Request(f"http://{host}:{SERVER.http_port}{path}", data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                status, raw, kind = response.status, response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as error:
            status, raw, kind = error.code, error.read(), error.headers.get("Content-Type", "")
        return status, (json.loads(raw) if kind.startswith("application/json") else raw.decode()), kind

    def test_health_and_metadata(self):
        self.assertEqual(self.http("GET", "/v2/health/live")[:2], (200, {"live": True}))
        self.assertEqual(self.http("GET", "/v2/health/ready")[:2], (200, {"ready": True}))
        status, server, _ = self.http("GET", "/v2")
        self.assertEqual(status, 200)
        self.assertEqual(server["name"], "tcm-serve")
        self.assertRegex(server["version"], r"^\d+\.\d+\.\d+$")
        status, model, _ = self.http("GET", "/v2/models/fashion-mnist-tcm")
        self.assertEqual(status, 200)
        self.assertEqual(model, {"name": "fashion-mnist-tcm", "versions": ["1"], "platform": "tcm_libtorch",
                                 "inputs": [{"name": "class_label", "datatype": "INT64", "shape": [-1]}],
                                 "outputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, 32, 32, 1]}]})
        self.assertEqual(self.http("GET", "/v2/models/fashion-mnist-ct/versions/1")[1]["name"], "fashion-mnist-ct")
        self.assertEqual(self.http("GET", "/v2/models/fashion-mnist-ct/ready")[:2], (200, {"ready": True}))
        status, error, _ = self.http("GET", "/v2/models/nope/ready")
        self.assertEqual(status, 404)
        self.assertIn("nope", error["error"])
        self.assertEqual(self.http("GET", "/v2/models/fashion-mnist-tcm/versions/2")[0], 404)
        self.assertEqual(self.http("GET", "/v2/nothing")[0], 404)
        self.assertEqual(self.http("POST", "/v2/health/live", b"")[0], 405)
        self.assertEqual(self.http("GET", "/v2/models/fashion-mnist-tcm/infer")[0], 405)
        status, metrics, kind = self.http("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(kind.startswith("text/plain"))
        self.assertIn("tcm_requests_total", metrics)

    def test_infer_pixels_equal_tcm_v1_generate(self):
        for steps in (1, 2):
            with self.subTest(steps=steps):
                body = {"id": "rest-1", "parameters": {"steps": steps, "seed": 11},
                        "inputs": [{"name": "class_label", "datatype": "INT64", "shape": [2], "data": [4, 4]}],
                        "outputs": [{"name": "image"}]}
                status, response, _ = self.http("POST", "/v2/models/fashion-mnist-tcm/infer", body)
                self.assertEqual(status, 200, response)
                self.assertEqual(response["model_name"], "fashion-mnist-tcm")
                self.assertEqual(response["id"], "rest-1")
                self.assertEqual(response["parameters"], {"seed": 11, "steps": steps})
                [image] = response["outputs"]
                self.assertEqual((image["name"], image["datatype"], image["shape"]), ("image", "UINT8", [2, 32, 32, 1]))
                self.assertEqual(bytes(image["data"]), generate_raw(self.channel, "fashion-mnist-tcm", 4, steps, 11, 2))

    def test_infer_errors(self):
        path = "/v2/models/fashion-mnist-tcm/infer"
        cases = [
            ({"inputs": [{"name": "class_label", "datatype": "INT64", "shape": [1], "data": [10]}]}, 400, "class_label"),
            ({"inputs": [{"name": "class_label", "datatype": "INT64", "shape": [1], "data": ["x"]}]}, 400,
             "inputs[0].data"),
            ({"parameters": {"steps": 5},
              "inputs": [{"name": "class_label", "datatype": "INT64", "shape": [1], "data": [1]}]}, 400, "steps"),
            ({"inputs": []}, 400, "class_label"),
            ({"input": []}, 400, "input"),
            (b"{not json", 400, "body"),
            (b"[" * 60000, 400, "nested deeper"),
        ]
        for body, code, named in cases:
            with self.subTest(body=str(body)[:60]):
                status, error, kind = self.http("POST", path, body)
                self.assertEqual(status, code, error)
                self.assertEqual(kind, "application/json")
                self.assertIn(named, error["error"])
        status, _, _ = self.http("POST", "/v2/models/nope/infer", {"inputs": []})
        self.assertEqual(status, 404)
        # A body over the limit (64 KiB) is refused from its declared length, before it is sent.
        with socket.create_connection(("127.0.0.1", SERVER.http_port), timeout=300) as connection:
            connection.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {5 << 20}\r\n\r\n".encode())
            reply = b""
            while chunk := connection.recv(65536):
                reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 413"), head)
        self.assertIn("limit", json.loads(body)["error"])

    def test_generate_png_has_the_pixels_of_tcm_v1(self):
        status, _, kind = self.http_bytes("/v1/models/fashion-mnist-tcm/generate?class=3&steps=2&seed=7")
        self.assertEqual(kind, "image/png")
        png = self.last_body
        self.assertEqual(status, 200)
        self.assertEqual(decode_png(png), (32, 32, 1, generate_raw(self.channel, "fashion-mnist-tcm", 3, 2, 7, 1)))
        # Four images: one 2 x 2 grid, image i at row i // 2, column i % 2.
        status, _, _ = self.http_bytes("/v1/models/fashion-mnist-tcm/generate?class=5&steps=1&seed=9&num=4")
        self.assertEqual(status, 200)
        width, height, channels, grid = decode_png(self.last_body)
        self.assertEqual((width, height, channels), (64, 64, 1))
        raw = generate_raw(self.channel, "fashion-mnist-tcm", 5, 1, 9, 4)
        for i in range(4):
            image = raw[i * 1024:(i + 1) * 1024]
            cell = b"".join(grid[(32 * (i // 2) + y) * 64 + 32 * (i % 2):][:32] for y in range(32))
            self.assertEqual(cell, image, f"image {i}")
        for query, named in (("class=10", "query 'class'"), ("steps=3", "steps"), ("num=x", "num"),
                             ("color=red", "color")):
            with self.subTest(query=query):
                status, error, _ = self.http("GET", f"/v1/models/fashion-mnist-tcm/generate?{query}")
                self.assertEqual(status, 400)
                self.assertIn(named, error["error"])
        self.assertEqual(self.http("GET", "/v1/models/nope/generate")[0], 404)

    def test_stream_sends_previews_then_finals_with_tcm_v1_pixels(self):
        status, _, kind = self.http_bytes("/v1/models/fashion-mnist-tcm/stream?class=4&steps=2&seed=21&num=3&preview=1")
        self.assertEqual((status, kind), (200, "application/x-ndjson"))
        lines = [json.loads(line) for line in self.last_body.decode().splitlines()]
        self.assertEqual(lines[-1], {"end": True, "status": "OK", "model": "fashion-mnist-tcm", "steps": 2,
                                     "seed": "21"})
        images = lines[:-1]
        self.assertEqual(sorted((line["index"], line["preview"]) for line in images),
                         [(i, p) for i in range(3) for p in (False, True)])
        finals, previews = generate_raw(self.channel, "fashion-mnist-tcm", 4, 2, 21, 3), \
            generate_raw(self.channel, "fashion-mnist-tcm", 4, 1, 21, 3)
        for position, line in enumerate(images):
            i = line["index"]
            self.assertEqual(line["class"], 4)
            if line["preview"]:  # the first step's result, before that image's final one
                self.assertIn({"index": i, "preview": False}, [{"index": later["index"], "preview": later["preview"]}
                                                               for later in images[position + 1:]])
            expected = (previews if line["preview"] else finals)[i * 1024:(i + 1) * 1024]
            self.assertEqual(decode_png(base64.b64decode(line["png"])), (32, 32, 1, expected), line["index"])
        for query, named in (("preview=2", "preview"), ("class=10", "query 'class'"), ("size=3", "size")):
            with self.subTest(query=query):
                status, error, _ = self.http("GET", f"/v1/models/fashion-mnist-tcm/stream?{query}")
                self.assertEqual(status, 400)
                self.assertIn(named, error["error"])

    def test_model_list_names_every_model_with_its_classes(self):
        status, listing, _ = self.http("GET", "/v1/models")
        self.assertEqual(status, 200)
        self.assertEqual([m["name"] for m in listing["models"]], ["fashion-mnist-ct", "fashion-mnist-tcm"])
        self.assertEqual(listing["models"][1]["class_names"][3], "Dress")
        self.assertEqual(listing["models"][1]["num_classes"], 10)
        self.assertEqual(listing["max_images_per_request"], 64)
        self.assertEqual(sum(m["is_default"] for m in listing["models"]), 1)

    def http_bytes(self, path):
        """(status, None, content type) of a GET; the body is kept in self.last_body."""
        with urllib.request.urlopen(f"http://127.0.0.1:{SERVER.http_port}{path}", timeout=300) as response:
            self.last_body = response.read()
            return response.status, None, response.headers.get("Content-Type", "")

    def test_ipv6_loopback(self):
        try:  # the host's IPv6 loopback on its own, not the server's port
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
                probe.bind(("::1", 0))
        except OSError:
            self.skipTest("no IPv6 loopback on this host")
        self.assertEqual(self.http("GET", "/v2/health/live", host="[::1]")[:2], (200, {"live": True}))


class AccessLogTest(ServerTest):
    """--access_log: one JSON line per call, gRPC and HTTP alike."""

    KEYS = {"time", "peer", "protocol", "method", "model", "steps", "images", "status", "queue_seconds",
            "compute_seconds", "total_seconds"}

    def wait_for_line(self, **fields):
        """The first line whose values include `fields`; every line read must be complete JSON with every key."""
        deadline = time.monotonic() + 60  # HTTP lines are written once the response is out
        while True:
            with open(SERVER.access_log) as f:
                lines = [json.loads(line) for line in f]
            for line in lines:
                self.assertTrue(self.KEYS <= set(line), line)
            found = [line for line in lines if all(line.get(k) == v for k, v in fields.items())]
            if found or time.monotonic() > deadline:
                self.assertTrue(found, f"no line with {fields} in:\n" + "\n".join(map(json.dumps, lines)))
                return found[0]
            time.sleep(0.05)

    def test_grpc_and_http_calls_each_write_a_line(self):
        generate_raw(self.channel, "fashion-mnist-tcm", 4, 2, 11, 7)
        line = self.wait_for_line(method="/tcm.v1.TcmService/Generate", images=7)
        self.assertEqual((line["protocol"], line["model"], line["steps"], line["status"]),
                         ("grpc", "fashion-mnist-tcm", 2, "OK"))
        self.assertRegex(line["peer"], r"^ipv4:127\.0\.0\.1:\d+$")
        self.assertRegex(line["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
        self.assertGreater(line["compute_seconds"], 0)
        self.assertGreaterEqual(line["total_seconds"], line["compute_seconds"])

        body = json.dumps({"inputs": [{"name": "class_label", "datatype": "INT64", "shape": [6],
                                       "data": [1, 2, 3, 4, 5, 6]}]}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{SERVER.http_port}/v2/models/fashion-mnist-ct/infer",
                                         data=body, method="POST")
        with urllib.request.urlopen(request, timeout=300) as response:
            self.assertEqual(response.status, 200)
        line = self.wait_for_line(path="/v2/models/fashion-mnist-ct/infer", images=6)
        self.assertEqual((line["protocol"], line["method"], line["model"], line["steps"], line["status"]),
                         ("http", "POST", "fashion-mnist-ct", 1, "200"))
        self.assertGreater(line["compute_seconds"], 0)

        with self.assertRaises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{SERVER.http_port}/v2/models/no-such-model", timeout=60)
        self.assertEqual(refused.exception.code, 404)
        line = self.wait_for_line(path="/v2/models/no-such-model")
        self.assertEqual((line["status"], line["model"], line["images"]), ("404", "", 0))

        rpc = self.channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                       request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=PB.ModelInferResponse.FromString)
        with self.assertRaises(grpc.RpcError) as error:
            rpc(PB.ModelInferRequest(model_name="no-such-model"), timeout=60)
        self.assertEqual(error.exception.code(), grpc.StatusCode.NOT_FOUND)
        line = self.wait_for_line(method="/inference.GRPCInferenceService/ModelInfer", status="NOT_FOUND")
        self.assertEqual((line["protocol"], line["images"]), ("grpc", 0))


def main():
    global ARGS, PB, V1
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="the tcm-server binary")
    parser.add_argument("--models", required=True, help="a model repository holding fashion-mnist-tcm and -ct")
    parser.add_argument("--proto_dir", required=True, help="the project's proto/ folder")
    ARGS, rest = parser.parse_known_args()
    out_dir = tempfile.mkdtemp()
    try:
        PB, V1 = compile_protos(ARGS.proto_dir, out_dir)
        unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
    finally:
        shutil.rmtree(out_dir)


if __name__ == "__main__":
    main()
