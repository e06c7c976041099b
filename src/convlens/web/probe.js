// The Train tab's probe: one test image through the network after every epoch of the run being
// trained (probe.py writes them; epoch 0 is the untrained network), so the filters can be watched
// forming. A slider goes back through the epochs.
import { api, runPath } from "./api.js";
import { $, el, pct } from "./dom.js";
import { decodeMaps, drawValues } from "./draw.js";

const SHOWN = 32;                 // maps drawn per layer (the snapshot keeps up to 64)
const probe = { run: null, epochs: [], shown: null };

// Called as a job goes: the newest snapshot is shown when one more epoch has one. True once the run
// has one (before that the run's folder may not even be there yet: asked again at the next poll).
export async function followProbe(run) {
  let r;
  try { r = await api(`${runPath(run)}/probe`); } catch { return false; }
  if (!r.epochs.length) return false;
  const grew = run !== probe.run || r.epochs.length !== probe.epochs.length;
  const atEnd = probe.shown == null || probe.shown === probe.epochs[probe.epochs.length - 1] || run !== probe.run;
  Object.assign(probe, { run, epochs: r.epochs });
  const slider = $("#probe-epoch");
  slider.max = r.epochs.length - 1;
  if (grew && atEnd) { slider.value = r.epochs.length - 1; await showEpoch(r.epochs[r.epochs.length - 1]); }
  $("#probe-title").textContent = `test image ${r.index}, run ${run}`;
  $("#probe").hidden = false;
  return true;
}

async function showEpoch(epoch) {
  const snap = await api(`${runPath(probe.run)}/probe/${epoch}`);
  probe.shown = epoch;
  $("#probe-epoch-value").textContent = epoch === 0 ? "0 (untrained)" : String(epoch);
  $("#probe").dataset.epoch = epoch;
  const order = snap.probabilities.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, 5);
  $("#probe-top").replaceChildren(...order.map(([p, i]) => el("div", { class: "bar" }, el("span", { text: snap.classes[i] }),
    Object.assign(el("div"), { style: `width:${Math.max(2, 200 * p)}px` }), el("b", { text: pct(p) }))));
  $("#probe-layers").replaceChildren(...snap.layers.map((layer) => {
    const [, h, w] = layer.maps.shape, maps = decodeMaps(layer.maps).slice(0, SHOWN);
    return el("div", { class: "probe-layer" }, el("h4", { text: `${layer.name} ${layer.shape}` },
      el("small", { text: ` first ${maps.length} of ${layer.channels} maps` })),
      el("div", { class: "maps small" }, ...maps.map((m, ch) => {
        const cv = el("canvas", { width: w, height: h, title: `${layer.name} map ${ch}, epoch ${epoch}` });
        drawValues(cv, m, h, w, "activation");
        return cv;
      })));
  }));
  const src = `${runPath(probe.run)}/test/${snap.index}.png`;
  if ($("#probe-input").getAttribute("src") !== src) $("#probe-input").src = src;
}

export function setUpProbe() {
  $("#probe-epoch").addEventListener("input", (e) => showEpoch(probe.epochs[Number(e.target.value)]));
}
