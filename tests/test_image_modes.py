"""One picture in every pixel mode Pillow writes in the formats convlens reads must be the same picture
to convlens: the same prediction from `convlens predict`, from an image folder and from the explorer's
upload. And deeper pixels (16- and 32-bit integers, floats) are scaled into 0–255, not clipped.

The picture: Fashion-MNIST test image 159, a Dress the small run (conftest.small_run) calls a Dress at
95 %, upscaled 4× and inverted, so it is dark on white like a photo. Saved as 16 bits (×257) and
clipped, it used to be a black silhouette and a Shirt.
"""

import io
import shutil

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

from convlens import views
from convlens.evaluate import predict
from convlens.folders import FolderFiles
from convlens.images import prepare_image, stretch_image, to_8bit

DRESS, DRESS_CLASS = 159, 3
SIZE = (28, 28)

# (mode, format) for every mode Pillow writes in an accepted format, as far as the file then still
# holds the picture. Left out: LA as GIF and P-with-transparency or RGBA as BMP (the alpha is lost:
# GIF's writer drops LA's, BMP has none), and 16-bit ×257 as GIF or WebP (Pillow's writer clips to 255).
FILE_CASES = [("1", f) for f in ("PNG", "JPEG", "BMP", "GIF", "WEBP")] + \
             [("L", f) for f in ("PNG", "JPEG", "BMP", "GIF", "WEBP")] + \
             [("LA", "PNG"), ("LA", "WEBP"), ("P", "PNG"), ("P", "BMP"), ("P", "GIF"), ("P", "WEBP"),
              ("P+transparency", "PNG"), ("P+transparency", "GIF"), ("P+transparency", "WEBP")] + \
             [("RGB", f) for f in ("PNG", "JPEG", "BMP", "GIF", "WEBP")] + \
             [("RGBA", "PNG"), ("RGBA", "GIF"), ("RGBA", "WEBP"), ("CMYK", "JPEG"), ("CMYK", "WEBP"),
              ("YCbCr", "JPEG"), ("RGBX", "JPEG"), ("I;16", "PNG"), ("I;16x257", "PNG"), ("EXIF-rotated", "JPEG")]
# Modes no accepted format stores (Pillow 13 writes I only as GIF or WebP, through its own clipping):
# given to prepare_image and stretch_image as images in memory.
MEMORY_CASES = ["I", "Ix257", "I;16Bx257", "F 0-1", "F 0-255"]
REFERENCE = ("L", "PNG")

# How close each kind of copy comes to the L PNG, measured on the small run (largest |Δ probability|
# over the 10 classes; folder rule: largest and mean |Δ pixel| of the 28×28 input, 0–255):
#   lossless (PNG, BMP, GIF of ≤ 256 greys, 16-bit, I, F): the model's input is identical, Δ 0;
#   lossy (JPEG, WebP, RGBA quantized for GIF): Δp ≤ 0.0014, folder max 9, mean 0.90;
#   bilevel "1" (Floyd–Steinberg dithered; also as JPEG/WebP): Δp ≤ 0.0029, folder max 15, mean 1.67.
TOLERANCE = {"lossless": (1e-6, 0, 0.0), "lossy": (0.01, 16, 2.0), "bilevel": (0.01, 24, 3.0)}


def kind(mode: str, fmt: str) -> str:
    """Which TOLERANCE a copy of the picture gets."""
    if mode == "1":
        return "bilevel"
    return "lossy" if fmt in ("JPEG", "WEBP") or (mode, fmt) == ("RGBA", "GIF") else "lossless"


@pytest.fixture(scope="module")
def dress(real_data) -> Image.Image:
    assert int(real_data.test_y[DRESS]) == DRESS_CLASS
    dark_on_white = 255 - real_data.test_x[DRESS, 0].numpy()
    return Image.fromarray(dark_on_white).resize((112, 112), Image.Resampling.NEAREST)


