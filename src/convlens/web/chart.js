// Line charts that can be read: axes with ticks and gridlines, any number of series (a dashed line for
// validation), vertical marks (best epoch, overfitting onset), and under the pointer every series'
// value at that x. SVG, drawn from numbers the server computed (compare.curve_series, the job's steps).
import { el } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
export const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
const W = 440, H = 250, PAD = { left: 62, right: 12, top: 26, bottom: 38 };

const svg = (tag, attrs = {}, text = null) => {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text != null) node.textContent = text;
  return node;
};

// About five round ticks between lo and hi (1, 2 or 5 times a power of ten apart).
export function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count, power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toFixed(10)));
  return out;
}

export const PERCENT = (v) => `${(100 * v).toFixed(2)} %`;
export const PERCENT_TICK = (v) => `${Number((100 * v).toPrecision(3))} %`;
const short = (v) => (Math.abs(v) >= 1000 ? v.toExponential(1) : Number(v.toPrecision(3)).toString());

// A chart in `box`: spec = {title, xLabel, yLabel, series: [{label, color, dash, points: [[x, y], …]}],
// marks: [{x, label, color}], format: y -> text under the pointer, tickFormat: y -> a tick's text}. Returns the <svg>.
export function lineChart(box, spec) {
  const pts = spec.series.flatMap((s) => s.points).filter(([, y]) => Number.isFinite(y));
  const xs = pts.map(([x]) => x), ys = pts.map(([, y]) => y);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (!pts.length) { [x0, x1, y0, y1] = [0, 1, 0, 1]; }
  if (x1 === x0) x1 = x0 + 1;
  const span = y1 - y0 || Math.abs(y1) || 1;
  y0 -= span * 0.05; y1 += span * 0.05;
  const sx = (x) => PAD.left + ((x - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
  const sy = (y) => H - PAD.bottom - ((y - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "line-chart", role: "img",
                             "aria-label": spec.title });
  chart.append(svg("text", { x: PAD.left, y: 16, class: "chart-title" }, spec.title));
  for (const t of ticks(y0, y1)) {
    chart.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: sy(t), y2: sy(t), class: "grid" }),
                 svg("text", { x: PAD.left - 6, y: sy(t) + 4, class: "tick", "text-anchor": "end" }, (spec.tickFormat ?? spec.format ?? short)(t)));
  }
  for (const t of ticks(x0, x1, 6)) {
    chart.append(svg("line", { x1: sx(t), x2: sx(t), y1: PAD.top, y2: H - PAD.bottom, class: "grid" }),
                 svg("text", { x: sx(t), y: H - PAD.bottom + 16, class: "tick", "text-anchor": "middle" }, short(t)));
  }
  chart.append(svg("rect", { x: PAD.left, y: PAD.top, width: W - PAD.left - PAD.right, height: H - PAD.top - PAD.bottom, class: "frame" }),
               svg("text", { x: (W + PAD.left) / 2, y: H - 4, class: "axis-label", "text-anchor": "middle" }, spec.xLabel),
               svg("text", { x: 10, y: (H - PAD.bottom + PAD.top) / 2, class: "axis-label", "text-anchor": "middle",
                             transform: `rotate(-90 10 ${(H - PAD.bottom + PAD.top) / 2})` }, spec.yLabel));
  (spec.marks ?? []).forEach((m, i) => {            // labels stepped down, so that marks at one x stay legible
    chart.append(svg("line", { x1: sx(m.x), x2: sx(m.x), y1: PAD.top, y2: H - PAD.bottom, class: "mark", stroke: m.color ?? "#555" }),
                 svg("text", { x: sx(m.x) + 3, y: PAD.top + 11 + 11 * (i % 4), class: "mark-label", fill: m.color ?? "#555" }, m.label));
  });
  for (const s of spec.series) {
    const d = s.points.filter(([, y]) => Number.isFinite(y)).map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("");
    chart.append(svg("path", { d, class: "series", stroke: s.color, "stroke-dasharray": s.dash ? "5 3" : "none", "data-label": s.label }));
    if (s.points.length < 40) {
      for (const [x, y] of s.points) if (Number.isFinite(y)) chart.append(svg("circle", { cx: sx(x), cy: sy(y), r: 2.5, fill: s.color }));
    }
  }
  hover(chart, spec, sx, x0, x1);
  box.replaceChildren(el("div", { class: "chart-box" }, chart, legend(spec.series)));
  return chart;
}

