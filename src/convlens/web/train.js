// The Train tab: a spec checked as it is typed (the layer table, or the bad token pointed at), a
// training job started, followed, stopped and resumed; its curves step by step (chart.js) and the
// probe image's maps after every epoch (probe.js).
import { api, post, runPath } from "./api.js";
import { lineChart, PALETTE, PERCENT, PERCENT_TICK } from "./chart.js";
import { $, el, fmt, pct, showError, showTab, status } from "./dom.js";
import { followProbe } from "./probe.js";
import { summaryRows } from "./model.js";
import { refreshRuns } from "./runs.js";
import { state } from "./state.js";

// The spec as it is typed: the table of every layer before the first wrong or unfinished token, and
// that token pointed at; the whole table, and Start, once the spec is complete.
export async function previewSpec() {
  const spec = $("#spec").value;
  let r;
  try { r = await api(`/api/summary/so-far?model=${encodeURIComponent(spec)}`); }
  catch (e) { r = { summary: null, error: e.message, token: null }; }
  if (spec !== $("#spec").value) return;                       // typed on meanwhile: that answer will come
  const s = r.summary;
  if (s) summaryRows($("#spec-summary"), s); else $("#spec-summary").replaceChildren();
  $("#spec-total").textContent = !s ? "" : r.error ? `so far: ${s.layers.length} layer(s), ${fmt(s.total_params)} parameters`
    : `${fmt(s.total_params)} parameters, ${fmt(s.mult_adds)} multiply-adds per image`;
  $("#start-training").disabled = !!r.error || !!state.job;
  if (!r.error) { $("#spec-error").textContent = ""; return; }
  const token = r.token, before = spec.split("-").slice(0, (token || 1) - 1).join("-");
  const at = token ? `\n${"^".padStart(before.length + (token > 1 ? 2 : 1))} token ${token}` : "";
  $("#spec-error").textContent = r.error + (token ? `\n${spec}${at}` : "");
}

async function startTraining() {
  const body = { model: $("#spec").value, epochs: Number($("#epochs").value) };
  if ($("#batch").value) body.batch_size = Number($("#batch").value);
  if ($("#lr").value) body.lr = Number($("#lr").value);
  if ($("#run-name").value) body.name = $("#run-name").value;
  if ($("#probe-index").value !== "") body.probe = Number($("#probe-index").value);
  try {
    state.job = await post("/api/train", body);
    state.probeShown = false;
    $("#start-training").disabled = true; $("#stop-training").disabled = false;
    $("#spec-error").textContent = "";
    followJob();
  } catch (e) { $("#spec-error").textContent = e.message; }
}

// The run in training, step by step: the epoch's running loss and accuracy every ~1 % of an epoch
// (the job's step events), each finished epoch's validation figures as points, the learning rate beside.
function liveCharts(job) {
  const box = $("#live-curves"), drawn = `${job.id}/${job.curve?.length}/${job.metrics.length}`;
  if (!job.curve?.length || box.dataset.drawn === drawn) return;     // nothing new since the last poll
  box.dataset.drawn = drawn;
  const at = (key) => job.curve.map((p) => [p.x, p[key]]);
  const val = (key) => job.metrics.filter((m) => m[key] != null).map((m) => [m.epoch, m[key]]);
  const loss = el("div"), acc = el("div"), lr = el("div");
  box.replaceChildren(loss, acc, lr);
  box.dataset.points = job.curve.length;
  lineChart(loss, { title: "loss", xLabel: "epochs", yLabel: "cross-entropy", series: [
    { label: "training (running mean of the epoch)", color: PALETTE[0], points: at("loss") },
    { label: "validation (end of epoch)", color: PALETTE[1], dash: true, points: val("val_loss") }] });
  lineChart(acc, { title: "accuracy", xLabel: "epochs", yLabel: "accuracy", format: PERCENT, tickFormat: PERCENT_TICK, series: [
    { label: "training (running mean of the epoch)", color: PALETTE[0], points: at("accuracy") },
    { label: "validation (end of epoch)", color: PALETTE[1], dash: true, points: val("val_accuracy") }] });
  lineChart(lr, { title: "learning rate", xLabel: "epochs", yLabel: "lr", series: [
    { label: "learning rate", color: PALETTE[2], points: at("lr") }], format: (v) => v.toExponential(1) });
}

