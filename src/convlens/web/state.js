// The page's one state object: what is selected, loaded and in progress. Modules read and write
// these fields; nothing else is kept between events.

export const state = {
  run: null,            // the selected run's name
  detail: null,         // /api/runs/{run}: config, model, metrics, results, summary
  runs: [],             // /api/runs
  job: null,            // the training job the Train tab follows
  jobCurve: null,       // {id, gen, points}: its curve as polled so far (each poll brings the newer points)
  stopping: false,      // Stop was pressed: the job ends after its current step
  probeShown: false,    // the followed job's probe snapshots have been asked for
  inspectSource: null,  // {index} or {image_id}: the image the Inspect tab shows
  inspection: null,     // /api/runs/{run}/inspect for it (null: not for this run, or it failed)
  inspectedRun: null,   // the run the latest inspection asked (answered or refused): another run asks again
  inspectedSource: null, // the image it asked about: another one (chosen in the Network tab) asks again
  inspectSeq: 0,        // the latest inspect request: an older answer arriving late is dropped
  marked: null,         // the feature-map canvas whose hovered pixel is outlined
  input: null,          // that image decoded once: {c, h, w, gray: Uint8Array(h × w)}
  uploadId: null,       // the last uploaded or drawn image
  hover: { key: null, abort: null },   // the pixel whose arithmetic is shown (layer/channel/row/col), and
                        // what cancels its request when the pointer moves on (api.latest)
  lab: null,            // /api/convolve's last answer
  colormaps: {},        // role -> Uint8Array(256 × 3): figures.py's colour maps (/api/colormaps)
};
