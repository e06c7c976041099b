// "Can these maps be trusted?" in the Inspect tab: one button runs `convlens explain --check --deletion`'s
// views on the server (api: /check) for the image shown — every method's map, the sanity-check strip with
// a verdict per map, and the deletion curves with a faithfulness score per map.
import { api, runPath } from "./api.js";
import { $, el } from "./dom.js";
import { showPicture } from "./draw.js";
import { state } from "./state.js";

export const sourceQuery = (src) => (src.index != null ? `index=${src.index}` : `image_id=${encodeURIComponent(src.image_id)}`);

async function runCheck() {
  if (!state.run || !state.inspectSource) return;
  const button = $("#check-maps");
  button.disabled = true;
  $("#check-status").textContent = "randomising the weights layer by layer…";
  try {
    const r = await api(`${runPath(state.run)}/check?${sourceQuery(state.inspectSource)}`);
    showCheck(r);
    $("#check-status").textContent = `${r.label}, explaining ${r.target}`;
  } catch (e) {
    $("#check-status").textContent = e.message;
  } finally {
    button.disabled = false;
  }
}

function showCheck(r) {
  const c = r.check;
  $("#ig-line").textContent = r.ig || "";
  $("#check-about").textContent = r.about;
  const head = ["map", ...c.titles.slice(1), "verdict"];
  $("#check-verdicts").replaceChildren(el("tr", {}, ...head.map((h) => el("th", { text: h }))),
    ...c.methods.map((m) => el("tr", { "data-method": m.method }, el("td", { text: m.name }),
      ...m.rho.slice(1).map((v) => el("td", { class: "num", text: v.toFixed(2) })),
      el("td", { class: `verdict tier${m.tier}`, text: m.verdict }))));
  const d = r.deletion;
  $("#deletion-scores").replaceChildren(el("tr", {}, el("th", { text: "map" }), el("th", { text: "deletion score" })),
    ...[...d.methods].sort((a, b) => b.score - a.score).map((m) =>
      el("tr", {}, el("td", { text: m.name }), el("td", { class: "num", text: (m.score >= 0 ? "+" : "") + m.score.toFixed(3) }))));
  $("#check-result").hidden = false;
  return Promise.all([showPicture($("#methods-view"), r.methods_png), showPicture($("#check-strip"), r.strip_png),
                      showPicture($("#deletion-view"), r.deletion_png)]);
}

// A new image: the last image's check no longer applies.
export function clearCheck() {
  $("#check-result").hidden = true;
  $("#check-status").textContent = "";
}

export function setUpCheck() {
  $("#check-maps").addEventListener("click", runCheck);
}
