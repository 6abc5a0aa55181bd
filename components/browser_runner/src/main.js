// QuantLens: run the page's TFLite variants in this browser with LiteRT.js.
//
// A Streamlit component (v1 protocol). The page sends, per run: the variants
// (name and the URL of a browser-ready .tflite the server made), the images as
// the server's own preprocessed float32 tensors (so preprocessing stays in one
// place), the timed and warm-up run counts and top-k. This sends back, per
// variant and image: the top-k, load time, median time of the timed runs, and
// the backend used. The protocol is written out here (a few postMessage calls)
// instead of pulling streamlit-component-lib, which brings React and Arrow.
import { loadLiteRt, loadAndCompile, Tensor } from "@litertjs/core";

const WASM = "./litert_wasm_compat_internal.js"; // shipped next to this file, never a CDN
// The smallest module using a v128 instruction (wasm-feature-detect's SIMD probe).
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253,
  15, 253, 98, 11,
]);

const status = document.getElementById("status");
let lastRun = null;
let runtime = null;

function send(type, data) {
  window.parent.postMessage({ isStreamlitMessage: true, type, ...data }, "*");
}

function show(text) {
  status.textContent = text;
  send("streamlit:setFrameHeight", { height: document.body.scrollHeight + 4 });
}

function decode(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new Float32Array(bytes.buffer);
}

function topK(values, k, logits) {
  let scores = Array.from(values);
  if (logits) {
    const max = Math.max(...scores);
    const exps = scores.map((v) => Math.exp(v - max));
    const sum = exps.reduce((a, b) => a + b, 0);
    scores = exps.map((v) => v / sum);
  }
  return scores
    .map((p, i) => [i, p])
    .sort((a, b) => b[1] - a[1])
    .slice(0, k);
}

async function backend() {
  try {
    if (navigator.gpu && (await navigator.gpu.requestAdapter())) return "webgpu";
  } catch (e) {
    // no adapter: WebAssembly it is
  }
  return "wasm";
}

async function infer(model, input, shape) {
  const tensor = new Tensor(input, shape);
  try {
    const outputs = await model.run(tensor);
    const first = await outputs[0].moveTo("wasm");
    const values = first.toTypedArray().slice();
    first.delete();
    for (const output of outputs) output.delete?.();
    return values;
  } finally {
    tensor.delete();
  }
}

async function fetchModel(url) {
  const response = await fetch(url);
  if (!response.ok) {
    let reason = `HTTP ${response.status}`;
    try {
      reason = (await response.json()).error ?? reason;
    } catch (e) {
      // not our JSON error: the status says enough
    }
    throw new Error(reason);
  }
  return new Uint8Array(await response.arrayBuffer());
}

async function load(url, accelerator) {
  const bytes = await fetchModel(url);
  try {
    return { model: await loadAndCompile(bytes, { accelerator }), used: accelerator };
  } catch (e) {
    if (accelerator === "wasm") throw e;
    // a model WebGPU cannot take runs on the CPU
    return { model: await loadAndCompile(bytes, { accelerator: "wasm" }), used: "wasm" };
  }
}

async function run(args) {
  if (!WebAssembly.validate(SIMD_PROBE)) {
    return { error: "This browser has no WebAssembly SIMD, which LiteRT.js needs; try a current Chrome, Edge, Firefox or Safari." };
  }
  if (!runtime) {
    show("Loading LiteRT.js…");
    runtime = loadLiteRt(WASM);
  }
  await runtime;
  const accelerator = await backend();
  const results = [];
  const skipped = [];
  for (const variant of args.variants) {
    show(`Downloading and compiling ${variant.name}…`);
    const start = performance.now();
    let loaded;
    try {
      loaded = await load(variant.url, accelerator);
    } catch (e) {
      // One variant the browser cannot get or compile is named; the others still run.
      skipped.push({ variant: variant.name, error: `${e?.message ?? e}`.split("\n")[0] });
      continue;
    }
    const { model, used } = loaded;
    const loadMs = performance.now() - start;
    for (const image of args.images) {
      show(`Running ${variant.name} on ${image.name}…`);
      const input = decode(image.input_b64);
      let values = null;
      for (let i = 0; i < args.warmup; i++) values = await infer(model, input, image.shape);
      const times = [];
      for (let i = 0; i < args.runs; i++) {
        const t0 = performance.now();
        values = await infer(model, input, image.shape);
        times.push(performance.now() - t0);
      }
      times.sort((a, b) => a - b);
      results.push({
        variant: variant.name,
        image: image.name,
        backend: used,
        load_ms: loadMs,
        median_ms: times[Math.floor(times.length / 2)],
        top: topK(values, args.k, args.outputs === "logits"),
      });
    }
    model.delete?.();
  }
  return { results, skipped, error: null };
}

window.addEventListener("message", async (event) => {
  if (event.data?.type !== "streamlit:render") return;
  const args = event.data.args;
  if (!args || args.run_id === lastRun) {
    send("streamlit:setFrameHeight", { height: document.body.scrollHeight + 4 });
    return;
  }
  lastRun = args.run_id;
  let value;
  try {
    value = await run(args);
  } catch (e) {
    value = { error: `LiteRT.js failed: ${e?.message ?? e}` };
  }
  const skippedNote = value.skipped?.length ? `; ${value.skipped.length} variant(s) skipped` : "";
  show(value.error ? value.error : `Done: ${value.results.length} result(s) on ${value.results[0]?.backend ?? "?"}${skippedNote}.`);
  send("streamlit:setComponentValue", { value: { run_id: args.run_id, ...value }, dataType: "json" });
});

send("streamlit:componentReady", { apiVersion: 1 });
show("Ready.");
