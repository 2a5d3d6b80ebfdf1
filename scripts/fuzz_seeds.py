"""Seed corpora of the fuzz targets, under the folder given (the committed ones: fuzz/seeds,
`python3 scripts/fuzz_seeds.py fuzz/seeds`; the manifest target's seeds are the repository's
manifests):
- infer_request: valid InferRequest bodies (a raw 8x8 gray frame of each brightness class of the
  tiny fixture, and PNG-encoded frames);
- infer_response: valid InferResponse bodies for the tiny fixture's and the shipped set's
  manifests (each class, each submodel with its sha256);
- frame_mapping: each supported format at a few sizes, strides and model sizes, with a region.
Protobuf is written by hand."""
import io
import json
import os
import struct
import sys

from PIL import Image


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num: int, wire: int, payload: bytes) -> bytes:
    key = varint(num << 3 | wire)
    return key + (varint(len(payload)) + payload if wire == 2 else payload)


def request(image_field: int, image: bytes, rid: str) -> bytes:
    return (field(1, 0, varint(1)) + field(2, 2, rid.encode()) + field(image_field, 2, image)
            + field(5, 2, varint(0) + varint(1)))


def raw(value: int) -> bytes:
    return field(1, 2, bytes([value]) * 64) + field(2, 0, varint(8)) + field(3, 0, varint(8)) \
        + field(4, 0, varint(1))


def png(value: int, size=(32, 24), mode="L") -> bytes:
    b = io.BytesIO()
    Image.new(mode, size, value if mode == "L" else (value, value // 2, 255 - value)).save(b, "PNG")
    return b.getvalue()


def requests(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    for v in (20, 100, 180, 240):
        open(os.path.join(out, f"raw-{v}"), "wb").write(request(3, raw(v), f"raw-{v}"))
        open(os.path.join(out, f"png-{v}"), "wb").write(request(4, png(v), f"png-{v}"))
    open(os.path.join(out, "png-rgb"), "wb").write(request(4, png(90, (40, 30), "RGB"), "rgb"))


def response(classes: int, cls: int, sub: dict) -> bytes:
    probs = [0.02 / max(classes - 1, 1)] * classes
    probs[cls] = 0.98
    packed = b"".join(struct.pack("<f", p) for p in probs)
    return (field(1, 2, b"seed") + field(2, 0, varint(cls)) + field(3, 2, b"label")
            + field(4, 2, packed) + field(5, 5, struct.pack("<f", 0.12))
            + field(6, 0, varint(sub["id"])) + field(7, 2, sub["sha256"].encode()))


def responses(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    root = os.path.join(os.path.dirname(__file__), "..")
    for name, d in (("tiny", "tests/fixtures/tiny"), ("fmnist", "models/fashion-mnist")):
        m = json.load(open(os.path.join(root, d, "manifest.json")))
        classes = len(m["labels"])
        for i, sub in enumerate(m["submodels"]):
            cls = i % classes
            open(os.path.join(out, f"{name}-{sub['id']}"), "wb").write(response(classes, cls, sub))


# frame_mapping's parameter bytes: format index, width-1, height-1, row padding of three planes,
# model width-1, model height-1, color (bit 0: RGB), region x, y, w, h, last-row/cut flags.
FORMATS = 11


def frames(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    for f in range(FORMATS):
        for w, h, pad, flags in ((16, 12, 0, 0), (31, 17, 5, 1), (47, 47, 12, 3)):
            params = bytes([f, w - 1, h - 1, pad, pad // 2, pad, 27, 27, f & 1, 3, 2, w // 2, h // 2,
                            flags])
            pixels = bytes((x * 37 + f * 11) % 256 for x in range(97))
            open(os.path.join(out, f"format{f}-{w}x{h}"), "wb").write(params + pixels)


def main(root: str) -> None:
    requests(os.path.join(root, "infer_request"))
    responses(os.path.join(root, "infer_response"))
    frames(os.path.join(root, "frame_mapping"))


if __name__ == "__main__":
    main(sys.argv[1])
