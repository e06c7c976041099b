// convlens explorer: one page over the JSON API (server.py). No build step, no network but this server.
// Numbers are computed by the server (the same code as the CLI and the report); this file only draws them.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { run: null, runs: [], job: null, inspectSource: null, uploadId: null, hoverKey: null, hoverAbort: null };

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const error = new Error(body?.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : response.statusText);
    error.body = body;
    error.status = response.status;
    throw error;
  }
  return body;
}

const post = (path, data) => api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data) });
const pct = (x) => (x == null ? "–" : (100 * x).toFixed(2) + " %");
const fmt = (n) => n.toLocaleString("en-US");
function status(text) { $("#status").textContent = text; }
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

// ---------------------------------------------------------------- tabs
const loaders = {};
function showTab(name) {
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  document.querySelectorAll(".tab").forEach((s) => s.classList.toggle("active", s.id === name));
  if (loaders[name]) loaders[name]();
}
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));

// ---------------------------------------------------------------- drawing helpers
// A (H, W) array of uint8 (or 0..1 floats) drawn on a canvas, scaled with nearest-neighbour pixels.
function drawGray(canvas, values, h, w, colormap = null) {
  const off = document.createElement("canvas");
  off.width = w; off.height = h;
  const ctx = off.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    const v = values[i];
    const [r, g, b] = colormap ? colormap(v) : [v, v, v];
    img.data.set([r, g, b, 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
  const c = canvas.getContext("2d");
  c.imageSmoothingEnabled = false;
  c.clearRect(0, 0, canvas.width, canvas.height);
  c.drawImage(off, 0, 0, canvas.width, canvas.height);
}

// Base64 uint8 maps (server's _u8) -> array of Uint8Array, one per channel.
function decodeMaps(m) {
  const bytes = Uint8Array.from(atob(m.data), (ch) => ch.charCodeAt(0));
  const [c, h, w] = m.shape;
  return Array.from({ length: c }, (_, i) => bytes.subarray(i * h * w, (i + 1) * h * w));
}

// viridis-like ramp for feature maps and heat maps (0..255 -> rgb)
function heat(v) {
  const t = v / 255;
  return [Math.round(255 * Math.min(1, Math.max(0, 1.6 * t - 0.35))), Math.round(255 * Math.min(1, 0.15 + 0.95 * t)),
          Math.round(255 * Math.min(1, Math.max(0, 0.55 + 0.6 * t - 1.1 * t * t)))];
}

function flat2d(rows) { return rows.flat(); }

// Line chart of metric series: panels [loss, accuracy], each series {label, metrics}; the x axis spans
// at least `planned` epochs (a run in progress fills it as it trains).
function drawCurves(canvas, series, planned = 2) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const panels = [["loss", "val_loss", "loss"], ["accuracy", "val_accuracy", "accuracy"]];
  const pw = canvas.width / 2, ph = canvas.height, pad = 38;
  const colors = ["#1f6feb", "#f79009", "#12b76a", "#d92d20", "#7a5af8"];
  panels.forEach(([train, val, title], p) => {
    const x0 = p * pw + pad, x1 = (p + 1) * pw - 12, y0 = 20, y1 = ph - 28;
    const all = series.flatMap((s) => s.metrics.flatMap((m) => [m[train], m[val]])).filter((v) => v != null);
    const epochs = Math.max(2, planned, ...series.map((s) => s.metrics.length));
    ctx.fillStyle = "#1d2330"; ctx.font = "12px system-ui"; ctx.fillText(title + " (solid: train, dashed: validation)", x0, 13);
    ctx.strokeStyle = "#d0d5dd"; ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    if (!all.length) return;
    let lo = Math.min(...all), hi = Math.max(...all);
    if (hi - lo < 1e-6) { lo -= 0.01; hi += 0.01; }
    const X = (e) => x0 + ((e - 1) / (epochs - 1)) * (x1 - x0);
    const Y = (v) => y1 - ((v - lo) / (hi - lo)) * (y1 - y0);
    ctx.fillStyle = "#667085";
    ctx.fillText(hi.toFixed(3), x0 - pad + 2, y0 + 10); ctx.fillText(lo.toFixed(3), x0 - pad + 2, y1);
    ctx.fillText("epoch 1", x0, y1 + 16); ctx.fillText(String(epochs), x1 - 14, y1 + 16);
    series.forEach((s, i) => {
      [[train, []], [val, [5, 4]]].forEach(([key, dash]) => {
        const pts = s.metrics.filter((m) => m[key] != null);
        if (!pts.length) return;
        ctx.setLineDash(dash); ctx.strokeStyle = colors[i % colors.length]; ctx.lineWidth = 2; ctx.beginPath();
        pts.forEach((m, j) => (j ? ctx.lineTo(X(m.epoch), Y(m[key])) : ctx.moveTo(X(m.epoch), Y(m[key]))));
        ctx.stroke();
        pts.forEach((m) => { ctx.fillStyle = colors[i % colors.length]; ctx.fillRect(X(m.epoch) - 2, Y(m[key]) - 2, 4, 4); });
      });
    });
    ctx.setLineDash([]);
    series.forEach((s, i) => { ctx.fillStyle = colors[i % colors.length]; ctx.fillText(s.label, x0 + 8, y0 + 16 + 14 * i); });
  });
}

// ---------------------------------------------------------------- runs
async function refreshRuns(select = null) {
  state.runs = await api("/api/runs");
  const sel = $("#run-select"), cmp = $("#compare-select");
  const current = select || state.run || state.runs[0]?.name || null;
  sel.replaceChildren(...(state.runs.length ? state.runs.map((r) => el("option", { value: r.name, text: r.name }))
                                            : [el("option", { value: "", text: "(no runs yet)" })]));
  cmp.replaceChildren(el("option", { value: "", text: "(choose a run)" }), ...state.runs.map((r) => el("option", { value: r.name, text: r.name })));
  const body = $("#runs-table tbody");
  body.replaceChildren(...state.runs.map((r) => {
    const tr = el("tr", { "data-run": r.name },
      el("td", { text: r.name }), el("td", { text: r.model }), el("td", { text: r.dataset || "" }),
      el("td", { class: "num", text: `${r.epochs}/${r.epochs_planned ?? "?"}` }),
      el("td", { class: "num", text: pct(r.test_accuracy) }), el("td", { text: r.state }));
    tr.addEventListener("click", () => selectRun(r.name));
    return tr;
  }));
  if (current) await selectRun(current, false);
}

async function selectRun(name, reloadTab = true) {
  state.run = name;
  $("#run-select").value = name;
  document.querySelectorAll("#runs-table tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.run === name));
  const detail = await api(`/api/runs/${encodeURIComponent(name)}`);
  state.detail = detail;
  $("#curves-title").textContent = name;
  drawCurves($("#curves"), [{ label: name, metrics: detail.metrics }]);
  await showComparison();
  if (reloadTab) { const active = document.querySelector("nav button.active").dataset.tab; if (loaders[active]) loaders[active](); }
}
$("#run-select").addEventListener("change", (e) => selectRun(e.target.value));

async function showComparison() {
  const other = $("#compare-select").value;
  const table = $("#compare-table");
  if (!other || !state.detail) { table.replaceChildren(); return; }
  const b = await api(`/api/runs/${encodeURIComponent(other)}`), a = state.detail;
  drawCurves($("#curves"), [{ label: a.name, metrics: a.metrics }, { label: b.name, metrics: b.metrics }]);
  const rows = [["model", (d) => d.config.model], ["parameters", (d) => fmt(d.summary.total_params)],
    ["epochs", (d) => d.metrics.length], ["best epoch", (d) => d.results.best_epoch ?? "–"],
    ["test accuracy", (d) => pct(d.results.test_accuracy)], ["test loss", (d) => d.results.test_loss?.toFixed(4) ?? "–"],
    ["training time", (d) => (d.results.train_time_s != null ? d.results.train_time_s.toFixed(1) + " s" : "–")],
    ["overfitting", (d) => d.results.overfitting || "none seen"]];
  table.replaceChildren(el("tr", {}, el("th", { text: "" }), el("th", { text: a.name }), el("th", { text: b.name })),
    ...rows.map(([label, f]) => el("tr", {}, el("th", { text: label }), el("td", { text: String(f(a)) }), el("td", { text: String(f(b)) }))));
}
$("#compare-select").addEventListener("change", showComparison);

// ---------------------------------------------------------------- summary tables (train preview and model tab)
function summaryRows(table, summary) {
  table.replaceChildren(el("tr", {}, ...["Layer (type)", "Output shape", "Param #", "Mult-adds", "Why that many parameters"].map((t) => el("th", { text: t }))),
    ...summary.layers.map((l) => el("tr", {}, el("td", { text: `${l.name} (${l.type})` }), el("td", { text: l.output }),
      el("td", { class: "num", text: fmt(l.params) }), el("td", { class: "num", text: fmt(l.mult_adds) }), el("td", { text: l.arithmetic }))),
    el("tr", {}, el("th", { text: "Total" }), el("td", { text: "" }), el("td", { class: "num", text: fmt(summary.total_params) }),
      el("td", { class: "num", text: fmt(summary.mult_adds) }), el("td", { text: "" })));
}

// ---------------------------------------------------------------- train
let specTimer = null;
async function previewSpec() {
  const spec = $("#spec").value;
  try {
    const s = await api(`/api/summary?model=${encodeURIComponent(spec)}`);
    $("#spec-error").textContent = "";
    $("#spec-total").textContent = `${fmt(s.total_params)} parameters, ${fmt(s.mult_adds)} multiply-adds per image`;
    summaryRows($("#spec-summary"), s);
    $("#start-training").disabled = !!state.job;
  } catch (e) {
    const tokens = spec.split("-");
    const at = e.body?.token ? `\n${"^".padStart(tokens.slice(0, e.body.token - 1).join("-").length + (e.body.token > 1 ? 2 : 1))} token ${e.body.token}` : "";
    $("#spec-error").textContent = e.message + (e.body?.token ? `\n${spec}${at}` : "");
    $("#spec-total").textContent = "";
    $("#spec-summary").replaceChildren();
    $("#start-training").disabled = true;
  }
}
$("#spec").addEventListener("input", () => { clearTimeout(specTimer); specTimer = setTimeout(previewSpec, 150); });
$("#preset").addEventListener("change", (e) => { $("#spec").value = e.target.value; previewSpec(); });

$("#start-training").addEventListener("click", async () => {
  const body = { model: $("#spec").value, epochs: Number($("#epochs").value) };
  if ($("#batch").value) body.batch_size = Number($("#batch").value);
  if ($("#lr").value) body.lr = Number($("#lr").value);
  if ($("#run-name").value) body.name = $("#run-name").value;
  try {
    state.job = await post("/api/train", body);
    $("#start-training").disabled = true; $("#stop-training").disabled = false;
    $("#spec-error").textContent = "";
    followJob();
  } catch (e) { $("#spec-error").textContent = e.message; }
});
$("#stop-training").addEventListener("click", async () => { if (state.job) await post(`/api/jobs/${state.job.id}/stop`, {}); });

async function followJob() {
  if (!state.job) return;
  const job = await api(`/api/jobs/${encodeURIComponent(state.job.id)}`);
  state.job = job;
  const done = job.epoch + (job.steps ? job.step / job.steps : 0);
  $("#train-progress").value = done / job.epochs;
  const last = job.metrics[job.metrics.length - 1];
  $("#job-status").textContent = `${job.run}: ${job.state}, epoch ${Math.min(job.epoch + 1, job.epochs)}/${job.epochs}` +
    (job.steps && job.state === "running" ? `, step ${job.step}/${job.steps}` : "") +
    (last ? ` — loss ${last.loss.toFixed(4)}, acc ${pct(last.accuracy)}` + (last.val_loss != null ? `, val_loss ${last.val_loss.toFixed(4)}, val_acc ${pct(last.val_accuracy)}` : "") : "") +
    (job.results?.test_accuracy != null ? ` — test accuracy ${pct(job.results.test_accuracy)}` : "") +
    (job.error ? ` — ${job.error}` : "") + ` (${job.elapsed_s} s)`;
  drawCurves($("#live-curves"), [{ label: job.run, metrics: job.metrics }], job.epochs);
  if (job.state === "running") { setTimeout(followJob, 500); return; }
  $("#stop-training").disabled = true;
  state.job = null;
  previewSpec();
  await refreshRuns(job.run).catch(() => {});
  status(`training ${job.state}: ${job.run}`);
}

// ---------------------------------------------------------------- model
loaders.model = async () => {
  if (!state.detail) return;
  const s = state.detail.summary;
  $("#model-title").textContent = `${state.run}: ${s.spec}`;
  const blocks = [el("div", { class: "block" }, el("b", { text: "input" }), el("span", { class: "shape", text: s.input_shape.slice(1).concat(s.input_shape[0]).join("×") }))];
  for (const l of s.layers) {
    blocks.push(el("span", { class: "arrow", text: "→" }));
    blocks.push(el("div", { class: `block ${l.token.replace(/[^a-z].*/, "").replace("pool", "maxpool")}` },
      el("b", { text: l.name }), el("span", { class: "shape", text: l.output }), el("span", { class: "params", text: `${fmt(l.params)} params` })));
  }
  $("#diagram").replaceChildren(...blocks);
  summaryRows($("#summary-table"), s);
};

// ---------------------------------------------------------------- evaluate
loaders.evaluate = async () => {
  if (!state.run) return;
  $("#eval-title").textContent = `${state.run} (evaluating the test set…)`;
  let ev;
  try { ev = await api(`/api/runs/${encodeURIComponent(state.run)}/evaluation`); }
  catch (e) { $("#eval-title").textContent = `${state.run}: ${e.message}`; return; }
  $("#eval-title").textContent = state.run;
  $("#eval-metrics").textContent = `${fmt(ev.images)} test images: accuracy ${pct(ev.accuracy)}, loss ${ev.loss.toFixed(4)}`;
  const short = ev.classes.map((c) => c.slice(0, 7));
  const rows = [el("tr", {}, el("th", { text: "" }), ...short.map((c) => el("th", { text: c })))];
  ev.confusion.forEach((row, i) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    rows.push(el("tr", {}, el("th", { class: "rowhead", text: ev.classes[i] }), ...row.map((n, j) => {
      const share = n / total;
      const td = el("td", { "data-true": i, "data-pred": j, text: String(n), title: `${ev.classes[i]} predicted as ${ev.classes[j]}: ${n}` });
      td.style.background = i === j ? `rgba(18,183,106,${0.15 + 0.7 * share})` : `rgba(217,45,32,${Math.min(0.85, 3 * share)})`;
      if (share > 0.45 || (i !== j && share > 0.2)) td.style.color = "#fff";
      td.addEventListener("click", () => showCell(i, j, td));
      return td;
    })));
  });
  $("#confusion").replaceChildren(...rows);
};

async function showCell(t, p, td) {
  document.querySelectorAll("#confusion td.picked").forEach((x) => x.classList.remove("picked"));
  td.classList.add("picked");
  const cell = await api(`/api/runs/${encodeURIComponent(state.run)}/cell?true=${t}&predicted=${p}&limit=60`);
  $("#cell-title").textContent = `${cell.true} predicted as ${cell.predicted}: ${fmt(cell.count)} images` + (cell.count > cell.images.length ? ` (the ${cell.images.length} surest shown)` : "");
  $("#cell-gallery").replaceChildren(...cell.images.map((im) => {
    const fig = el("figure", { "data-index": im.index },
      el("img", { src: `/api/runs/${encodeURIComponent(state.run)}/test/${im.index}.png`, alt: `test image ${im.index}` }),
      el("figcaption", { text: `#${im.index} ${(100 * im.probability).toFixed(0)}%` }));
    fig.addEventListener("click", () => { $("#test-index").value = im.index; showTab("inspect"); inspect({ index: im.index }); });
    return fig;
  }));
}

// ---------------------------------------------------------------- inspect
function sourceQuery(src) {
  return src.index != null ? `index=${src.index}` : `image_id=${encodeURIComponent(src.image_id)}`;
}

async function inspect(src) {
  if (!state.run) { status("train or choose a run first"); return; }
  state.inspectSource = src;
  status("inspecting…");
  const r = await api(`/api/runs/${encodeURIComponent(state.run)}/inspect?${sourceQuery(src)}`);
  state.inspection = r;
  state.hoverKey = null;
  $("#arith").replaceChildren(el("p", { class: "hint", text: "Hover a pixel of a conv layer's feature map to see how it is computed." }));
  $("#inspect-result").hidden = false;
  $("#inspect-label").textContent = r.label + (r.true_class ? `, true class ${r.true_class}` : "");
  const [c, h, w] = [r.input.length, r.input[0].length, r.input[0][0].length];
  state.inputShape = [c, h, w];
  drawInput();
  $("#topk").replaceChildren(...r.top.map((t) => el("div", { class: "bar" }, el("span", { text: t.class }),
    Object.assign(el("div"), { style: `width:${Math.max(2, 220 * t.probability)}px` }), el("b", { text: pct(t.probability) }))));
  const overlay = (canvas, map) => {
    drawInput(canvas);
    const ctx = canvas.getContext("2d");
    const off = document.createElement("canvas"); off.width = map[0].length; off.height = map.length;
    const img = off.getContext("2d").createImageData(off.width, off.height);
    flat2d(map).forEach((v, i) => img.data.set([255, Math.round(80 * (1 - v)), 0, Math.round(200 * v)], 4 * i));
    off.getContext("2d").putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(off, 0, 0, canvas.width, canvas.height);
  };
  if (r.cam) { $("#cam-title").textContent = `${r.cam.method} on ${r.cam.layer} for ${r.cam.target}`; overlay($("#cam-view"), r.cam.map); }
  else { $("#cam-title").textContent = "no conv layer: no class activation map"; drawInput($("#cam-view")); }
  overlay($("#saliency-view"), r.saliency);
  const layers = r.layers.map((layer) => {
    const box = el("div", { class: "layer" }, el("h3", { text: `${layer.name} (${layer.type})` }, el("small", { text: layer.shape })));
    if (layer.maps) {
      const maps = decodeMaps(layer.maps);
      const [, mh, mw] = layer.maps.shape;
      const grid = el("div", { class: "maps" });
      maps.forEach((m, ch) => {
        const cv = el("canvas", { width: mw, height: mh, "data-layer": layer.name, "data-channel": ch, class: layer.kind === "conv" ? "conv" : "", title: `${layer.name} map ${ch}` });
        drawGray(cv, m, mh, mw, heat);
        cv.addEventListener("click", () => enlarge(cv, `${layer.name}, map ${ch} (${mh}×${mw}); values ${layer.maps.min[ch].toFixed(3)} to ${layer.maps.max[ch].toFixed(3)}`));
        if (layer.kind === "conv") {
          cv.addEventListener("mousemove", (e) => hoverPixel(e, cv, layer.name, ch, mh, mw));
        }
        grid.append(cv);
      });
      box.append(grid);
    } else {
      box.append(el("div", { class: "values", text: layer.values.map((v) => v.toFixed(3)).join("  ") }));
    }
    return box;
  });
  $("#layers").replaceChildren(...layers);
  status(`inspected ${r.label} in ${r.time_ms} ms`);
  loadKernels();
}

function drawInput(canvas = $("#input-view"), box = null) {
  const r = state.inspection;
  const [c, h, w] = state.inputShape;
  const gray = c === 1 ? flat2d(r.input[0]) : flat2d(r.input[0]).map((_, i) => Math.round((flat2d(r.input[0])[i] + flat2d(r.input[1])[i] + flat2d(r.input[2])[i]) / 3));
  drawGray(canvas, gray, h, w);
  if (box) {
    const ctx = canvas.getContext("2d"), sx = canvas.width / w, sy = canvas.height / h;
    ctx.strokeStyle = "#ff3b30"; ctx.lineWidth = 2;
    ctx.strokeRect(box[1] * sx, box[0] * sy, (box[3] - box[1] + 1) * sx, (box[2] - box[0] + 1) * sy);
  }
}

function enlarge(canvas, caption) {
  const big = $("#enlarge-canvas"), ctx = big.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, big.width, big.height);
  ctx.drawImage(canvas, 0, 0, big.width, big.height);
  $("#enlarge-caption").textContent = caption;
  $("#enlarge").hidden = false;
}
$("#enlarge").addEventListener("click", () => { $("#enlarge").hidden = true; });

