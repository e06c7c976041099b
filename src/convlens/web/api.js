// The API client: every request the page makes goes through here, and a failure is an Error whose
// message is the server's one sentence (pydantic's 422 lists joined into one).

export async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const detail = body?.detail;
    const message = typeof detail === "string" ? detail
      : Array.isArray(detail) ? detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ")
      : response.statusText;
    const error = new Error(message);
    error.body = body;
    error.status = response.status;
    throw error;
  }
  return body;
}

export const post = (path, data) =>
  api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data) });

// The answer to the latest of a series of requests, as a hover makes them: the one before is aborted,
// and an answer that arrives after a newer request was made is dropped (null). slot: {key, abort}.
export async function latest(slot, key, path) {
  slot.key = key;
  slot.abort?.abort();
  slot.abort = new AbortController();
  try {
    const answer = await api(path, { signal: slot.abort.signal });
    return slot.key === key ? answer : null;
  } catch (e) {
    if (e.name === "AbortError") return null;
    throw e;
  }
}

export const runPath = (name) => `/api/runs/${encodeURIComponent(name)}`;
