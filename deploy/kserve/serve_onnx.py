"""Serve one ONNX classifier over the Open Inference Protocol v2 with KServe's model server.

A CacheNet edge started with `--full-model oip+http://HOST:PORT/MODEL` sends it the full
model's input tensor and reads back its output (binary tensors when asked for):

    python3 deploy/kserve/serve_onnx.py --model_name full --model_file models/fashion-mnist/full.onnx \
        --http_port 8080 --enable_grpc false

The model runs on onnxruntime (CPU; `--providers CUDAExecutionProvider,CPUExecutionProvider`
on a GPU build). The metadata endpoint (`GET /v2/models/MODEL`) lists the ONNX graph's input and
output with their shapes, which the edge checks against the set's manifest at start.
"""

import argparse

import kserve
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve import model_server

_DTYPES = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(double)": "FP64"}


def _meta(arg):
    shape = [d if isinstance(d, int) else -1 for d in arg.shape]
    return {"name": arg.name, "datatype": _DTYPES.get(arg.type, arg.type), "shape": shape}


class OnnxClassifier(Model):
    def __init__(self, name, path, providers):
        super().__init__(name)
        self.path = path
        self.providers = providers
        self.session = None
        self.load()

    def load(self):
        opts = ort.SessionOptions()
        self.session = ort.InferenceSession(self.path, opts, providers=self.providers)
        self.input = self.session.get_inputs()[0]
        self.outputs = self.session.get_outputs()
        self.ready = True
        return self.ready

    def get_input_types(self):
        return [_meta(self.input)]

    def get_output_types(self):
        return [_meta(o) for o in self.outputs]

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        inp = payload.inputs[0]
        x = inp.as_numpy().astype(np.float32, copy=False)
        results = self.session.run([o.name for o in self.outputs], {self.input.name: x})
        binary = bool(payload.parameters and payload.parameters.get("binary_data_output"))
        if payload.request_outputs:
            binary = binary or any(
                (o.parameters or {}).get("binary_data", False) for o in payload.request_outputs
            )
        outputs = []
        for meta, value in zip(self.outputs, results):
            out = InferOutput(name=meta.name, shape=list(value.shape), datatype="FP32")
            out.set_data_from_numpy(value.astype(np.float32, copy=False), binary_data=binary)
            outputs.append(out)
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=binary,
        )


def main():
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_file", required=True, help="the ONNX file")
    parser.add_argument(
        "--providers",
        default="CPUExecutionProvider",
        help="onnxruntime execution providers, comma-separated, in order of preference",
    )
    args, _ = parser.parse_known_args()  # --model_name is one of KServe's own arguments
    model = OnnxClassifier(args.model_name, args.model_file, args.providers.split(","))
    ModelServer().start([model])


if __name__ == "__main__":
    main()
