// The Network tab: the whole network at a glance, on the run's own model and one image (the CNN
// Explainer idea) — the input, then every layer as a column of its maps with its shape and parameter
// count under it, the class probabilities at the end. A map clicked opens large (focus.js): a conv
// map with its kernels and the arithmetic of the pixel under the pointer over every input channel,
// a max-pooling map with the winner of each window.
import { api, runPath } from "./api.js";
import { $, el, fmt, loaders, pct, showError, status } from "./dom.js";
import { cellAt, decodeImage, decodeMaps, drawValues, mapValue } from "./draw.js";
import { openFocus } from "./focus.js";
import { state } from "./state.js";
import { sourceQuery } from "./trust.js";
import { writeView } from "./url.js";

const COLUMN_W = 124, COLUMN_H = 430;      // a column's room for its maps, in CSS pixels
export const net = { run: null, source: null, answer: null, input: null };

// The tile size and grid that fit c maps of h×w into a column: the largest tile over 1–8 across.
export function tiling(c, h, w) {
  let best = { across: 1, tile: 0 };
  for (let across = 1; across <= Math.min(8, c); across++) {
    const rows = Math.ceil(c / across), tile = Math.floor(Math.min(COLUMN_W / across, COLUMN_H / rows) - 2);
    if (tile > best.tile) best = { across, tile };
  }
  return { ...best, height: Math.max(1, Math.round((best.tile * h) / w)) };
}


function column(title, body, foot) {
  return el("div", { class: "net-col" }, el("div", { class: "net-head", text: title }), body,
    el("div", { class: "net-foot" }, ...foot.map((t) => el("span", { text: t }))));
}

function inputColumn(r) {
  const { h, w } = net.input, cv = el("canvas", { width: w * 4, height: h * 4, class: "net-input" });
  drawValues(cv, net.input.gray, h, w);
  return column("input", cv, [`${h}×${w}×${net.input.c}`, r.label]);
}

function mapsColumn(layer, info, readout) {
  const [c, h, w] = layer.maps.shape, { across, tile, height } = tiling(c, h, w);
  const grid = el("div", { class: "net-maps", style: `grid-template-columns: repeat(${across}, ${tile}px)` });
  decodeMaps(layer.maps).forEach((m, ch) => {
    const cv = el("canvas", { width: w, height: h, style: `width:${tile}px;height:${height}px`, "data-layer": layer.name,
                              "data-channel": ch, title: `${layer.name} map ${ch}` });
    drawValues(cv, m, h, w, "activation");
    cv.addEventListener("mousemove", (e) => {
      const at = cellAt(e, cv, h, w);
      readout.textContent = `${layer.name} map ${ch} (${at[0]}, ${at[1]}) ≈ ${mapValue(layer.maps, ch, m, w, at).toFixed(3)}`;
    });
    cv.addEventListener("click", () => openFocus(layer, ch, m));
    grid.append(cv);
  });
  const lo = Math.min(...layer.maps.min), hi = Math.max(...layer.maps.max);
  return column(layer.name, grid, [layer.shape, info.params ? `${fmt(info.params)} params` : "no params",
                                   `values ${lo.toFixed(2)} to ${hi.toFixed(2)}`]);
}

// A flat layer (flatten, dense, gap): its values as a column of cells, the same colour scale.
function valuesColumn(layer, info, readout) {
  const v = layer.values, n = v.length, across = n > 64 ? Math.ceil(Math.sqrt(n / 4)) : 1, rows = Math.ceil(n / across);
  const lo = Math.min(...v), hi = Math.max(...v), bytes = new Uint8Array(across * rows);
  v.forEach((x, i) => { bytes[i] = hi > lo ? Math.round(((x - lo) / (hi - lo)) * 255) : 0; });
  const cell = Math.max(2, Math.min(12, Math.floor(COLUMN_H / rows)));
  const cv = el("canvas", { width: across, height: rows, class: "net-values", style: `width:${across * cell}px;height:${rows * cell}px` });
  drawValues(cv, bytes, rows, across, "activation");
  cv.addEventListener("mousemove", (e) => {
    const [r, c] = cellAt(e, cv, rows, across), i = r * across + c;
    readout.textContent = i < n ? `${layer.name} unit ${i} = ${v[i].toFixed(4)}` : "";
  });
  const shown = layer.values_total > n ? `first ${n} of ${fmt(layer.values_total)} values` : `${n} values`;
  return column(layer.name, cv, [layer.shape, info.params ? `${fmt(info.params)} params` : "no params", shown]);
}

function softmaxColumn(r) {
  const bars = r.top.map((t) => el("div", { class: "net-bar", title: `${t.class}: ${pct(t.probability)}` },
    el("span", { text: t.class }), Object.assign(el("i"), { style: `width:${Math.max(1, 70 * t.probability)}px` }),
    el("b", { text: pct(t.probability) })));
  return column("softmax", el("div", { class: "net-softmax" }, ...bars), ["class probabilities"]);
}

export async function showNetwork() {
  if (!state.run) return;
  const source = state.inspectSource ?? { index: Number($("#net-index").value) || 0 };
  const key = JSON.stringify([state.run, source]);
  if (net.key === key && net.answer) return;
  net.key = key;
  $("#net-error").textContent = "";
  status("computing every layer…");
  let r;
  try { r = await api(`${runPath(state.run)}/inspect?${sourceQuery(source)}&k=${state.detail.summary.layers.at(-1).output_shape[0]}&explain=false`); }
  catch (e) { if (net.key === key) { net.answer = null; $("#net").replaceChildren(); showError($("#net-error"), e); } return; }
  if (net.key !== key) return;
  Object.assign(net, { run: state.run, source, answer: r, input: decodeImage(r.input) });
  if (source.index != null) $("#net-index").value = source.index;
  $("#net-title").textContent = `${state.run}: ${r.label}`;
  const readout = $("#net-readout"), infos = state.detail.summary.layers;
  const cols = [inputColumn(r)];
  r.layers.forEach((layer, i) => {
    cols.push(el("div", { class: "net-link", text: "→" }));
    cols.push(layer.maps ? mapsColumn(layer, infos[i], readout) : valuesColumn(layer, infos[i], readout));
  });
  cols.push(el("div", { class: "net-link", text: "→" }), softmaxColumn(r));
  $("#net").replaceChildren(...cols);
  $("#net-focus").hidden = true;
  status(`${r.layers.length} layers of ${state.run} on ${r.label}`);
}

export function setUpNetwork() {
  loaders.network = showNetwork;
  $("#net-show").addEventListener("click", () => {
    state.inspectSource = { index: Number($("#net-index").value) };
    writeView({ index: state.inspectSource.index, layer: null, map: null });
    showNetwork();
  });
}