function legend(series) {
  return el("div", { class: "chart-legend" }, ...series.map((s) => el("span", {},
    el("i", { style: `border-top: 2px ${s.dash ? "dashed" : "solid"} ${s.color}` }), s.label)));
}

// Under the pointer: a vertical line at the nearest x and each series' value there.
function hover(chart, spec, sx, x0, x1) {
  const line = svg("line", { y1: PAD.top, y2: H - PAD.bottom, class: "cursor", visibility: "hidden" });
  const tip = svg("text", { class: "tip", y: PAD.top + 24, visibility: "hidden" });
  chart.append(line, tip);
  chart.addEventListener("mousemove", (e) => {
    const r = chart.getBoundingClientRect(), px = ((e.clientX - r.left) / r.width) * W;
    const x = x0 + ((px - PAD.left) / (W - PAD.left - PAD.right)) * (x1 - x0);
    const rows = spec.series.map((s) => {
      const near = s.points.reduce((best, p) => (Math.abs(p[0] - x) < Math.abs(best[0] - x) ? p : best), s.points[0]);
      return near && { s, near };
    }).filter(Boolean);
    if (!rows.length) return;
    const at = rows[0].near[0];
    line.setAttribute("x1", sx(at)); line.setAttribute("x2", sx(at)); line.setAttribute("visibility", "visible");
    tip.replaceChildren(svg("tspan", { x: PAD.left + 6, dy: 0 }, `${spec.xLabel} ${short(at)}`),
      ...rows.map(({ s, near }) => svg("tspan", { x: PAD.left + 6, dy: 13, fill: s.color },
        `${s.label}: ${(spec.format ?? short)(near[1])}`)));
    tip.setAttribute("visibility", "visible");
    chart.dataset.hovered = JSON.stringify(rows.map(({ s, near }) => [s.label, near[0], near[1]]));
  });
  chart.addEventListener("mouseleave", () => { line.setAttribute("visibility", "hidden"); tip.setAttribute("visibility", "hidden"); });
}

// Every run's epoch curves (compare.curve_series) as a loss chart and an accuracy chart, overlaid:
// one colour a run, training solid, validation dashed, each run's best epoch and overfitting onset marked.
export function epochCharts(box, curves) {
  const series = (key, vkey) => curves.flatMap((c, i) => [
    { label: `${c.label} train`, color: PALETTE[i % PALETTE.length], points: c.epochs.map((e, j) => [e, c[key][j]]) },
    ...(c[vkey] ? [{ label: `${c.label} val`, color: PALETTE[i % PALETTE.length], dash: true,
                     points: c.epochs.map((e, j) => [e, c[vkey][j]]) }] : [])]);
  const marks = curves.flatMap((c, i) => [
    ...(c.best ? [{ x: c.best, label: `best ${c.best}`, color: PALETTE[i % PALETTE.length] }] : []),
    ...(c.onset ? [{ x: c.onset, label: `overfits from ${c.onset}`, color: "#b00" }] : [])]);
  const loss = el("div"), acc = el("div");
  box.replaceChildren(loss, acc);
  lineChart(loss, { title: "loss", xLabel: "epoch", yLabel: "cross-entropy", series: series("loss", "val_loss"), marks });
  lineChart(acc, { title: "accuracy", xLabel: "epoch", yLabel: "accuracy", series: series("accuracy", "val_accuracy"), marks,
                   format: PERCENT, tickFormat: PERCENT_TICK });
}
