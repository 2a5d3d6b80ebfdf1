"""Serve one ONNX classifier from NVIDIA Triton Inference Server through PyTriton, with dynamic
batching, over the Open Inference Protocol v2 (Triton's HTTP endpoint):

    python3 deploy/triton/serve_pytriton.py --model-name full --model-file models/fashion-mnist/full.onnx \
        --http-port 8000

and point the edge at it: `cachenet-edge --model-dir models/fashion-mnist --full-model
oip+http://127.0.0.1:8000/full`. Triton batches frames from many edge workers (up to
--max-batch, waiting at most --queue-delay-us); the model runs on onnxruntime (CUDA first when
the onnxruntime build has it). Triton lists the input shape without the batch dimension; the
edge accepts that. The shipped full models are exported with a batch of one: a batch Triton
forms is run item by item (the queueing is shared, the model runs are not); a model exported
with a dynamic batch axis runs each batch at once.
"""

import argparse
import signal

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-name", required=True)
    ap.add_argument("--model-file", required=True)
    ap.add_argument("--http-port", type=int, default=8000)
    ap.add_argument("--grpc-port", type=int, default=8001)
    ap.add_argument("--metrics-port", type=int, default=8002)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--queue-delay-us", type=int, default=2000)
    args = ap.parse_args()

    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                 if p in ort.get_available_providers()]
    session = ort.InferenceSession(args.model_file, providers=providers)
    inp = session.get_inputs()[0]
    out = session.get_outputs()[0]
    item_shape = tuple(int(d) for d in inp.shape[1:])
    classes = int(out.shape[-1])

    # A graph exported with a batch of one (the shipped full models are) runs a batch Triton
    # formed item by item; one with a dynamic batch axis runs it at once.
    fixed_one = inp.shape[0] == 1

    @batch
    def infer(**inputs):
        x = inputs[inp.name].astype(np.float32, copy=False)
        if fixed_one:
            y = np.concatenate([session.run([out.name], {inp.name: x[i:i + 1]})[0]
                                for i in range(x.shape[0])])
        else:
            y = session.run([out.name], {inp.name: x})[0]
        return {out.name: y.astype(np.float32)}

    config = TritonConfig(http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port)
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.model_name,
            infer_func=infer,
            inputs=[Tensor(name=inp.name, dtype=np.float32, shape=item_shape)],
            outputs=[Tensor(name=out.name, dtype=np.float32, shape=(classes,))],
            config=ModelConfig(
                max_batch_size=args.max_batch,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us),
            ),
            strict=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: triton.stop())
        triton.serve()


if __name__ == "__main__":
    main()