def pictures(dress: Image.Image) -> dict[str, Image.Image]:
    """The dress in every mode; the transparent ones hide a black background under alpha 0, so a
    reader that forgot the alpha would see a light object on black."""
    a = np.asarray(dress)
    background = a == 255
    cut_out = Image.fromarray(np.where(background, 0, a).astype(np.uint8))
    alpha = Image.fromarray(np.where(background, 0, 255).astype(np.uint8))
    la, rgba = cut_out.convert("LA"), cut_out.convert("RGBA")
    la.putalpha(alpha), rgba.putalpha(alpha)
    indexed = Image.frombytes("P", dress.size, a.tobytes())     # grey palette, but index 255 black and transparent
    indexed.putpalette([v for g in range(255) for v in (g, g, g)] + [0, 0, 0])
    indexed.info["transparency"] = 255
    return {"1": dress.convert("1"), "L": dress, "LA": la, "P": dress.convert("P"), "P+transparency": indexed,
            "RGB": dress.convert("RGB"), "RGBA": rgba, "CMYK": dress.convert("CMYK"),
            "YCbCr": dress.convert("YCbCr"), "RGBX": dress.convert("RGBX"),
            "I;16": Image.fromarray(a.astype(np.uint16)), "I;16x257": Image.fromarray(a.astype(np.uint16) * 257),
            "I": Image.fromarray(a.astype(np.int32)), "Ix257": Image.fromarray(a.astype(np.int32) * 257),
            "I;16Bx257": Image.frombytes("I;16B", dress.size, (a.astype(">u2") * 257).tobytes()),
            "F 0-1": Image.fromarray(a.astype(np.float32) / 255), "F 0-255": Image.fromarray(a.astype(np.float32))}