// Where a job is: the epoch in progress while it runs, the epochs it finished once it has ended.
function whereText(job) {
  if (job.state !== "running") return `${job.state} after ${job.epoch} of ${job.epochs} epochs`;
  const where = job.epoch >= job.epochs ? `all ${job.epochs} epochs trained; testing and writing the report`
    : `epoch ${job.epoch + 1}/${job.epochs}` + (job.steps ? `, step ${job.step}/${job.steps}` : "");
  return (job.stopping || state.stopping ? "stopping… (the step in progress ends first), " : "running, ") + where;
}

function jobText(job) {
  const last = job.metrics[job.metrics.length - 1];
  const resumable = job.state !== "running" && job.state !== "finished" && job.epoch < job.epochs;
  return `${job.run}: ${whereText(job)}` +
    (last ? ` — loss ${last.loss.toFixed(4)}, acc ${pct(last.accuracy)}` +
      (last.val_loss != null ? `, val_loss ${last.val_loss.toFixed(4)}, val_acc ${pct(last.val_accuracy)}` : "") : "") +
    (job.results?.test_accuracy != null ? ` — test accuracy ${pct(job.results.test_accuracy)}` : "") +
    (job.error ? ` — ${job.error}` : "") + ` (${job.elapsed_s} s)` +
    (resumable ? `\nTo go on from epoch ${job.epoch}: convlens train --resume ${job.run}` : "");
}

// The job's curve as polled so far: each poll asks only for the points after those held (the whole
// curve comes again when the server thinned it meanwhile, curve_from 0).
function heldCurve(id) {
  return state.jobCurve?.id === id ? state.jobCurve : { id, gen: 0, points: [] };
}

function mergeCurve(job) {
  const held = heldCurve(job.id);
  const points = job.curve_from === 0 ? job.curve
    : job.curve_from === held.points.length ? held.points.concat(job.curve) : null;
  state.jobCurve = points && { id: job.id, gen: job.curve_gen, points };    // null: out of step, ask for all
  job.curve = points ?? held.points;
}

export async function followJob() {
  if (!state.job) return;
  let job;
  const held = heldCurve(state.job.id);
  try { job = await api(`/api/jobs/${encodeURIComponent(state.job.id)}?since=${held.points.length}&gen=${held.gen}`); }
  catch (e) { showError($("#job-status"), e); setTimeout(followJob, 2000); return; }
  mergeCurve(job);
  const epochsBefore = state.job.metrics?.length ?? 0;
  state.job = job;
  $("#train-progress").value = (job.epoch + (job.steps ? job.step / job.steps : 0)) / job.epochs;
  $("#job-status").textContent = jobText(job);
  liveCharts(job);
  if (job.begun && (job.metrics.length !== epochsBefore || !state.probeShown)) followProbe(job.run).then((shown) => { state.probeShown ||= shown; });
  if (job.state === "running") { setTimeout(followJob, 500); return; }
  $("#stop-training").disabled = true;
  state.job = null;
  state.stopping = false;
  const resume = $("#resume-training");
  resume.hidden = !(job.state !== "finished" && job.epoch < job.epochs);
  resume.dataset.run = job.run;
  previewSpec();
  await refreshRuns(job.run).catch(() => {});
  status(`training ${job.state}: ${job.run}`);
}

// The preset box names the preset the spec is, or says the spec is the user's own.
export function matchPreset() {
  const spec = $("#spec").value.trim(), box = $("#preset");
  box.value = [...box.options].some((o) => o.value === spec) ? spec : "";
}

// Go on with a stopped or killed run from its checkpoint (`convlens train --resume`), followed here.
export async function resumeRun(name) {
  showTab("train");
  $("#resume-training").hidden = true;
  try { state.job = await post(`${runPath(name)}/resume`, {}); state.probeShown = false; }
  catch (e) { showError($("#job-status"), e); return; }
  $("#start-training").disabled = true; $("#stop-training").disabled = false;
  followJob();
}

async function stopTraining() {
  if (!state.job) return;
  state.stopping = true;
  $("#stop-training").disabled = true;
  $("#job-status").textContent = jobText({ ...state.job, stopping: true });
  try { await post(`/api/jobs/${state.job.id}/stop`, {}); }
  catch (e) { state.stopping = false; $("#stop-training").disabled = false; showError($("#job-status"), e); }
}

export function setUpTrain() {
  let timer = null;
  $("#spec").addEventListener("input", () => { matchPreset(); clearTimeout(timer); timer = setTimeout(previewSpec, 150); });
  $("#preset").addEventListener("change", (e) => { if (e.target.value) { $("#spec").value = e.target.value; previewSpec(); } });
  $("#start-training").addEventListener("click", startTraining);
  $("#stop-training").addEventListener("click", stopTraining);
  $("#resume-training").addEventListener("click", (e) => resumeRun(e.target.dataset.run));
}
