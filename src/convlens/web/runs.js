// The Runs tab: the runs folder as a table, the selected run's curves, and a comparison with another
// run — the table of `convlens compare` (/api/compare) and charts.py's curves, as PNGs.
import { api, runPath } from "./api.js";
import { $, activeTab, el, loaders, pct, showError, textTable } from "./dom.js";
import { showPicture } from "./draw.js";
import { clearInspection } from "./inspect.js";
import { state } from "./state.js";
import { writeView } from "./url.js";

export async function refreshRuns(select = null) {
  state.runs = await api("/api/runs");
  const sel = $("#run-select"), cmp = $("#compare-select");
  const known = (n) => n && state.runs.some((r) => r.name === n);
  const current = [select, state.run].find(known) || state.runs[0]?.name || null;
  const options = () => state.runs.map((r) => el("option", { value: r.name, text: r.name }));
  sel.replaceChildren(...(state.runs.length ? options() : [el("option", { value: "", text: "(no runs yet)" })]));
  cmp.replaceChildren(el("option", { value: "", text: "(choose a run)" }), ...options());
  cmp.dataset.run = "";
  $("#runs-table tbody").replaceChildren(...state.runs.map((r) => {
    const tr = el("tr", { "data-run": r.name },
      el("td", { text: r.name }), el("td", { text: r.model }), el("td", { text: r.dataset || "" }),
      el("td", { class: "num", text: `${r.epochs}/${r.epochs_planned ?? "?"}` }),
      el("td", { class: "num", text: pct(r.test_accuracy) }),
      el("td", {}, r.state, ...(r.resumable ? [" ", el("button", { class: "resume", "data-resume": r.name, text: "Resume" })] : [])));
    tr.addEventListener("click", () => selectRun(r.name));
    return tr;
  }));
  if (current) await selectRun(current, false);
}

// "Compare with" offers every run but the one selected.
function compareChoices(name) {
  const cmp = $("#compare-select");
  if (cmp.dataset.run === name) return;
  for (const o of cmp.options) o.hidden = o.disabled = o.value === name;
  if (cmp.value === name) cmp.value = "";
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
  try { state.detail = await api(runPath(name)); }
  catch (e) { showError($("#curves-title"), e); return; }
  $("#curves-title").textContent = name;
  await showComparison().catch((e) => showError($("#compare-table"), e));
  if (reloadTab && loaders[activeTab()]) loaders[activeTab()]();
}

async function showComparison() {
  if (!state.detail) return;
  const other = $("#compare-select").value;
  const names = other && other !== state.run ? [state.run, other] : [state.run];
  const query = names.map((n) => `runs=${encodeURIComponent(n)}`).join("&");
  const shown = showPicture($("#curves"), names.length > 1 ? `/api/compare/curves.png?${query}`
    : `${runPath(state.run)}/curves.png?epochs=${state.detail.metrics.length}`);
  if (names.length < 2) { $("#compare-table").replaceChildren(); await shown; return; }
  const { head, rows } = await api(`/api/compare?${query}`);
  textTable($("#compare-table"), head, rows, [2, 3, 4, 5, 6, 7, 8]);
  await shown;
}

export function setUpRuns() {
  $("#run-select").addEventListener("change", (e) => selectRun(e.target.value));
  $("#compare-select").addEventListener("change", showComparison);
}
