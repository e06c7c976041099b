// The Inspect tab: one image (a test image, an upload or a drawing) through the network — the
// prediction, the explanation picture (figures.py's, as in the report), every layer's maps, the
// kernels (figures.py's pictures), and under the pointer the arithmetic of one output pixel; a click on a
// conv layer's map shows what its filter looks for (filters.js), and a button checks the maps (trust.js).
import { api, latest, runPath } from "./api.js";
import { $, el, loaders, numTable, pct, showError, status } from "./dom.js";
import { cellAt, decodeImage, decodeMaps, drawImageWithBox, drawValues, legendBar, mapValue, outline, showPicture, signedBytes } from "./draw.js";
import { showFilter } from "./filters.js";
import { state } from "./state.js";
import { writeView } from "./url.js";
import { clearCheck, sourceQuery } from "./trust.js";

const HOVER_HINT = "Hover a pixel of a conv layer's feature map to see how it is computed; click a map to see what its filter looks for.";

// What was shown for another run or image goes: the maps, the arithmetic, the check, the filter panel.
export function clearInspection() {
  state.inspection = null; state.input = null; state.marked = null;
  state.hover.abort?.abort();
  state.hover.key = null;
  clearCheck();
  $("#inspect-result").hidden = true;
  $("#filter-panel").hidden = true;
  $("#layers").replaceChildren();
}

export async function inspect(src) {
  if (!state.run) { status("train or choose a run first"); return; }
  state.inspectSource = src;
  state.inspectedRun = state.run;
  state.inspectedSource = src;
  const seq = ++state.inspectSeq;
  status("inspecting…");
  $("#inspect-error").textContent = "";
  let r;
  try { r = await api(`${runPath(state.run)}/inspect?${sourceQuery(src)}`); }
  catch (e) {
    if (seq !== state.inspectSeq) return;
    clearInspection();
    showError($("#inspect-error"), e);
    return;
  }
  if (seq !== state.inspectSeq) return;             // a later request (another image or run) took over
  clearInspection();
  writeView({ index: src.index, layer: null, map: null });
  state.inspection = r;
  state.input = decodeImage(r.input);
  clearArithmetic();
  $("#inspect-result").hidden = false;
  $("#inspect-label").textContent = r.label + (r.true_class ? `, true class ${r.true_class}` : "");
  drawInput($("#input-view"));
  $("#topk").replaceChildren(...r.top.map((t) => el("div", { class: "bar" }, el("span", { text: t.class }),
    Object.assign(el("div"), { style: `width:${Math.max(2, 220 * t.probability)}px` }), el("b", { text: pct(t.probability) }))));
  $("#cam-title").textContent = r.cam ? `${r.cam.method} on ${r.cam.layer} for ${r.cam.target}` : "no conv layer: no class activation map";
  showPicture($("#explain-view"), `${runPath(state.run)}/explain.png?${sourceQuery(src)}`);
  drawSigns(r.cam);
  $("#layers").replaceChildren(...r.layers.map(layerBox));
  status(`inspected ${r.label} in ${r.time_ms} ms`);
  showKernels();
}

// The colour scale of a layer's maps: each map runs from its own lowest value (dark) to its highest
// (bright); the legend gives the span of the whole layer.
function legend(maps) {
  const lo = Math.min(...maps.min), hi = Math.max(...maps.max);
  return legendBar("activation", "lowest", `highest of each map; this layer's values ${lo.toFixed(3)} to ${hi.toFixed(3)}`);
}

