import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from convlens.errors import ImageError
from convlens.images import load_image, prepare_image, read_image


def _png(img: Image.Image, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def test_dark_object_on_white_photo_becomes_light_object_on_black_centred():
    # A 300×100 white photo with a black 60×80 box right of centre.
    a = np.full((100, 300), 255, np.uint8)
    a[10:90, 200:260] = 0
    out = prepare_image(Image.fromarray(a))
    assert out.shape == (1, 28, 28) and out.dtype == np.uint8
    assert out[0, 0, 0] == 0 and out[0, 14, 14] == 255          # inverted, object centred
    cols = np.nonzero(out[0].max(0) > 128)[0]
    rows = np.nonzero(out[0].max(1) > 128)[0]
    assert rows.min() == 0 and rows.max() == 27                    # longer side fills the frame
    assert abs((cols.min() + cols.max()) / 2 - 13.5) <= 1          # centred horizontally
    assert 18 <= len(cols) <= 23                                   # aspect 60:80 kept (≈21 px)


def test_fashion_mnist_like_input_is_not_inverted():
    a = np.zeros((28, 28), np.uint8)
    a[4:24, 8:20] = 200
    out = prepare_image(Image.fromarray(a))
    assert out[0, 0, 0] == 0 and out[0].max() >= 190


def test_colour_rgba_gif_webp_and_bmp_all_decode():
    rgb = Image.new("RGB", (50, 40), (250, 250, 250))
    rgb.paste((200, 0, 0), (10, 10, 30, 20))     # 20×10: fitted, it leaves black above and below
    for fmt in ("PNG", "JPEG", "BMP", "GIF", "WEBP"):
        t = load_image(_png(rgb, fmt), name=f"x.{fmt.lower()}")
        assert t.shape == (1, 28, 28) and int(t.max()) > 100 and int(t[0, 0, 0]) < 30
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (5, 5, 35, 35))
    assert int(load_image(_png(rgba))[0, 14, 14]) == 255
    assert load_image(_png(rgb), channels=3).shape == (3, 28, 28)


def test_text_file_is_not_an_image(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is really a text file\n")
    with pytest.raises(ImageError, match="not an image") as e:
        read_image(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_missing_truncated_and_disallowed_files(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "nope.png")
    data = _png(Image.new("L", (64, 64), 128))
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="damaged|not an image"):
        read_image(tmp_path / "cut.png")
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "TIFF")
    with pytest.raises(ImageError, match="TIFF images are not accepted"):
        read_image(buf.getvalue())


def test_decompression_bomb_is_refused_before_decoding():
    # A 10,000 × 10,000 PNG (100 M pixels) compresses to a few hundred KB.
    big = Image.new("1", (10000, 10000))
    with pytest.raises(ImageError, match="pixel limit|bomb"):
        read_image(_png(big))


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path):
    from convlens.images import MAX_FILE_BYTES
    big = tmp_path / "huge.png"
    with open(big, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)         # sparse: nothing written, the size is what counts
    with pytest.raises(ImageError, match="over the 20 MiB limit"):
        read_image(big)


_SEEDS = {fmt: _png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 20, 3), np.uint8)), fmt)
          for fmt in ("PNG", "JPEG", "BMP", "GIF", "WEBP")}


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(_SEEDS)), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
       st.integers(0, 10**6))
def test_fuzzed_images_raise_only_image_error(fmt, flips, cut):
    """Valid files of every allowed format with bytes flipped and tails cut: a prepared image or ImageError."""
    buf = bytearray(_SEEDS[fmt])
    for pos, value in flips:
        buf[pos % len(buf)] = value
    buf = buf[: max(1, cut % (len(buf) + 1))]
    try:
        t = load_image(bytes(buf), name=f"fuzz.{fmt.lower()}")
        assert t.shape == (1, 28, 28)
    except ImageError as e:
        assert "\n" not in str(e)
