// The view in the address: tab, run, test image, and the map whose filter panel is open, as a query
// string. A reload or a shared link lands on the same view; the page only replaces its own history entry.
const KEYS = ["tab", "run", "index", "layer", "map"];

export function readView() {
  const q = new URLSearchParams(location.search);
  return Object.fromEntries(KEYS.filter((k) => q.get(k)).map((k) => [k, q.get(k)]));
}

// Set (or, with null, drop) some of the keys.
export function writeView(changes) {
  const q = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(changes)) { if (v == null || v === "") q.delete(k); else q.set(k, String(v)); }
  const text = q.toString();
  history.replaceState(null, "", text ? `?${text}` : location.pathname);
}