function numTable(rows, digits = 3) {
  return el("table", {}, ...rows.map((row) => el("tr", {}, ...row.map((v) => el("td", { text: v.toFixed(digits) })))));
}

async function hoverPixel(event, canvas, layer, channel, h, w) {
  const rect = canvas.getBoundingClientRect();
  const col = Math.min(w - 1, Math.floor(((event.clientX - rect.left) / rect.width) * w));
  const row = Math.min(h - 1, Math.floor(((event.clientY - rect.top) / rect.height) * h));
  const key = `${layer}/${channel}/${row}/${col}`;
  if (key === state.hoverKey) return;
  state.hoverKey = key;
  state.hoverAbort?.abort();
  state.hoverAbort = new AbortController();
  let a;
  try {
    a = await api(`/api/runs/${encodeURIComponent(state.run)}/arithmetic?layer=${layer}&channel=${channel}&row=${row}&col=${col}&${sourceQuery(state.inspectSource)}`,
                  { signal: state.hoverAbort.signal });
  } catch (e) { if (e.name !== "AbortError") $("#arith").textContent = e.message; return; }
  drawInput($("#input-view"), a.receptive_field);
  const box = $("#arith");
  const seen = el("canvas", { width: 112, height: 112, class: "seen", title: "the input pixels this output pixel depends on" });
  drawInput(seen, a.receptive_field);
  const head = `${a.layer}, filter ${a.channel}, output pixel (${a.row}, ${a.col}): the ${a.patch[0].length}×${a.patch[0][0].length} patch of ${a.input_from} whose top-left is (${a.top_left.join(", ")})` +
    ` — in the input image it sees rows ${a.receptive_field[0]}–${a.receptive_field[2]}, columns ${a.receptive_field[1]}–${a.receptive_field[3]} (red box)\n`;
  const parts = [seen, head];
  if (a.patch.length === 1) {
    parts.push(el("span", { text: "patch " }), numTable(a.patch[0]), el("span", { text: " × kernel " }), numTable(a.kernel[0]),
      el("span", { text: " = products " }), numTable(a.products[0]), el("br"));
  } else {
    const order = a.channel_sums.map((v, i) => [Math.abs(v), i]).sort((x, y) => y[0] - x[0]).slice(0, 4).map((x) => x[1]);
    parts.push(`${a.patch.length} input channels; Σ over each channel's 3×3 patch × kernel, the 4 largest:\n`);
    for (const i of order) {
      parts.push(el("span", { text: `channel ${i}: ` }), numTable(a.patch[i]), el("span", { text: " × " }), numTable(a.kernel[i]),
        el("span", { text: ` → ${a.channel_sums[i].toFixed(4)}` }), el("br"));
    }
  }
  const act = a.activation === "linear" ? "" : ` → ${a.activation} → ${a.value.toFixed(4)}`;
  parts.push(`Σ pixel × weight = ${a.total.toFixed(4)}   + bias ${a.bias.toFixed(4)} = ${a.pre_activation.toFixed(4)}${act}`);
  box.replaceChildren(...parts);
}

