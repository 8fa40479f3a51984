#!/usr/bin/python3
"""An independent Open Inference Protocol client against a real tcm-server.

Debian's python3-grpcio with the project's .proto compiled here by protoc: no
generated C++ in the loop. Checks every RPC of inference.GRPCInferenceService,
the error codes, and that ModelInfer's pixels equal tcm.v1 Generate's raw images
for the same model, class, steps, seed and number of images.

Usage: oip_client_test.py --server BIN --models DIR --proto_dir DIR
"""

import argparse
import importlib
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

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


class Server:
    """tcm-server on free ports; the port is read from its 'serving' line."""

    def __init__(self, binary, models, log_path):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [binary, "--model_repository", models, "--port", "0", "--metrics_port", "0"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.port = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            with open(log_path) as f:
                match = re.search(r"serving .* on port (\d+) ", f.read())
            if match:
                self.port = int(match.group(1))
                return
            time.sleep(0.1)
        self.stop()
        with open(log_path) as f:
            raise RuntimeError("tcm-server did not start:\n" + f.read())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class OpenInferenceProtocolTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp()
        cls.server = Server(ARGS.server, ARGS.models, os.path.join(cls.tmp, "server.log"))
        cls.channel = grpc.insecure_channel(f"127.0.0.1:{cls.server.port}")

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.stop()
        shutil.rmtree(cls.tmp)

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

    def generate_raw(self, model, class_label, steps, seed, num_images):
        request = V1.GenerateRequest(model=model, class_label=class_label, steps=steps, seed=seed,
                                     num_images=num_images, format=V1.IMAGE_FORMAT_RAW)
        response = self.call("tcm.v1.TcmService", "Generate", request, V1.GenerateResponse)
        return b"".join(image.data for image in sorted(response.images, key=lambda i: i.index))

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
