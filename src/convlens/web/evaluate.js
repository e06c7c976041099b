// The Evaluate tab: the test set's confusion matrix; a cell opens its images, surest first; an
// image opens in Inspect.
import { api, runPath } from "./api.js";
import { $, el, fmt, loaders, pct, showError, showTab } from "./dom.js";
import { inspect } from "./inspect.js";
import { state } from "./state.js";

function cellTd(ev, i, j, n, total) {
  const share = n / total;
  const td = el("td", { "data-true": i, "data-pred": j, text: String(n), title: `${ev.classes[i]} predicted as ${ev.classes[j]}: ${n}` });
  td.style.background = i === j ? `rgba(18,183,106,${0.15 + 0.7 * share})` : `rgba(217,45,32,${Math.min(0.85, 3 * share)})`;
  if (share > 0.45 || (i !== j && share > 0.2)) td.style.color = "#fff";
  td.addEventListener("click", () => showCell(i, j, td));
  return td;
}

loaders.evaluate = async () => {
  if (!state.run) return;
  $("#eval-title").textContent = `${state.run} (evaluating the test set…)`;
  let ev;
  try { ev = await api(`${runPath(state.run)}/evaluation`); }
  catch (e) { $("#eval-title").textContent = `${state.run}: ${e.message}`; return; }
  $("#eval-title").textContent = state.run;
  $("#eval-metrics").textContent = `${fmt(ev.images)} test images: accuracy ${pct(ev.accuracy)}, loss ${ev.loss.toFixed(4)}`;
  const rows = [el("tr", {}, el("th", { class: "corner", text: "true ↓ predicted →" }),
    ...ev.classes.map((c) => el("th", { class: "colhead", text: c, title: c })))];
  ev.confusion.forEach((row, i) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    rows.push(el("tr", {}, el("th", { class: "rowhead", text: ev.classes[i] }), ...row.map((n, j) => cellTd(ev, i, j, n, total))));
  });
  $("#confusion").replaceChildren(...rows);
};

async function showCell(t, p, td) {
  document.querySelectorAll("#confusion td.picked").forEach((x) => x.classList.remove("picked"));
  td.classList.add("picked");
  let cell;
  try { cell = await api(`${runPath(state.run)}/cell?true=${t}&predicted=${p}&limit=60`); }
  catch (e) { showError($("#cell-title"), e); return; }
  $("#cell-title").textContent = `${cell.true} predicted as ${cell.predicted}: ${fmt(cell.count)} images` +
    (cell.count > cell.images.length ? ` (the ${cell.images.length} surest shown)` : "") +
    (t !== p ? `, each with its gradient saliency and LayerCAM for ${cell.predicted}: where the model looked` : "");
  const wrong = t !== p;           // a mistake shows why: its saliency and LayerCAM for the class it was taken for
  $("#cell-gallery").classList.toggle("reasons", wrong);
  $("#cell-gallery").replaceChildren(...cell.images.map((im) => {
    const src = wrong ? `${runPath(state.run)}/test/${im.index}/reasons.png?target=${p}` : `${runPath(state.run)}/test/${im.index}.png`;
    const fig = el("figure", { "data-index": im.index },
      el("img", { src, loading: "lazy", alt: wrong ? `test image ${im.index}, its saliency and LayerCAM for ${cell.predicted}` : `test image ${im.index}` }),
      el("figcaption", { text: `#${im.index} ${(100 * im.probability).toFixed(0)}%` }));
    fig.addEventListener("click", () => { $("#test-index").value = im.index; showTab("inspect"); inspect({ index: im.index }); });
    return fig;
  }));
}