function layerBox(layer) {
  const readout = el("small", { class: "readout" });
  const box = el("div", { class: "layer" }, el("h3", { text: `${layer.name} (${layer.type})` }, el("small", { text: layer.shape }), readout));
  if (!layer.maps) {
    const more = layer.values_total > 256 ? `  … (${layer.values_total} values)` : "";
    box.append(el("div", { class: "values", text: layer.values.slice(0, 256).map((v) => v.toFixed(3)).join("  ") + more }));
    return box;
  }
  box.append(legend(layer.maps));
  const [, h, w] = layer.maps.shape, grid = el("div", { class: "maps" });
  const scale = Math.max(1, Math.floor(128 / Math.max(h, w)));       // room for a thin outline of one pixel
  decodeMaps(layer.maps).forEach((m, ch) => {
    const learned = layer.kind === "conv" || layer.kind === "res";     // a filter's map: what it looks for
    const cv = el("canvas", { width: w * scale, height: h * scale, "data-layer": layer.name, "data-channel": ch,
                              class: learned ? "conv" : "", title: `${layer.name} map ${ch}` });
    cv.redraw = () => drawValues(cv, m, h, w, "activation");
    cv.redraw();
    if (learned) cv.addEventListener("click", () => showFilter(layer.name, ch, cv, inspectTest));
    else cv.addEventListener("click", () => enlarge(cv, `${layer.name}, map ${ch} (${h}×${w}); values ${layer.maps.min[ch].toFixed(3)} to ${layer.maps.max[ch].toFixed(3)}`));
    cv.addEventListener("mousemove", (e) => {                 // every map: the value under the pointer
      const at = cellAt(e, cv, h, w);
      readout.textContent = `map ${ch} (${at[0]}, ${at[1]}) ≈ ${mapValue(layer.maps, ch, m, w, at).toFixed(3)}`;
    });
    cv.addEventListener("mouseleave", () => { readout.textContent = ""; });
    if (layer.kind === "conv") {
      cv.addEventListener("mousemove", (e) => hoverPixel(cellAt(e, cv, h, w), layer.name, ch, cv, h, w));
      cv.addEventListener("mouseleave", clearArithmetic);
    } else if (layer.kind === "res") {                        // no one kernel to show the sum of
      cv.addEventListener("mousemove", () => $("#arith").replaceChildren(el("p", { class: "hint", text: residualNote(layer) })));
      cv.addEventListener("mouseleave", clearArithmetic);
    }
    grid.append(cv);
  });
  box.append(grid);
  return box;
}

const residualNote = (layer) => `${layer.name} is a residual block, not a single convolution: two 3×3 convolutions with ` +
  "batch norm plus a skip connection, then relu, so its pixels are not one sum of pixel × kernel (the value under the " +
  "pointer is above). Hover a conv layer's map for the arithmetic; click a map to see what its filter looks for.";

// The inspected image (decoded once), with the receptive field of a hovered pixel outlined.
function drawInput(canvas, box = null) {
  drawImageWithBox(canvas, state.input, box);
}

// Grad-CAM before its ReLU on the diverging scale: red argues for the class, blue against it.
function drawSigns(cam) {
  $("#cam-signs-box").hidden = !cam;
  if (!cam) return;
  const h = cam.signs.length, w = cam.signs[0].length, canvas = $("#cam-signs");
  drawValues(canvas, signedBytes(cam.signs.flat(), 1), h, w, "signed");
  $("#cam-signs-legend").replaceChildren(legendBar("signed", `against ${cam.target}`, `for ${cam.target}`));
}

function enlarge(canvas, caption) {
  const big = $("#enlarge-canvas"), ctx = big.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, big.width, big.height);
  ctx.drawImage(canvas, 0, 0, big.width, big.height);
  $("#enlarge-caption").textContent = caption;
  $("#enlarge").hidden = false;
}

const named = (caption, table) => el("figure", {}, el("figcaption", { text: caption }), table);

// The pointer left the maps: the panel says what to do, no pixel is marked, no field outlined.
function clearArithmetic() {
  state.hover.abort?.abort();
  state.hover.key = null;
  state.marked?.redraw();
  state.marked = null;
  $("#arith").replaceChildren(el("p", { class: "hint", text: HOVER_HINT }));
  if (state.input) drawInput($("#input-view"));
}

async function hoverPixel([row, col], layer, channel, canvas, h, w) {
  const key = `${layer}/${channel}/${row}/${col}`;
  if (key === state.hover.key) return;
  state.marked?.redraw();
  canvas.redraw();
  outline(canvas, [row, col, row, col], h, w);              // the hovered pixel, on its map
  state.marked = canvas;
  let a;
  try {
    a = await latest(state.hover, key, `${runPath(state.run)}/arithmetic?layer=${layer}&channel=${channel}&row=${row}&col=${col}&${sourceQuery(state.inspectSource)}`);
  } catch (e) { showError($("#arith"), e); return; }
  if (!a) return;
  drawInput($("#input-view"), a.receptive_field);
  $("#arith").replaceChildren(...arithmeticParts(a));
}

