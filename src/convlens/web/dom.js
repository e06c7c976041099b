// Small DOM helpers shared by every tab.
import { writeView } from "./url.js";

export const $ = (sel) => document.querySelector(sel);
export const pct = (x) => (x == null ? "–" : (100 * x).toFixed(2) + " %");
export const fmt = (n) => n.toLocaleString("en-US");

export function status(text) { $("#status").textContent = text; }

// A request that failed, said where it was asked for (`where`: an element) and in the status line,
// in the server's one sentence.
export function showError(where, e) {
  if (where) where.textContent = e.message;
  status(`error: ${e.message}`);
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

// A table of text: a header row, then the rows (numbers right-aligned where asked).
export function textTable(table, head, rows, numeric = []) {
  table.replaceChildren(el("tr", {}, ...head.map((h) => el("th", { text: h }))),
    ...rows.map((row) => el("tr", {}, ...row.map((v, j) => el("td", { class: numeric.includes(j) ? "num" : "", text: String(v) })))));
}

// Tabs: each tab module registers what to do when it is shown (showTab returns what that gives).
export const loaders = {};
export function showTab(name) {
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  document.querySelectorAll(".tab").forEach((s) => s.classList.toggle("active", s.id === name));
  writeView({ tab: name });
  return loaders[name] ? loaders[name]() : null;
}
export const activeTab = () => document.querySelector("nav button.active").dataset.tab;

// Numbers as a small table, each cell shaded on the diverging scale of the whole table (red +, blue −,
// white 0), so the signs of a patch, a kernel and their products read at a glance.
export function numTable(rows, digits = 3) {
  const m = Math.max(1e-12, ...rows.flat().map(Math.abs));
  const shade = (v) => `background: rgba(${v > 0 ? "214, 39, 40" : "31, 119, 180"}, ${(0.45 * Math.abs(v) / m).toFixed(3)})`;
  return el("table", { class: "numbers" }, ...rows.map((row) => el("tr", {}, ...row.map((v) => el("td", { text: v.toFixed(digits), style: shade(v) })))));
}
