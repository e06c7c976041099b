// The Convolution lab tab: a named or typed kernel on a test image or an upload, the result and
// its max pooling (drawn with figures.py's colour maps: gray input, signed values centred on 0),
// and any result pixel worked out as the sum of pixel × weight.
import { api, post } from "./api.js";
import { $, el, loaders } from "./dom.js";
import { cellAt, decodeMaps, drawValues, outline } from "./draw.js";
import { state } from "./state.js";

export async function loadNamedKernels() {
  const ks = await api("/api/kernels");
  $("#lab-kernel").replaceChildren(...ks.map((k) => el("option", { value: k.name, text: k.name, title: k.about })),
    el("option", { value: "custom", text: "custom…" }));
}

// Signed values as figures.py shows them: 0 in the middle of the colour map, ±max|value| at its ends.
function centred(m) {
  const bytes = decodeMaps(m)[0], lo = m.min[0], hi = m.max[0], lim = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
  return bytes.map((b) => Math.round(127.5 + 127.5 * (lo + (b / 255) * (hi - lo)) / lim));
}

function show(canvas, m, signed) {
  const [, h, w] = m.shape, scale = Math.min(280 / h, 280 / w);
  canvas.width = Math.round(w * scale); canvas.height = Math.round(h * scale);
  drawValues(canvas, signed ? centred(m) : decodeMaps(m)[0], h, w, signed ? "signed" : null);
}

async function runLab(pixel = null) {
  const kernelName = $("#lab-kernel").value;
  const body = { kernel: kernelName === "custom" ? $("#lab-custom").value : kernelName, stride: Number($("#lab-stride").value),
                 padding: Number($("#lab-padding").value), pool: Number($("#lab-pool").value) };
  if ($("#lab-use-upload").checked) {
    if (!state.uploadId) { $("#lab-error").textContent = "no image uploaded yet: upload or draw one under Inspect, or untick “use my uploaded image”"; return; }
    body.image_id = state.uploadId;
  } else body.index = Number($("#lab-index").value);
  if (pixel) { body.row = pixel[0]; body.col = pixel[1]; }
  let r;
  try { r = await post("/api/convolve", body); } catch (e) { $("#lab-error").textContent = e.message; return; }
  $("#lab-error").textContent = "";
  state.lab = r;
  show($("#lab-image"), r.image, false);
  show($("#lab-result"), r.result, true);
  if (r.pooled) show($("#lab-pooled"), r.pooled, true); else $("#lab-pooled").getContext("2d").clearRect(0, 0, 280, 280);
  const [shapeIn, shapeOut, shapePool] = r.shapes.split(" → ");
  $("#lab-shape-in").textContent = shapeIn || ""; $("#lab-shape-out").textContent = shapeOut || ""; $("#lab-shape-pool").textContent = shapePool || "";
  $("#lab-kernel-table").replaceChildren(...r.kernel.map((row) => el("tr", {}, ...row.map((v) => el("td", { text: String(+v.toFixed(4)) })))));
  $("#lab-arith").textContent = `${r.label}, kernel ${r.kernel_name}: ${r.shapes}\n${r.pixel.text}\n` +
    `(reference sum vs torch conv2d: max difference ${r.torch_max_diff.toExponential(1)})`;
  const [, h, w] = r.result.shape;
  outline($("#lab-result"), [r.pixel.row, r.pixel.col, r.pixel.row, r.pixel.col], h, w);
}

export function setUpLab() {
  $("#lab-run").addEventListener("click", () => runLab());
  $("#lab-custom").addEventListener("input", () => { $("#lab-kernel").value = "custom"; });   // typed: it is the kernel
  $("#lab-result").addEventListener("click", (e) => {
    if (!state.lab) return;
    const [, h, w] = state.lab.result.shape;
    runLab(cellAt(e, e.target, h, w));
  });
  loaders.lab = () => { if (!state.lab) runLab(); };
}
