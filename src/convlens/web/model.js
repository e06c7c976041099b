// The Model tab: the network as blocks with their shapes and parameters, and the layer table
// (the summary `convlens summary` prints, from /api/runs/{run}).
import { $, el, fmt, loaders } from "./dom.js";
import { state } from "./state.js";

export function summaryRows(table, summary) {
  table.replaceChildren(el("tr", {}, ...["Layer (type)", "Output shape", "Param #", "Mult-adds", "Why that many parameters"].map((t) => el("th", { text: t }))),
    ...summary.layers.map((l) => el("tr", {}, el("td", { text: `${l.name} (${l.type})` }), el("td", { text: l.output }),
      el("td", { class: "num", text: fmt(l.params) }), el("td", { class: "num", text: fmt(l.mult_adds) }), el("td", { text: l.arithmetic }))),
    el("tr", {}, el("th", { text: "Total" }), el("td", { text: "" }), el("td", { class: "num", text: fmt(summary.total_params) }),
      el("td", { class: "num", text: fmt(summary.mult_adds) }), el("td", { text: "" })));
}

loaders.model = async () => {
  if (!state.detail) return;
  const s = state.detail.summary;
  $("#model-title").textContent = `${state.run}: ${s.spec}`;
  const blocks = [el("div", { class: "block" }, el("b", { text: "input" }),
    el("span", { class: "shape", text: s.input_shape.slice(1).concat(s.input_shape[0]).join("×") }))];
  for (const l of s.layers) {
    blocks.push(el("span", { class: "arrow", text: "→" }));
    blocks.push(el("div", { class: `block ${l.token.replace(/[^a-z].*/, "").replace("pool", "maxpool")}` },
      el("b", { text: l.name }), el("span", { class: "shape", text: /×/.test(l.output) ? l.output : `${l.output} units` }),
      el("span", { class: "params", text: l.params ? `${fmt(l.params)} params` : "no params" })));
  }
  $("#diagram").replaceChildren(...blocks);
  summaryRows($("#summary-table"), s);
};
