// One map of the Network tab, opened large. A conv map: its filter's kernels (one per input channel,
// diverging colours centred on zero) and, for the pixel under the pointer, the whole sum — each input
// channel's partial sum (patch × kernel), expandable to its numbers, adding up to the value shown —
// and the input pixels it sees. A max-pooling map: the map it pooled, each window's winner marked.
import { api, latest, runPath } from "./api.js";
import { $, el, numTable, showError } from "./dom.js";
import { cellAt, drawImageWithBox, drawValues, legendBar, outline, signedBytes } from "./draw.js";
import { net } from "./network.js";
import { sourceQuery } from "./trust.js";
import { writeView } from "./url.js";

const BIG = 280;
const focus = { layer: null, channel: null, key: null, abort: null };

function bigCanvas(h, w) {
  const s = Math.max(1, Math.floor(BIG / Math.max(h, w)));
  return el("canvas", { width: w * s, height: h * s, class: "focus-map" });
}

function inputWithBox(box) {
  const cv = el("canvas", { width: net.input.w * 5, height: net.input.h * 5, class: "focus-input" });
  drawImageWithBox(cv, net.input, box);
  return cv;
}


// Every input channel's k×k kernel of this filter, as small diverging-colour tiles, with the legend.
function kernelTiles(a) {
  const m = Math.max(...a.kernel.flat(2).map(Math.abs)), k = a.kernel[0].length;
  const tiles = a.kernel.map((kk, i) => {
    const cv = el("canvas", { width: k, height: k, class: a.kernel.length <= 8 ? "kernel-tile big" : "kernel-tile", title: `input channel ${i}: ${kk.map((r) => r.map((v) => v.toFixed(3)).join(" ")).join(" / ")}` });
    drawValues(cv, signedBytes(kk.flat(), m), k, k, "signed");
    cv.addEventListener("mousemove", (e) => {             // the weight under the pointer
      const [r, c] = cellAt(e, cv, k, k);
      readout.textContent = `input channel ${i}, weight (${r}, ${c}) = ${kk[r][c].toFixed(4)}`;
    });
    return cv;
  });
  const readout = el("div", { class: "readout kernel-readout" });
  return el("div", { class: "focus-kernels" }, el("h4", { text: `its ${a.kernel.length} kernel${a.kernel.length > 1 ? "s" : ""} (one per input channel of ${a.input_from})` }),
    legendBar("signed", (-m).toFixed(3), `+${m.toFixed(3)} (white: 0)`), el("div", { class: "kernel-grid" }, ...tiles),
    readout);
}

// The sum of one output pixel: every channel's partial sum, largest first, each expandable.
function arithmeticPanel(a) {
  const order = a.channel_sums.map((v, i) => [v, i]).sort((x, y) => Math.abs(y[0]) - Math.abs(x[0]));
  const rows = order.map(([v, i]) => el("details", { class: "partial", "data-channel": i },
    el("summary", { text: `channel ${i}: Σ patch × kernel = ${v.toFixed(4)}`, class: v < 0 ? "negative" : "positive" }),
    el("div", { class: "arith-row" }, numTable(a.patch[i]), el("span", { text: "×" }), numTable(a.kernel[i]),
      el("span", { text: "=" }), numTable(a.products[i], 4))));
  const act = a.activation === "linear" ? "" : ` → ${a.activation} → ${a.value.toFixed(4)}`;
  return [el("p", { class: "focus-value", text: `${a.layer} map ${a.channel}, pixel (${a.row}, ${a.col}) = ${a.value.toFixed(4)}` }),
    el("p", { class: "focus-total", text: `Σ of the ${a.channel_sums.length} partial sums = ${a.total.toFixed(4)}   + bias ${a.bias.toFixed(4)} = ${a.pre_activation.toFixed(4)}${act}` }),
    el("p", { text: `${a.channel_sums.length} input channel${a.channel_sums.length > 1 ? "s" : ""} of ${a.input_from}; each one's ${a.patch[0].length}×${a.patch[0][0].length} patch × kernel (click to open):` }),
    el("div", { class: "partials" }, ...rows)];
}

async function hoverConv([row, col], layer, channel, canvas, redraw, h, w) {
  const key = `${layer}/${channel}/${row}/${col}`;
  if (key === focus.key) return;
  redraw();
  outline(canvas, [row, col, row, col], h, w);
  let a;
  try {
    a = await latest(focus, key, `${runPath(net.run)}/arithmetic?layer=${layer}&channel=${channel}&row=${row}&col=${col}&${sourceQuery(net.source)}`);
  } catch (e) { showError($("#focus-arith"), e); return; }
  if (!a) return;
  $("#focus-seen").replaceChildren(el("h4", { text: `the input pixels it sees: rows ${a.receptive_field[0]}–${a.receptive_field[2]}, columns ${a.receptive_field[1]}–${a.receptive_field[3]}` }),
                                   inputWithBox(a.receptive_field));
  if (!$("#focus-kernels").dataset.filled) { $("#focus-kernels").replaceChildren(kernelTiles(a)); $("#focus-kernels").dataset.filled = "1"; }
  $("#focus-arith").replaceChildren(...arithmeticPanel(a));
  $("#focus-arith").dataset.shown = JSON.stringify({ row: a.row, col: a.col, value: a.value, total: a.total, bias: a.bias,
                                                     pre: a.pre_activation, sums: a.channel_sums });
}

