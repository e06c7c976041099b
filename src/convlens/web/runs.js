// The Runs tab: the runs folder as a table, the selected run's curves, and a comparison with any
// number of other runs — the table of `convlens compare` (/api/compare) and every run's curves
// overlaid (chart.js, from compare.curve_series: the numbers the report's chart is drawn from).
import { api, post, runPath } from "./api.js";
import { $, activeTab, el, fmt, loaders, pct, showError, textTable } from "./dom.js";
import { epochCharts } from "./chart.js";
import { clearInspection } from "./inspect.js";
import { state } from "./state.js";
import { writeView } from "./url.js";

// The runs table's order: a heading clicked once sorts by it (numbers and dates largest first), twice
// the other way.
const sorting = { key: null, descending: true };
const NUMERIC = ["epochs", "test_accuracy", "params", "train_time_s", "created"];

function sorted(runs) {
  const { key, descending } = sorting;
  if (!key) return runs;
  const value = (r) => r[key] ?? (NUMERIC.includes(key) ? -Infinity : "");
  return [...runs].sort((a, b) => {
    const x = value(a), y = value(b), order = x < y ? -1 : x > y ? 1 : 0;
    return descending ? -order : order;
  });
}

function runRow(r) {
  const tr = el("tr", { "data-run": r.name },
    el("td", { text: r.name }), el("td", { text: r.model }), el("td", { text: r.dataset || "" }),
    el("td", { class: "num", text: `${r.epochs}/${r.epochs_planned ?? "?"}` }),
    el("td", { class: "num", text: pct(r.test_accuracy) }),
    el("td", {}, r.state, ...(r.resumable ? [" ", el("button", { class: "resume", "data-resume": r.name, text: "Resume" })] : [])),
    el("td", { class: "num", text: fmt(r.params) }),
    el("td", { class: "num", text: r.train_time_s == null ? "–" : `${r.train_time_s.toFixed(1)} s` }),
    el("td", { text: (r.created || "").replace("T", " ").slice(0, 16) }));
  tr.addEventListener("click", () => selectRun(r.name));
  return tr;
}

function drawRunsTable() {
  $("#runs-table tbody").replaceChildren(...sorted(state.runs).map(runRow));
  document.querySelectorAll("#runs-table tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.run === state.run));
  document.querySelectorAll("#runs-table th[data-sort]").forEach((th) =>
    th.classList.toggle("sorted", th.dataset.sort === sorting.key));
}

export async function refreshRuns(select = null) {
  state.runs = await api("/api/runs");
  const sel = $("#run-select"), cmp = $("#compare-select");
  const known = (n) => n && state.runs.some((r) => r.name === n);
  const current = [select, state.run].find(known) || state.runs[0]?.name || null;
  const options = () => state.runs.map((r) => el("option", { value: r.name, text: r.name }));
  sel.replaceChildren(...(state.runs.length ? options() : [el("option", { value: "", text: "(no runs yet)" })]));
  const chosen = new Set([...cmp.selectedOptions].map((o) => o.value));
  cmp.replaceChildren(...options());
  for (const o of cmp.options) o.selected = chosen.has(o.value);
  cmp.dataset.run = "";
  drawRunsTable();
  if (current) await selectRun(current, false);
}

// "Compare with" offers every run but the one selected.
function compareChoices(name) {
  const cmp = $("#compare-select");
  if (cmp.dataset.run === name) return;
  for (const o of cmp.options) {
    o.hidden = o.disabled = o.value === name;
    if (o.hidden) o.selected = false;
  }
  cmp.dataset.run = name;
}

export async function selectRun(name, reloadTab = true) {
  if (name !== state.run) {
    clearInspection();                 // another run's maps and arithmetic must not stay beside this one's
    state.detail = null;
  }
  state.run = name;
  writeView({ run: name });
  $("#run-select").value = name;
  compareChoices(name);
  document.querySelectorAll("#runs-table tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.run === name));
  let detail;
  try { detail = await api(runPath(name)); }
  catch (e) { if (state.run === name) showError($("#curves-title"), e); return; }
  if (state.run !== name) return;      // another run was chosen while this one loaded: its own call goes on
  state.detail = detail;
  $("#curves-title").textContent = name;
  const entry = state.runs.find((r) => r.name === name), link = $("#report-link");
  link.hidden = !entry?.report;
  link.href = `/runs/${encodeURIComponent(name)}/report.html`;
  await showComparison().catch((e) => showError($("#compare-table"), e));
  if (reloadTab && loaders[activeTab()]) loaders[activeTab()]();
}

// The selected run and those chosen to compare with it, as the page shows them now.
function chosenRuns() {
  const others = [...$("#compare-select").selectedOptions].map((o) => o.value).filter((v) => v && v !== state.run);
  return [state.run, ...others];                       // any number of runs overlaid (the API takes 16)
}

async function showComparison() {
  if (!state.detail) return;
  const names = chosenRuns(), stale = () => names.join() !== chosenRuns().join();
  const query = names.map((n) => `runs=${encodeURIComponent(n)}`).join("&");
  const curves = await api(`/api/curves?${query}`);
  if (stale()) return;            // another choice was made while this one loaded: its own answer draws
  $("#curves").dataset.runs = names.join(",");
  epochCharts($("#curves"), curves);
  if (names.length < 2) { $("#compare-table").replaceChildren(); return; }
  const { head, rows } = await api(`/api/compare?${query}`);
  if (!stale()) textTable($("#compare-table"), head, rows, [2, 3, 4, 5, 6, 7, 8]);
}

// Rename or delete the selected run (the server refuses while it trains, and any name that is a path).
async function renameRun() {
  const name = state.run, to = name && window.prompt(`New name for run ${name}:`, name);
  if (!to || to === name) return;
  $("#manage-error").textContent = "";
  try { await post(`${runPath(name)}/rename`, { to }); }
  catch (e) { showError($("#manage-error"), e); return; }
  await refreshRuns(to);
}

async function deleteRun() {
  const name = state.run;
  if (!name || !window.confirm(`Delete run ${name} and all its files? This cannot be undone.`)) return;
  $("#manage-error").textContent = "";
  try { await api(runPath(name), { method: "DELETE" }); }
  catch (e) { showError($("#manage-error"), e); return; }
  state.run = null;
  await refreshRuns();
}

export function setUpRuns() {
  $("#run-select").addEventListener("change", (e) => selectRun(e.target.value));
  $("#compare-select").addEventListener("change", showComparison);
  $("#rename-run").addEventListener("click", renameRun);
  $("#delete-run").addEventListener("click", deleteRun);
  document.querySelectorAll("#runs-table th[data-sort]").forEach((th) => th.addEventListener("click", () => {
    sorting.descending = sorting.key === th.dataset.sort ? !sorting.descending : true;
    sorting.key = th.dataset.sort;
    drawRunsTable();
  }));
}