async function loadKernels() {
  const ks = await api(`/api/runs/${encodeURIComponent(state.run)}/kernels`);
  const out = [];
  for (const k of ks) {
    const [o, i, kh, kw] = k.shape;
    out.push(el("h3", { text: `${k.layer}: ${o} kernels of ${kh}×${kw}×${i}` + (i > k.shown_inputs ? ` (input channel 0 of each)` : "") }));
    const grid = el("div", { class: "maps" });
    const all = k.weights.flat(3), lim = Math.max(...all.map(Math.abs)) || 1;
    k.weights.forEach((w, n) => {
      const cv = el("canvas", { width: kw, height: kh, title: `${k.layer} kernel ${n}` });
      drawGray(cv, flat2d(w[0]).map((v) => Math.round(127.5 + 127.5 * v / lim)), kh, kw, (v) => (v >= 128 ? [255, 255 - 2 * (v - 128), 255 - 2 * (v - 128)] : [2 * v, 2 * v, 255]));
      cv.style.width = "40px"; cv.style.height = "40px";
      grid.append(cv);
    });
    out.push(grid);
  }
  $("#kernels").replaceChildren(...out);
}

$("#inspect-test").addEventListener("click", () => inspect({ index: Number($("#test-index").value) }));

async function uploadBlob(blob, name) {
  const form = new FormData();
  form.append("file", blob, name);
  const r = await api("/api/upload", { method: "POST", body: form });
  state.uploadId = r.image_id;
  return r;
}

