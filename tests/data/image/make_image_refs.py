#!/usr/bin/python3
"""Generates the reference data for tests/image (run with Debian's /usr/bin/python3:
Pillow 9.4.0 + numpy 1.24.2, the versions the HF fixtures were made with).

  /usr/bin/python3 tests/data/image/make_image_refs.py [PREPROCESS_336_A_DIR]

Writes, next to this script:
  preprocess-336-a.json  SHA-256 of the uint8 tensors (decoded_u8, resized_u8, pad.resized_u8) and of
                         both pixel_values tensors, plus sampled pixel_values (flat NCHW index -> float32
                         bits as hex), taken from the fixture's reference.safetensors.
  tiny-pixel-values.json the full pixel_values of the tiny llava/clip fixtures (base64 of float32 LE).
  decode/*               small PNG/JPEG files covering every colour type we convert, and
  decode-refs.json       SHA-256 of PIL's np.asarray(Image.open(f).convert('RGB')) for each, and of
                         ImageOps.exif_transpose(...) for the EXIF ones.
The photos themselves (astronaut.png, chelsea.png, coffee.png, coffee_q90.jpg) are copied verbatim.
"""
import base64, hashlib, io, json, os, shutil, struct, sys, zlib

import numpy as np
from PIL import Image, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_DATA = os.path.dirname(HERE)
FIXTURE = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/fixtures/preprocess-336-a"

DTYPES = {"F32": np.float32, "F64": np.float64, "U8": np.uint8, "I64": np.int64}


def read_safetensors(path):
    """Hand parser: 8-byte LE header length, JSON header, raw little-endian data."""
    with open(path, "rb") as f:
        blob = f.read()
    (hlen,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + hlen])
    base = 8 + hlen
    out = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        raw = blob[base + begin:base + end]
        arr = np.frombuffer(raw, dtype=np.dtype(DTYPES[meta["dtype"]]).newbyteorder("<"))
        out[key] = (arr.reshape(meta["shape"]), raw)
    return out


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def float_hex(v):
    return "%08x" % struct.unpack("<I", struct.pack("<f", float(v)))[0]


def make_preprocess_refs():
    names = ["astronaut", "chelsea", "coffee", "coffee_q90"]
    files = {"astronaut": "astronaut.png", "chelsea": "chelsea.png", "coffee": "coffee.png",
             "coffee_q90": "coffee_q90.jpg"}
    for f in files.values():
        shutil.copyfile(os.path.join(FIXTURE, f), os.path.join(HERE, f))
    meta = json.load(open(os.path.join(FIXTURE, "reference.json")))
    tensors = read_safetensors(os.path.join(FIXTURE, "reference.safetensors"))
    rng = np.random.RandomState(1234)
    out = {"source": "preprocess-336-a/reference.safetensors", "images": {}}
    for inp in meta["inputs"]:
        name = inp["name"]
        entry = {"file": files[name], "size_wh": inp["size_wh"],
                 "hf": {"resized_hw": inp["hf"]["resized_hw"], "crop_top_left": inp["hf"]["crop_top_left"]},
                 "pad": {"square_side": inp["pad"]["square_side"],
                         "paste_offset_xy": inp["pad"]["paste_offset_xy"]}}
        for variant, prefix in (("hf", name + "."), ("pad", name + ".pad.")):
            arr, raw = tensors[prefix + "resized_u8"]
            entry[variant]["resized_u8_shape"] = list(arr.shape)
            entry[variant]["resized_u8_sha256"] = sha256(raw)
            pv, pv_raw = tensors[prefix + "pixel_values"]
            entry[variant]["pixel_values_sha256"] = sha256(pv_raw)
            flat = pv.reshape(-1)
            idx = np.sort(rng.choice(flat.size, 300, replace=False))
            entry[variant]["pixel_value_samples"] = {str(int(i)): float_hex(flat[i]) for i in idx}
        if name + ".decoded_u8" in tensors:
            arr, raw = tensors[name + ".decoded_u8"]
            entry["decoded_u8_shape"] = list(arr.shape)
            entry["decoded_u8_sha256"] = sha256(raw)
        out["images"][name] = entry
    with open(os.path.join(HERE, "preprocess-336-a.json"), "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")


