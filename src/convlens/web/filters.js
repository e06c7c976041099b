// What a filter looks for: clicking a conv layer's map in Inspect opens this panel — the map, the filter's
// top 9 test crops (its receptive field where it fires most; click one to inspect that image) and an input
// optimised to excite it (api: /features/{layer}/{filter}, the views `convlens features` draws).
import { api, runPath } from "./api.js";
import { $, el } from "./dom.js";
import { drawPixels } from "./draw.js";
import { state } from "./state.js";
import { writeView } from "./url.js";

export async function showFilter(layer, channel, mapCanvas, onPick) {
  const panel = $("#filter-panel");
  writeView({ layer, map: channel });
  $("#filter-title").textContent = `What filter ${channel} of ${layer} looks for (finding its top test images…)`;
  $("#filter-crops").replaceChildren();
  $("#filter-optimised-caption").textContent = "";
  const big = $("#filter-map").getContext("2d");
  big.imageSmoothingEnabled = false;
  big.clearRect(0, 0, 168, 168);
  big.drawImage(mapCanvas, 0, 0, 168, 168);
  panel.hidden = false;
  let f;
  try { f = await api(`${runPath(state.run)}/features/${encodeURIComponent(layer)}/${channel}`); }
  catch (e) { $("#filter-title").textContent = e.message; return; }
  $("#filter-title").textContent = `What filter ${channel} of ${layer} looks for: its ${f.box_size} receptive field`;
  $("#filter-crops").replaceChildren(...f.crops.map((c) => {
    const cv = el("canvas", { width: 84, height: 84 });
    drawPixels(cv, c.pixels);
    const fig = el("figure", { "data-index": c.index, title: `test image ${c.index} (${c.class}): activation ${c.activation.toFixed(3)}` },
      cv, el("figcaption", { text: `#${c.index} ${c.class}` }));
    fig.addEventListener("click", () => { panel.hidden = true; writeView({ layer: null, map: null }); onPick(c.index); });
    return fig;
  }));
  drawPixels($("#filter-optimised"), f.optimised.pixels, 255);
  const best = f.crops.length ? f.crops[0].activation : 0;
  $("#filter-optimised-caption").textContent = `activation ${f.optimised.activation.toFixed(3)} (best test crop ${best.toFixed(3)})`;
}

export function setUpFilters() {
  $("#filter-close").addEventListener("click", () => { $("#filter-panel").hidden = true; writeView({ layer: null, map: null }); });
}