function convFocus(layer, ch, bytes, cv, redraw) {
  const [, h, w] = layer.maps.shape;
  cv.addEventListener("mousemove", (e) => hoverConv(cellAt(e, cv, h, w), layer.name, ch, cv, redraw, h, w));
  return hoverConv([h >> 1, w >> 1], layer.name, ch, cv, redraw, h, w);   // the centre pixel, until the pointer moves
}

async function poolFocus(layer, ch) {
  let p;
  try { p = await api(`${runPath(net.run)}/pool?layer=${layer.name}&channel=${ch}&${sourceQuery(net.source)}`); }
  catch (e) { showError($("#focus-arith"), e); return; }
  const H = p.before.length, W = p.before[0].length, flat = p.before.flat();
  const lo = Math.min(...flat), hi = Math.max(...flat), cv = bigCanvas(H, W);
  p.redraw = () => {
    drawValues(cv, Uint8Array.from(flat, (v) => (hi > lo ? Math.round(((v - lo) / (hi - lo)) * 255) : 0)), H, W, "activation");
    const ctx = cv.getContext("2d"), sx = cv.width / W, sy = cv.height / H;
    ctx.strokeStyle = "#ff3b30"; ctx.lineWidth = 1.5;
    p.winners.forEach((row, r) => row.forEach(([wr, wc], c) => {
      if (!tied(p, r, c)) ctx.strokeRect(wc * sx + 1, wr * sy + 1, sx - 2, sy - 2);
    }));
  };
  p.redraw();
  p.canvas = cv;
  $("#focus-seen").replaceChildren(el("h4", { text: `${p.input_from} map ${ch}, pooled: each ${p.size}×${p.size} window's winner in red (a tie, such as a window of zeros, has none)` }), cv);
  $("#focus-arith").replaceChildren(el("p", { class: "focus-value", text: `${p.layer} map ${ch}: ${p.after.length}×${p.after[0].length}, each value the largest of its ${p.size}×${p.size} window of ${p.input_from} (stride ${p.stride}); hover the map on the left` }));
  $("#focus-arith").dataset.winners = JSON.stringify(p.winners);
  return p;
}

// Whether window (r, c) has more than one pixel at its max: no single winner to mark.
function tied(p, r, c) {
  let n = 0;
  for (let i = r * p.stride; i < Math.min(r * p.stride + p.size, p.before.length); i++) {
    for (let j = c * p.stride; j < Math.min(c * p.stride + p.size, p.before[0].length); j++) if (p.before[i][j] === p.after[r][c]) n++;
  }
  return n > 1;
}

export async function openFocus(layer, ch, bytes) {
  const [, h, w] = layer.maps.shape, cv = bigCanvas(h, w), redraw = () => drawValues(cv, bytes, h, w, "activation");
  redraw();
  Object.assign(focus, { layer: layer.name, channel: ch, key: null });
  writeView({ layer: layer.name, map: ch });
  const range = `values ${layer.maps.min[ch].toFixed(3)} to ${layer.maps.max[ch].toFixed(3)}`;
  $("#net-focus").replaceChildren(
    el("div", { class: "focus-left" }, el("h3", { text: `${layer.name} map ${ch} (${h}×${w}, ${layer.type})` }, el("small", { text: ` ${range}` })),
      cv, el("div", { id: "focus-seen" }), el("div", { id: "focus-kernels" })),
    el("div", { id: "focus-arith", class: "arith" }));
  $("#net-focus").hidden = false;
  $("#net-focus").dataset.map = `${layer.name}/${ch}`;
  if (layer.kind === "conv") return convFocus(layer, ch, bytes, cv, redraw);
  if (layer.kind === "maxpool") {
    const p = await poolFocus(layer, ch);
    cv.addEventListener("mousemove", (e) => {
      const [r, c] = cellAt(e, cv, h, w), [wr, wc] = p.winners[r][c];
      redraw(); outline(cv, [r, c, r, c], h, w);
      p.redraw();
      outline(p.canvas, [r * p.stride, c * p.stride, r * p.stride + p.size - 1, c * p.stride + p.size - 1], p.before.length, p.before[0].length);
      $("#focus-arith").replaceChildren(el("p", { class: "focus-value", text: `${p.layer} map ${ch}, pixel (${r}, ${c}) = ${p.after[r][c].toFixed(4)}: the winner of its window is ${p.input_from} (${wr}, ${wc}) = ${p.before[wr][wc].toFixed(4)}` }));
    });
    return p;
  }
  $("#focus-arith").replaceChildren(el("p", { text: `${layer.name} is a ${layer.type} layer: ${range}. Hover the map for its values in the column above.` }));
  return null;
}