def encoded(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def exif_rotated(dress: Image.Image) -> bytes:
    """The pixels stored a quarter-turn anticlockwise; Orientation 6 says: turn them clockwise to show."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(dress.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif.tobytes())


@pytest.fixture(scope="module")
def files(tmp_path_factory, dress) -> dict[tuple[str, str], tuple[str, bytes]]:
    """(mode, format) -> (file path, its bytes), all the cases written once."""
    folder, pics = tmp_path_factory.mktemp("modes"), pictures(dress)
    out = {}
    for mode, fmt in FILE_CASES:
        data = exif_rotated(dress) if mode == "EXIF-rotated" else encoded(pics[mode], fmt)
        path = folder / f"dress-{mode.replace(';', '').replace('+', '-')}.{fmt.lower()}"
        path.write_bytes(data)
        out[mode, fmt] = str(path), data
    return out


@pytest.fixture(scope="module")
def model(small_run):
    return small_run.load_model("cpu")


def probabilities(top: list[tuple[str, float]], classes: list[str]) -> np.ndarray:
    """A top-k list over all classes as probabilities in class order."""
    found = dict(top)
    return np.array([found[c] for c in classes])


def same_prediction(p: np.ndarray, ref: np.ndarray, tolerance: float, what: str) -> None:
    assert p.argmax() == ref.argmax() == DRESS_CLASS, (what, p.round(3), ref.round(3))
    assert np.abs(p - ref).max() <= tolerance, (what, float(np.abs(p - ref).max()))


def by_predict(small_run, model, path: str) -> np.ndarray:
    """`convlens predict RUN PATH` in this process: evaluate.predict, by the run's rule."""
    [p] = predict(model, small_run.classes, [path], k=10, rule=small_run.image_rule)
    return probabilities(p.top, small_run.classes)


@pytest.mark.parametrize("mode, fmt", FILE_CASES, ids=[f"{m}-{f}" for m, f in FILE_CASES])
def test_every_mode_is_predicted_alike_by_predict(small_run, model, files, mode, fmt):
    ref = by_predict(small_run, model, files[REFERENCE][0])
    same_prediction(by_predict(small_run, model, files[mode, fmt][0]), ref, TOLERANCE[kind(mode, fmt)][0],
                    f"{mode} {fmt}")


@pytest.mark.parametrize("mode", MEMORY_CASES)
def test_deep_modes_in_memory_become_the_same_input_by_both_rules(small_run, dress, mode):
    """The same model input as the 8-bit picture, so the same prediction, to the last bit."""
    img = pictures(dress)[mode]
    assert img.mode == mode.split()[0].removesuffix("x257")
    looked, ref = views.user_image(small_run, img, mode), views.user_image(small_run, dress, "L")
    assert torch.equal(looked.image, ref.image)
    assert np.array_equal(stretch_image(img, SIZE, 1), stretch_image(dress, SIZE, 1))


@pytest.mark.parametrize("mode, fmt", FILE_CASES, ids=[f"{m}-{f}" for m, f in FILE_CASES])
def test_every_mode_stretches_alike_in_an_image_folder(files, mode, fmt):
    """The folder rule, as folders.FolderFiles decodes a training or test image."""
    _, max_diff, mean_diff = TOLERANCE[kind(mode, fmt)]
    decoded = FolderFiles([files[REFERENCE][0], files[mode, fmt][0]], SIZE, 1)
    (_, ref, ref_error), (_, x, error) = decoded[0], decoded[1]
    assert ref_error == error == "" and x.shape == (1, *SIZE)
    diff = (x.int() - ref.int()).abs().float()
    assert diff.max() <= max_diff and diff.mean() <= mean_diff, (float(diff.max()), float(diff.mean()))


@pytest.fixture(scope="module")
def client(tmp_path_factory, small_run, small_data_dir):
    pytest.importorskip("fastapi", reason="the explorer's dependencies are in requirements.txt")
    from fastapi.testclient import TestClient
    from convlens.server import create_app
    runs = tmp_path_factory.mktemp("served") / "runs"
    shutil.copytree(small_run.path, runs / "small")
    # The explorer answers only for local host names, and TestClient's default is "testserver".
    with TestClient(create_app(runs, data_dir=str(small_data_dir)), base_url="http://127.0.0.1") as c:
        yield c


def by_upload(client, classes: list[str], name: str, data: bytes) -> np.ndarray:
    """The explorer: POST /api/upload, then GET /api/runs/small/predict?image_id=…"""
    r = client.post("/api/upload", files={"file": (name, data, "application/octet-stream")})
    assert r.status_code == 200, r.text
    r = client.get("/api/runs/small/predict", params={"image_id": r.json()["image_id"], "k": 10})
    assert r.status_code == 200, r.text
    return probabilities([(t["class"], t["probability"]) for t in r.json()["top"]], classes)


@pytest.mark.parametrize("mode, fmt", FILE_CASES, ids=[f"{m}-{f}" for m, f in FILE_CASES])
def test_every_mode_is_predicted_alike_by_the_explorer(client, small_run, model, files, mode, fmt):
    path, data = files[mode, fmt]
    ref = by_upload(client, small_run.classes, "dress.png", files[REFERENCE][1])
    assert np.abs(ref - by_predict(small_run, model, files[REFERENCE][0])).max() <= 1e-6   # the same as predict
    same_prediction(by_upload(client, small_run.classes, path.rsplit("/", 1)[1], data), ref,
                    TOLERANCE[kind(mode, fmt)][0], f"{mode} {fmt}")


def test_a_16_bit_dress_is_predicted_like_the_8_bit_one(small_run, files):
    """The bug: Pillow's own conversion clipped the 16-bit PNG to a black silhouette (a Shirt)."""
    eight, sixteen = files["L", "PNG"][0], files["I;16x257", "PNG"][0]
    rc, out, err = run_cli("predict", small_run.path, eight, sixteen, "--device", "cpu")
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [eight, sixteen]
    assert lines[0].split(": ", 1)[1] == lines[1].split(": ", 1)[1]
    assert lines[0].split(": ", 1)[1].startswith("Dress ")


@pytest.mark.parametrize("mode, values, expected", [
    ("L", [0, 100, 255], [0, 100, 255]),                                  # 8-bit: as it is
    ("I;16", [0, 100, 255], [0, 100, 255]),                               # a maximum ≤ 255: 8-bit values
    ("I;16", [0, 257, 1000, 65535], [0, 1, 4, 255]),                      # ≤ 65535: ÷ 257
    ("I;16B", [0, 32896, 65535], [0, 128, 255]),
    ("I", [-5, 0, 65536, 2**31 - 1], [0, 0, 0, 128]),                     # above: ÷ 16843009; negatives 0
    ("F", [0.0, 0.5, 1.0], [0, 128, 255]),                                # within [0, 1]: × 255
    ("F", [0.0, 1.5, 200.0], [0, 2, 200]),                                # beyond: the integer rule
    ("F", [float("nan"), float("inf"), 0.25, 1.0], [0, 0, 64, 255]),      # not finite: 0
    ("F", [-1.0, 0.5, 100.0], [0, 0, 100]),                               # negative: 0, and not within [0, 1]
], ids=["L", "I;16 8-bit values", "I;16", "I;16B", "I 32-bit", "F 0-1", "F 0-255", "F not finite", "F negative"])
def test_deep_pixels_are_scaled_by_the_smallest_full_range_that_holds_them(mode, values, expected):
    dtype = {"L": "u1", "I;16": "<u2", "I;16B": ">u2", "I": "<i4", "F": "<f4"}[mode]
    img = Image.frombytes(mode, (len(values), 1), np.array(values, dtype=dtype).tobytes())
    out = to_8bit(img)
    assert out.mode == "L" and np.asarray(out)[0].tolist() == expected


def test_the_lab_and_both_rules_see_a_16_bit_picture_as_its_8_bit_self(dress):
    from convlens.convolution import lab_image
    deep = Image.fromarray(np.asarray(dress).astype(np.uint16) * 257)
    assert np.array_equal(lab_image(deep), lab_image(dress))
    assert np.array_equal(prepare_image(deep), prepare_image(dress))
    assert np.array_equal(stretch_image(deep, SIZE, 3), stretch_image(dress, SIZE, 3))