def make_tiny_refs():
    out = {"encoding": "base64 of float32 little-endian, NCHW [3, 56, 56] per image", "images": {}}
    llava = read_safetensors(os.path.join(REPO_DATA, "llava-tiny-s0", "reference.safetensors"))
    clip = read_safetensors(os.path.join(REPO_DATA, "clip-tiny-s0", "reference.safetensors"))
    for i in range(3):
        arr, raw = llava["ex%d.pixel_values" % i]
        assert arr.shape == (1, 3, 56, 56)
        out["images"]["llava-tiny-s0/image%d.png" % i] = base64.b64encode(raw).decode()
    arr, raw = clip["pixel_values"]
    assert arr.shape == (3, 3, 56, 56)
    per = len(raw) // 3
    for i in range(3):
        out["images"]["clip-tiny-s0/image%d.png" % i] = base64.b64encode(raw[i * per:(i + 1) * per]).decode()
    with open(os.path.join(HERE, "tiny-pixel-values.json"), "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")


def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def write_png_raw(path, width, height, bit_depth, colour_type, rows, extra_chunks=()):
    """Hand-written PNG (filter 0 on every row) so that we control bit depth and colour type."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    raw = b"".join(b"\x00" + r for r in rows)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    for tag, payload in extra_chunks:
        data += png_chunk(tag, payload)
    data += png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def pack_bits(values, bits):
    out, acc, n = bytearray(), 0, 0
    for v in values:
        acc = (acc << bits) | int(v)
        n += bits
        if n == 8:
            out.append(acc)
            acc, n = 0, 0
    if n:
        out.append(acc << (8 - n))
    return bytes(out)


def make_decode_refs():
    d = os.path.join(HERE, "decode")
    os.makedirs(d, exist_ok=True)
    rng = np.random.RandomState(7)
    W, H = 7, 5  # odd, non-square: catches transposed or mirrored indexing
    refs = {}

    def ref(fname, exif=False):
        im = Image.open(os.path.join(d, fname))
        entry = {"pil_mode": im.mode}
        rgb = np.asarray(im.convert("RGB"))
        entry.update({"width": rgb.shape[1], "height": rgb.shape[0], "sha256": sha256(rgb.tobytes())})
        if exif:
            t = np.asarray(ImageOps.exif_transpose(Image.open(os.path.join(d, fname))).convert("RGB"))
            entry["exif_transposed"] = {"width": t.shape[1], "height": t.shape[0], "sha256": sha256(t.tobytes())}
        refs[fname] = entry

    # PNG, every colour type / bit depth combination PIL handles.
    for bits in (1, 2, 4, 8):
        vals = rng.randint(0, 1 << bits, size=(H, W))
        write_png_raw(os.path.join(d, "grey%d.png" % bits), W, H, bits, 0, [pack_bits(r, bits) for r in vals])
        ref("grey%d.png" % bits)
    # 16-bit grey: PIL opens it as mode I and convert('RGB') clips to 0..255 (it does NOT take the high
    # byte), so include values below and above 255.
    g16 = rng.randint(0, 65536, size=(H, W)).astype(">u2")
    g16[0, :4] = [0, 100, 255, 256]
    write_png_raw(os.path.join(d, "grey16.png"), W, H, 16, 0, [r.tobytes() for r in g16])
    ref("grey16.png")
    write_png_raw(os.path.join(d, "grey8_trns.png"), W, H, 8, 0,
                  [r.astype(np.uint8).tobytes() for r in rng.randint(0, 256, size=(H, W))],
                  [(b"tRNS", struct.pack(">H", 17))])
    ref("grey8_trns.png")
    for bits, dt in ((8, ">u1"), (16, ">u2")):
        top = (1 << bits)
        write_png_raw(os.path.join(d, "greyalpha%d.png" % bits), W, H, bits, 4,
                      [r.tobytes() for r in rng.randint(0, top, size=(H, W * 2)).astype(dt)])
        ref("greyalpha%d.png" % bits)
        write_png_raw(os.path.join(d, "rgb%d.png" % bits), W, H, bits, 2,
                      [r.tobytes() for r in rng.randint(0, top, size=(H, W * 3)).astype(dt)])
        ref("rgb%d.png" % bits)
        write_png_raw(os.path.join(d, "rgba%d.png" % bits), W, H, bits, 6,
                      [r.tobytes() for r in rng.randint(0, top, size=(H, W * 4)).astype(dt)])
        ref("rgba%d.png" % bits)
    write_png_raw(os.path.join(d, "rgb8_trns.png"), W, H, 8, 2,
                  [r.tobytes() for r in rng.randint(0, 256, size=(H, W * 3)).astype(np.uint8)],
                  [(b"tRNS", struct.pack(">HHH", 1, 2, 3))])
    ref("rgb8_trns.png")
    for bits in (1, 2, 4, 8):
        n = 1 << bits
        palette = rng.randint(0, 256, size=n * 3).astype(np.uint8).tobytes()
        trns = bytes(rng.randint(0, 256, size=n).astype(np.uint8))
        vals = rng.randint(0, n, size=(H, W))
        write_png_raw(os.path.join(d, "palette%d.png" % bits), W, H, bits, 3, [pack_bits(r, bits) for r in vals],
                      [(b"PLTE", palette), (b"tRNS", trns)])
        ref("palette%d.png" % bits)
    # Indices past the end of PLTE: PIL's palette keeps its initial grey ramp there (i -> (i, i, i)).
    write_png_raw(os.path.join(d, "palette4_short_plte.png"), 4, 1, 4, 3, [pack_bits([0, 1, 5, 15], 4)],
                  [(b"PLTE", bytes([10, 20, 30, 40, 50, 60]))])
    ref("palette4_short_plte.png")

    # JPEG: grey, CMYK (PIL writes Adobe inverted CMYK), progressive 4:4:4 RGB.
    big = rng.randint(0, 256, size=(19, 23, 4)).astype(np.uint8)
    Image.fromarray(big[:, :, 0], "L").save(os.path.join(d, "grey.jpg"), quality=85)
    ref("grey.jpg")
    Image.fromarray(big, "CMYK").save(os.path.join(d, "cmyk.jpg"), quality=90)
    ref("cmyk.jpg")
    Image.fromarray(big[:, :, :3], "RGB").save(os.path.join(d, "rgb444_progressive.jpg"), quality=80,
                                               subsampling=0, progressive=True)
    ref("rgb444_progressive.jpg")
    Image.fromarray(big[:, :, :3], "RGB").save(os.path.join(d, "rgb422.jpg"), quality=75, subsampling=1)
    ref("rgb422.jpg")

    # EXIF orientation 1..8 on a non-square JPEG (little-endian TIFF as PIL writes it) ...
    smooth = np.zeros((24, 40, 3), np.uint8)
    yy, xx = np.mgrid[0:24, 0:40]
    smooth[..., 0] = xx * 6
    smooth[..., 1] = yy * 10
    smooth[..., 2] = 255 - xx * 3
    smooth[2:6, 3:9] = (255, 255, 0)  # an asymmetric marker
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        exif[0x010F] = "p2dpo test"  # a second tag so the orientation is not the only IFD entry
        Image.fromarray(smooth).save(os.path.join(d, "exif_o%d.jpg" % o), quality=95, exif=exif.tobytes())
        ref("exif_o%d.jpg" % o, exif=True)
    # ... a big-endian ("MM") TIFF written by hand ...
    tiff_mm = b"MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + b"\x00" * 4
    Image.fromarray(smooth).save(os.path.join(d, "exif_mm_o6.jpg"), quality=95, exif=b"Exif\x00\x00" + tiff_mm)
    ref("exif_mm_o6.jpg", exif=True)
    # ... and a PNG eXIf chunk.
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(smooth).save(os.path.join(d, "exif_o8.png"), exif=exif.tobytes())
    ref("exif_o8.png", exif=True)

    with open(os.path.join(HERE, "decode-refs.json"), "w") as f:
        json.dump(refs, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    make_preprocess_refs()
    make_tiny_refs()
    make_decode_refs()
