import io
import os
import resource
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from convlens.errors import ImageError
from convlens.images import MAX_FILE_BYTES, load_image, prepare_image, read_image


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


def _not_a_file(kind: str, tmp_path) -> tuple[str, str]:
    """A path that is not a regular file, and what convlens should call it."""
    if kind == "link to /dev/zero":
        (tmp_path / "photo.png").symlink_to("/dev/zero")
        return str(tmp_path / "photo.png"), "a character device"
    if kind == "FIFO":
        os.mkfifo(tmp_path / "photo.png")        # opening it for reading waits for a writer that never comes
        return str(tmp_path / "photo.png"), "a FIFO (named pipe)"
    if kind == "directory":
        (tmp_path / "photo.png").mkdir()
        return str(tmp_path / "photo.png"), "a directory"
    return kind, "a character device"


# The CLI needs about 1 GiB of address space (torch's libraries); 2 GiB leaves room, and before the
# fix /dev/zero and /dev/urandom were read until MemoryError (at ~5 GB without a limit).
CLI_ADDRESS_SPACE = 2 << 30


@pytest.mark.parametrize("kind", ["/dev/zero", "/dev/urandom", "link to /dev/zero", "FIFO", "directory"])
def test_predict_refuses_what_is_not_a_regular_file_at_once(tmp_path, small_run, kind):
    path, what = _not_a_file(kind, tmp_path)
    p = subprocess.run([sys.executable, "-m", "convlens", "predict", str(small_run.path), path, "--device", "cpu"],
                       capture_output=True, text=True, timeout=10,     # a FIFO hung forever before
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (CLI_ADDRESS_SPACE,) * 2))
    assert p.returncode == 2, p.stderr
    assert p.stderr == f"convlens: error: {path}: is {what}, not an image file\n"


def test_a_fifo_swapped_in_after_the_check_does_not_block(tmp_path, monkeypatch):
    """The path is checked before it is opened (opening some devices acts); what was opened is checked
    again, and O_NONBLOCK keeps a FIFO that replaced a file in between from waiting for a writer."""
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    real_stat, looks_regular = os.stat, os.stat(__file__)
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: looks_regular if str(p) == str(fifo)
                        else real_stat(p, *a, **k))
    outcome = []

    def read():
        try:
            read_image(fifo)
        except ImageError as e:
            outcome.append(str(e))
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=5)
    if reader.is_alive():                     # blocked in open(): a writer end lets it go before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=5)
        pytest.fail("reading a FIFO waited for a writer")
    assert outcome == [f"{fifo}: is a FIFO (named pipe), not an image file"]


def _size_zero(st: os.stat_result) -> os.stat_result:
    return os.stat_result((*st[:6], 0, *st[7:10]))


def test_a_regular_file_that_says_size_zero_is_read_only_up_to_the_limit(tmp_path, monkeypatch):
    """/proc and sysfs files are regular and report size 0: at most MAX_FILE_BYTES + 1 bytes are read."""
    big = tmp_path / "proc-like.png"
    with open(big, "wb") as f:
        f.truncate(3 * MAX_FILE_BYTES)        # sparse: 60 MiB of zeros, nothing written
    real_stat, real_fstat = os.stat, os.fstat
    with monkeypatch.context() as m:
        m.setattr(os, "stat", lambda p, *a, **k: _size_zero(real_stat(p, *a, **k)))
        m.setattr(os, "fstat", lambda fd: _size_zero(real_fstat(fd)))
        with pytest.raises(ImageError) as e:
            read_image(big)
    assert str(e.value) == f"{big}: 20.0 MiB is over the 20 MiB limit"        # not 60.0: the rest was never read


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