$("#upload").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  if (!file) return;
  $("#upload-error").textContent = "";
  try {
    const r = await uploadBlob(file, file.name);
    await inspect({ image_id: r.image_id });
  } catch (err) { $("#upload-error").textContent = err.message; }
});

// the drawing canvas: a light stroke on black, like Fashion-MNIST's images
const drawCanvas = $("#draw"), dctx = drawCanvas.getContext("2d");
function clearDrawing() { dctx.fillStyle = "#000"; dctx.fillRect(0, 0, drawCanvas.width, drawCanvas.height); }
clearDrawing();
let drawing = false;
function stroke(e) {
  if (!drawing) return;
  const r = drawCanvas.getBoundingClientRect();
  const x = ((e.clientX - r.left) / r.width) * drawCanvas.width, y = ((e.clientY - r.top) / r.height) * drawCanvas.height;
  dctx.fillStyle = "#fff"; dctx.beginPath(); dctx.arc(x, y, 14, 0, 2 * Math.PI); dctx.fill();
}
drawCanvas.addEventListener("mousedown", (e) => { drawing = true; stroke(e); });
drawCanvas.addEventListener("mousemove", stroke);
window.addEventListener("mouseup", () => { drawing = false; });
$("#clear-drawing").addEventListener("click", clearDrawing);
$("#use-drawing").addEventListener("click", async () => {
  const blob = await new Promise((resolve) => drawCanvas.toBlob(resolve, "image/png"));
  try {
    const r = await uploadBlob(blob, "drawing.png");
    await inspect({ image_id: r.image_id });
  } catch (err) { $("#upload-error").textContent = err.message; }
});

