"""User images: read any photo safely and turn it into what the model was trained on.

Fashion-MNIST is a light object on a black background, centred, its longer side
filling the 28×28 frame (Xiao et al. 2017, §2: trimmed, resized to 28 px on the
longest edge, centred). A user's photo is usually the opposite: a dark object on a
light background, any size. `prepare_image` bridges that:
1. decode (allow-listed formats only), flatten transparency onto the background;
2. grayscale (or RGB for 3-channel models);
3. invert when the border is lighter than mid-grey (light background);
4. crop to the object's bounding box, fit its longer side into the frame keeping the
   aspect ratio, centre it on black.
That is the "object" rule. A model trained on an image folder (folders.py) saw photos as
they are, so its images follow the "folder" rule instead: converted and resized to the
frame, nothing inverted or cropped (`stretch_image`). The run's model.json says which.

Both rules, and the convolution lab, start the same way (`upright_8bit`): EXIF orientation
applied, deeper pixels scaled into 0–255, transparency flattened onto white. Scaling, not
clipping (Pillow's own conversion clips a 16-bit 65535 white and a 1000 grey alike to 255):
- integer modes (I;16, I;16B, I;16L, I, …): by the smallest full range that holds the image's
  maximum: up to 255 it is 8-bit already, up to 65535 16-bit (÷ 257), above that 32-bit
  (÷ 16843009 = (2³² − 1) / 255);
- float mode F: values within [0, 1] are × 255, any others go by the integer rule;
- negative values, NaN and infinities become 0; the result is rounded to the nearest level.

A file is read only if it is a regular file, and never more than MAX_FILE_BYTES + 1 bytes of
it: /dev/zero reports size 0 and never ends, and opening a FIFO waits for a writer.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .reading import open_regular

ALLOWED_FORMATS = {"PNG", "JPEG", "BMP", "GIF", "WEBP"}
MAX_FILE_BYTES = 20 << 20          # 20 MiB: far above any photo worth classifying at 28×28
MAX_PIXELS = 40_000_000            # below Pillow's own bomb limit (89 M), checked before decoding
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# The full ranges an integer image's maximum is judged by: (largest value, divisor to 0–255).
FULL_RANGES = [(255, 1), (65535, 257), (float("inf"), 16843009)]


def _too_big(label: str, size: int) -> ImageError:
    return ImageError(f"{label}: {size / 2**20:.1f} MiB is over the {MAX_FILE_BYTES >> 20} MiB limit")


def read_file(path: str | os.PathLike, label: str) -> bytes:
    """A regular file's bytes, at most MAX_FILE_BYTES + 1 of them (reading.open_regular: no device,
    FIFO or directory, whatever the path names); ImageError for anything else."""
    with open_regular(path, ImageError, "an image file") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise _too_big(label, size)
        try:
            return f.read(MAX_FILE_BYTES + 1)   # no more, whatever the size said (/proc files say 0)
        except OSError as e:
            raise ImageError(f"{label}: cannot read: {e.strerror or e}") from None


def read_image(source: str | os.PathLike | bytes, name: str | None = None) -> Image.Image:
    """Decode an image file (or bytes) into a Pillow image; ImageError for anything else."""
    label = name or (str(source) if not isinstance(source, bytes) else "upload")
    data = source if isinstance(source, bytes) else read_file(source, label)
    if len(data) > MAX_FILE_BYTES:
        raise _too_big(label, len(data))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format not in ALLOWED_FORMATS:
                raise ImageError(f"{label}: {img.format} images are not accepted "
                                 f"(use {', '.join(sorted(ALLOWED_FORMATS))})")
            if img.width * img.height > MAX_PIXELS:
                raise ImageError(f"{label}: {img.width}×{img.height} pixels is over the "
                                 f"{MAX_PIXELS:,}-pixel limit")
            img.seek(0)          # GIF/WebP animations: the first frame
            img.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image (or not a format convlens reads: "
                         f"{', '.join(sorted(ALLOWED_FORMATS))})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{label}: decompression bomb (too many pixels); refused") from None
    except Exception as e:     # Pillow's decoders raise many types (OSError, SyntaxError, ValueError, …)
        raise ImageError(f"{label}: damaged or unreadable image ({type(e).__name__}: {e})") from None
    return img


def flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite transparency onto white, so a cut-out object reads as object on light background."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, img).convert("RGB")
    return img


def to_8bit(img: Image.Image) -> Image.Image:
    """A 16- or 32-bit integer or float image scaled into 0–255 as mode L (the module docstring's rule);
    any other image as it is."""
    if img.mode not in ("I", "F") and not img.mode.startswith("I;"):
        return img
    a = np.array(img, dtype=np.float32)                # a copy; float32 holds every 16-bit level exactly
    a[~np.isfinite(a)] = 0
    high = float(a.max(initial=0))
    if img.mode == "F" and float(a.min(initial=0)) >= 0 and high <= 1:
        a *= 255
    else:
        a /= next(divisor for top, divisor in FULL_RANGES if high <= top)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


def upright_8bit(img: Image.Image) -> Image.Image:
    """Where every rule starts: EXIF orientation applied, deep pixels scaled to 8 bits (`to_8bit`),
    transparency flattened onto white."""
    return flatten_alpha(to_8bit(ImageOps.exif_transpose(img) or img))


def stretch_image(img: Image.Image, size: tuple[int, int], channels: int) -> np.ndarray:
    """The folder rule: uint8 (channels, H, W) by `upright_8bit` (EXIF orientation, deep pixels
    scaled, transparency onto white), grayscale (ITU-R 601 luma) or RGB, and an anti-aliased bilinear
    resize to exactly H×W, the aspect ratio not kept (Keras's image_dataset_from_directory does the same)."""
    img = upright_8bit(img).convert("L" if channels == 1 else "RGB")
    h, w = size
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return (arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)).copy()


def prepare_image(img: Image.Image, size: tuple[int, int] = (28, 28), channels: int = 1,
                  invert: bool | None = None, rule: str = "object") -> np.ndarray:
    """A decoded image as the model's input: uint8 (channels, H, W); by the object rule a light
    object on black, centred, by the folder rule `stretch_image`.

    invert (object rule): None decides from the border (light background -> invert), True/False forces it.
    """
    if rule == "folder":
        return stretch_image(img, size, channels)
    img = upright_8bit(img)
    gray = np.asarray(img.convert("L"), dtype=np.float32)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if invert is None:
        invert = float(np.median(border)) > 127
    color = img.convert("L" if channels == 1 else "RGB")
    if invert:
        color = ImageOps.invert(color)
        gray = 255 - gray
    # The object: pixels clearly above the background level.
    bg_level = float(np.median(255 - border if invert else border))
    mask = gray > bg_level + 0.15 * (gray.max() - bg_level)
    if mask.any():
        ys, xs = np.nonzero(mask)
        color = color.crop((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    h, w = size
    scale = min(w / color.width, h / color.height)
    fitted = color.resize((max(1, round(color.width * scale)), max(1, round(color.height * scale))),
                          Image.Resampling.LANCZOS)
    canvas = Image.new(color.mode, (w, h), 0)
    canvas.paste(fitted, ((w - fitted.width) // 2, (h - fitted.height) // 2))
    arr = np.asarray(canvas, dtype=np.uint8)
    return (arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)).copy()


def load_image(source: str | os.PathLike | bytes, size: tuple[int, int] = (28, 28), channels: int = 1,
               invert: bool | None = None, name: str | None = None, rule: str = "object") -> torch.Tensor:
    """Read and prepare one image: uint8 tensor (channels, H, W); ImageError if it cannot be read."""
    return torch.from_numpy(prepare_image(read_image(source, name), size, channels, invert, rule))
