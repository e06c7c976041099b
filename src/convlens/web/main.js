// convlens explorer: one page over the JSON API (api.py), ES modules served as they are (no build
// step, no network but this server). Numbers and pictures come from the server, computed by the same
// code as the CLI and the report; these modules only lay them out and draw the interactive canvases.
import { api } from "./api.js";
import { $, el, showTab, status } from "./dom.js";
import { loadColormaps } from "./draw.js";
import "./evaluate.js";
import { setUpFilters } from "./filters.js";
import { setUpInspect } from "./inspect.js";
import { loadNamedKernels, setUpLab } from "./lab.js";
import "./model.js";
import { setUpNetwork } from "./network.js";
import { setUpProbe } from "./probe.js";
import { refreshRuns, setUpRuns } from "./runs.js";
import { state } from "./state.js";
import { followJob, matchPreset, previewSpec, resumeRun, setUpTrain } from "./train.js";
import { setUpCheck } from "./trust.js";
import { readView } from "./url.js";

// The view a reload or a shared link names (url.js): its tab, its test image, the map whose filter is open.
async function restoreView(view) {
  if (view.index != null && Number.isInteger(Number(view.index))) {
    $("#test-index").value = view.index;
    state.inspectSource = { index: Number(view.index) };
  }
  if (!view.tab || !document.getElementById(view.tab)?.classList.contains("tab")) return;
  await showTab(view.tab);
  if (view.tab === "network" && view.layer && view.map != null) {
    const map = [...document.querySelectorAll("#net canvas")]
      .find((c) => c.dataset.layer === view.layer && c.dataset.channel === String(Number(view.map)));
    map?.dispatchEvent(new MouseEvent("click"));
  }
  if (view.tab === "inspect" && state.inspection && view.layer && view.map != null) {
    const map = [...document.querySelectorAll("#layers canvas")]
      .find((c) => c.dataset.layer === view.layer && c.dataset.channel === String(Number(view.map)));
    map?.dispatchEvent(new MouseEvent("click"));
  }
}

async function start() {
  document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
  setUpRuns(); setUpTrain(); setUpInspect(); setUpLab(); setUpCheck(); setUpFilters(); setUpProbe(); setUpNetwork();
  $("#runs-table").addEventListener("click", (e) => {               // a stopped run's Resume button
    if (e.target.dataset.resume) { e.stopPropagation(); resumeRun(e.target.dataset.resume); }
  }, true);
  loadColormaps(await api("/api/colormaps"));
  const presets = await api("/api/presets");
  $("#preset").replaceChildren(el("option", { value: "", text: "(your own spec)" }),
    ...presets.map((p) => el("option", { value: p.name, text: `${p.name}: ${p.spec}`, title: p.description })));
  matchPreset();
  await loadNamedKernels();
  await previewSpec();
  const view = readView();
  await refreshRuns(view.run);
  await restoreView(view);
  const running = (await api("/api/jobs")).find((j) => j.state === "running");
  if (running) { state.job = running; $("#stop-training").disabled = false; followJob(); }
  status(state.runs.length ? `${state.runs.length} run(s)` : "no runs yet: start one under Train");
  document.body.dataset.ready = "1";
}

// A failure no view caught still reaches the page, as a sentence in the status line.
window.addEventListener("unhandledrejection", (e) => { e.preventDefault(); status(`error: ${e.reason?.message ?? e.reason}`); });
start().catch((e) => status(`error: ${e.message}`));
