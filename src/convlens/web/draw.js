// Drawing helpers: uint8 values on canvases, coloured with figures.py's own colour maps
// (state.colormaps, from /api/colormaps), so a map looks the same here as in the report.
import { state } from "./state.js";

export function decodeBytes(b64) {
  const text = atob(b64), bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

// Base64 uint8 maps (api.encode_maps) -> one Uint8Array per channel.
export function decodeMaps(m) {
  const bytes = decodeBytes(m.data);
  const [c, h, w] = m.shape;
  return Array.from({ length: c }, (_, i) => bytes.subarray(i * h * w, (i + 1) * h * w));
}

// An image (api.encode_image: uint8 C×H×W) as grayscale H×W, in one pass (colour: the mean of R, G, B).
export function decodeImage(image) {
  const bytes = decodeBytes(image.data);
  const [c, h, w] = image.shape, n = h * w;
  if (c === 1) return { c, h, w, gray: bytes };
  const gray = new Uint8Array(n);
  for (let i = 0; i < n; i++) gray[i] = Math.round((bytes[i] + bytes[n + i] + bytes[2 * n + i]) / 3);
  return { c, h, w, gray };
}

// H×W values 0..255 on a canvas, nearest-neighbour scaled; role: a colour map's role
// ("activation", "signed", "heat", …), or none for gray.
export function drawValues(canvas, values, h, w, role = null) {
  const off = document.createElement("canvas");
  off.width = w; off.height = h;
  const ctx = off.getContext("2d");
  const img = ctx.createImageData(w, h), lut = role ? state.colormaps[role] : null;
  for (let i = 0; i < h * w; i++) {
    const v = values[i], o = 4 * i;
    if (lut) { img.data[o] = lut[3 * v]; img.data[o + 1] = lut[3 * v + 1]; img.data[o + 2] = lut[3 * v + 2]; }
    else { img.data[o] = img.data[o + 1] = img.data[o + 2] = v; }
    img.data[o + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  const c = canvas.getContext("2d");
  c.imageSmoothingEnabled = false;
  c.clearRect(0, 0, canvas.width, canvas.height);
  c.drawImage(off, 0, 0, canvas.width, canvas.height);
}

// A red outline over cells [top..bottom] × [left..right] of an h×w grid drawn on the canvas.
export function outline(canvas, [top, left, bottom, right], h, w) {
  const ctx = canvas.getContext("2d"), sx = canvas.width / w, sy = canvas.height / h;
  ctx.strokeStyle = "#ff3b30"; ctx.lineWidth = 2;
  ctx.strokeRect(left * sx, top * sy, (right - left + 1) * sx, (bottom - top + 1) * sy);
}

// The grid cell under a pointer event on a canvas showing an h×w grid: [row, col].
export function cellAt(event, canvas, h, w) {
  const rect = canvas.getBoundingClientRect();
  return [Math.min(h - 1, Math.floor(((event.clientY - rect.top) / rect.height) * h)),
          Math.min(w - 1, Math.floor(((event.clientX - rect.left) / rect.width) * w))];
}

export function loadColormaps(tables) {
  for (const [role, b64] of Object.entries(tables)) state.colormaps[role] = decodeBytes(b64);
}

// A server-drawn picture (figures.py's PNG) in an <img>, hidden until it has arrived, so that the last
// picture never stands beside the new numbers; resolves when it is shown (or failed).
export function showPicture(img, src) {
  img.hidden = true;
  return new Promise((resolve) => {
    img.onload = () => { img.hidden = false; resolve(true); };
    img.onerror = () => resolve(false);
    img.src = src;
  });
}

// Pixels as nested arrays C×H×W (uint8 0..255, or floats 0..1 with scale 255) on a canvas: gray for one
// channel, colour for three; nearest-neighbour scaled.
export function drawPixels(canvas, pixels, scale = 1) {
  const c = pixels.length, h = pixels[0].length, w = pixels[0][0].length;
  const off = document.createElement("canvas");
  off.width = w; off.height = h;
  const ctx = off.getContext("2d"), img = ctx.createImageData(w, h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const o = 4 * (y * w + x), v = (ch) => Math.round(Math.min(255, Math.max(0, pixels[ch][y][x] * scale)));
      img.data[o] = v(0); img.data[o + 1] = v(c === 3 ? 1 : 0); img.data[o + 2] = v(c === 3 ? 2 : 0); img.data[o + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
  const g = canvas.getContext("2d");
  g.imageSmoothingEnabled = false;
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.drawImage(off, 0, 0, canvas.width, canvas.height);
}

// A map value from its 8-bit picture (api.encode_maps): min + byte / 255 × (max − min).
export function mapValue(maps, ch, bytes, w, [row, col]) {
  return maps.min[ch] + (bytes[row * w + col] / 255) * (maps.max[ch] - maps.min[ch]);
}

// A decoded image ({h, w, gray}) in gray on a canvas, with a box of its pixels outlined (or none).
export function drawImageWithBox(canvas, { h, w, gray }, box = null) {
  drawValues(canvas, gray, h, w);
  if (box) outline(canvas, box, h, w);
}

// Signed values as bytes for the diverging colour map ("signed"): 0 is the middle, ±m the ends.
export function signedBytes(values, m) {
  return Uint8Array.from(values, (v) => Math.round(127.5 + (127.5 * v) / (m || 1)));
}

// A colour map's scale as a small bar between two labels: the legend of a group of maps.
export function legendBar(role, low, high) {
  const bar = document.createElement("canvas");
  bar.width = 256; bar.height = 1; bar.className = "legend-bar";
  drawValues(bar, Uint8Array.from({ length: 256 }, (_, i) => i), 1, 256, role);
  const span = document.createElement("span");
  span.className = "legend";
  span.append(`${low} `, bar, ` ${high}`);
  return span;
}