// ---------------------------------------------------------------- convolution lab
async function loadNamedKernels() {
  const ks = await api("/api/kernels");
  $("#lab-kernel").replaceChildren(...ks.map((k) => el("option", { value: k.name, text: k.name, title: k.about })), el("option", { value: "custom", text: "custom…" }));
}

async function runLab(pixel = null) {
  const kernelName = $("#lab-kernel").value;
  const body = { kernel: kernelName === "custom" ? $("#lab-custom").value : kernelName, stride: Number($("#lab-stride").value),
                 padding: Number($("#lab-padding").value), pool: Number($("#lab-pool").value) };
  if ($("#lab-use-upload").checked && state.uploadId) body.image_id = state.uploadId; else body.index = Number($("#lab-index").value);
  if (pixel) { body.row = pixel[0]; body.col = pixel[1]; }
  let r;
  try { r = await post("/api/convolve", body); } catch (e) { $("#lab-error").textContent = e.message; return; }
  $("#lab-error").textContent = "";
  state.lab = r;
  const show = (canvas, m, label) => {
    const [, h, w] = m.shape;
    const scale = Math.min(280 / h, 280 / w);
    canvas.width = Math.round(w * scale); canvas.height = Math.round(h * scale);
    drawGray(canvas, decodeMaps(m)[0], h, w, label === "image" ? null : heat);
  };
  show($("#lab-image"), r.image, "image"); show($("#lab-result"), r.result, "result");
  if (r.pooled) show($("#lab-pooled"), r.pooled, "pooled"); else $("#lab-pooled").getContext("2d").clearRect(0, 0, 280, 280);
  const shapes = r.shapes.split(" → ");
  $("#lab-shape-in").textContent = shapes[0] || ""; $("#lab-shape-out").textContent = shapes[1] || ""; $("#lab-shape-pool").textContent = shapes[2] || "";
  $("#lab-kernel-table").replaceChildren(...r.kernel.map((row) => el("tr", {}, ...row.map((v) => el("td", { text: String(+v.toFixed(4)) })))));
  $("#lab-arith").textContent = `${r.label}, kernel ${r.kernel_name}: ${r.shapes}\n${r.pixel.text}\n` +
    `(reference sum vs torch conv2d: max difference ${r.torch_max_diff.toExponential(1)})`;
  const ctx = $("#lab-result").getContext("2d"), [, h, w] = r.result.shape, sx = $("#lab-result").width / w, sy = $("#lab-result").height / h;
  ctx.strokeStyle = "#ff3b30"; ctx.lineWidth = 2; ctx.strokeRect(r.pixel.col * sx, r.pixel.row * sy, sx, sy);
}
$("#lab-run").addEventListener("click", () => runLab());
$("#lab-result").addEventListener("click", (e) => {
  if (!state.lab) return;
  const [, h, w] = state.lab.result.shape, rect = e.target.getBoundingClientRect();
  runLab([Math.floor(((e.clientY - rect.top) / rect.height) * h), Math.floor(((e.clientX - rect.left) / rect.width) * w)]);
});
loaders.lab = () => { if (!state.lab) runLab(); };

// ---------------------------------------------------------------- start
(async function start() {
  const presets = await api("/api/presets");
  $("#preset").replaceChildren(...presets.map((p) => el("option", { value: p.name, text: `${p.name}: ${p.spec}`, title: p.description })));
  await loadNamedKernels();
  await previewSpec();
  await refreshRuns();
  const running = (await api("/api/jobs")).find((j) => j.state === "running");
  if (running) { state.job = running; $("#stop-training").disabled = false; followJob(); }
  status(state.runs.length ? `${state.runs.length} run(s)` : "no runs yet: start one under Train");
  document.body.dataset.ready = "1";
})().catch((e) => status(`error: ${e.message}`));
