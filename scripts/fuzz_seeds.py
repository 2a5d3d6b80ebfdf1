"""Seed corpus for the infer_request fuzz target: valid InferRequest bodies (a raw 8x8 gray frame
of each brightness class of the tiny fixture, and PNG-encoded frames), protobuf written by hand."""
import io
import os
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


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    for v in (20, 100, 180, 240):
        open(os.path.join(out, f"raw-{v}"), "wb").write(request(3, raw(v), f"raw-{v}"))
        open(os.path.join(out, f"png-{v}"), "wb").write(request(4, png(v), f"png-{v}"))
    open(os.path.join(out, "png-rgb"), "wb").write(request(4, png(90, (40, 30), "RGB"), "rgb"))


if __name__ == "__main__":
    main(sys.argv[1])