function arithmeticParts(a) {
  const seen = el("canvas", { width: 112, height: 112, class: "seen", title: "the input pixels this output pixel depends on" });
  drawInput(seen, a.receptive_field);
  const [top, left, bottom, right] = a.receptive_field;
  const parts = [seen, `${a.layer}, filter ${a.channel}, output pixel (${a.row}, ${a.col}): the ${a.patch[0].length}×${a.patch[0][0].length} patch of ${a.input_from} whose top-left is (${a.top_left.join(", ")})` +
    ` — in the input image it sees rows ${top}–${bottom}, columns ${left}–${right} (red box)\n`];
  if (a.patch.length === 1) {
    parts.push(el("div", { class: "arith-row" }, named("patch", numTable(a.patch[0])), el("span", { text: "×" }),
      named("kernel", numTable(a.kernel[0])), el("span", { text: "=" }), named("products", numTable(a.products[0]))));
  } else {
    const order = a.channel_sums.map((v, i) => [Math.abs(v), i]).sort((x, y) => y[0] - x[0]).slice(0, 4).map((x) => x[1]);
    parts.push(`${a.patch.length} input channels; Σ over each channel's 3×3 patch × kernel, the 4 largest:\n`);
    for (const i of order) {
      parts.push(el("div", { class: "arith-row" }, named(`channel ${i}: patch`, numTable(a.patch[i])), el("span", { text: "×" }),
        named("kernel", numTable(a.kernel[i])), el("span", { text: `→ ${a.channel_sums[i].toFixed(4)}` })));
    }
  }
  const act = a.activation === "linear" ? "" : ` → ${a.activation} → ${a.value.toFixed(4)}`;
  parts.push(`Σ pixel × weight = ${a.total.toFixed(4)}   + bias ${a.bias.toFixed(4)} = ${a.pre_activation.toFixed(4)}${act}`);
  return parts;
}

// Every conv layer's kernels, as the picture `convlens filters` and the report draw.
function showKernels() {
  const convs = state.detail.summary.layers.filter((l) => l.type === "Conv2D");
  $("#kernels").replaceChildren(...convs.map((l, n) =>
    el("img", { src: `${runPath(state.run)}/kernels/${n}.png`, alt: `${l.name}: learned kernels`, class: "kernels" })));
}

async function uploadBlob(blob, name) {
  const form = new FormData();
  form.append("file", blob, name);
  const r = await api("/api/upload", { method: "POST", body: form });
  state.uploadId = r.image_id;
  return r;
}

async function inspectUpload(blob, name) {
  $("#upload-error").textContent = "";
  try { await inspect({ image_id: (await uploadBlob(blob, name)).image_id }); }
  catch (err) { $("#upload-error").textContent = err.message; }
}

// The drawing canvas: a light stroke on black, like Fashion-MNIST's images.
function setUpDrawing() {
  const canvas = $("#draw"), ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  let drawing = false;
  const stroke = (e) => {
    if (!drawing) return;
    const r = canvas.getBoundingClientRect();
    ctx.fillStyle = "#fff"; ctx.beginPath();
    ctx.arc(((e.clientX - r.left) / r.width) * canvas.width, ((e.clientY - r.top) / r.height) * canvas.height, 14, 0, 2 * Math.PI);
    ctx.fill();
  };
  clear();
  canvas.addEventListener("mousedown", (e) => { drawing = true; stroke(e); });
  canvas.addEventListener("mousemove", stroke);
  window.addEventListener("mouseup", () => { drawing = false; });
  $("#clear-drawing").addEventListener("click", clear);
  $("#use-drawing").addEventListener("click", async () =>
    inspectUpload(await new Promise((resolve) => canvas.toBlob(resolve, "image/png")), "drawing.png"));
}

// A test image by its index, as if typed into the box (a crop of the filter panel was clicked).
function inspectTest(index) {
  $("#test-index").value = index;
  return inspect({ index });
}

export function setUpInspect() {
  $("#inspect-test").addEventListener("click", () => inspect({ index: Number($("#test-index").value) }));
  // Shown again after another run was chosen: the same image, through that run's network.
  // Or another image, chosen in the Network tab.
  loaders.inspect = () => (state.inspectSource && (state.inspectedRun !== state.run || state.inspectedSource !== state.inspectSource)
    ? inspect(state.inspectSource) : null);
  $("#upload").addEventListener("change", (e) => { if (e.target.files[0]) inspectUpload(e.target.files[0], e.target.files[0].name); });
  $("#enlarge").addEventListener("click", () => { $("#enlarge").hidden = true; });
  setUpDrawing();
}
