// The page: opens the shipped Fashion-MNIST model (or a checkpoint the user picks) with
// finegrain's WebClassifier and classifies dropped, chosen or sample images: top-5 with
// probabilities and the class-map overlay. `?selftest` classifies every sample and leaves
// the results in `window.finegrainResult` (what web/browser_check.py reads).
import init, { WebClassifier } from "./pkg/finegrain_web.js";

const DEFAULT_MODEL = "model/fashion-mnist-tiny.safetensors";
const TOP = 5;
const MAPS = 3;
const $ = (id) => document.getElementById(id);
let classifier = null;

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function openModel(name, bytes) {
  status(`Opening ${name}…`);
  const next = await WebClassifier.open(name, new Uint8Array(bytes));
  if (classifier) classifier.free();
  classifier = next;
  status(`Model: ${name}, ${classifier.classes.length} classes, ${classifier.inputSize} px input, ` +
         `precision ${classifier.precision}. Adapter: ${classifier.adapter}`);
}

function show(name, bytes, result) {
  const row = document.createElement("div");
  row.className = "result";
  const img = document.createElement("img");
  img.className = "input";
  img.src = URL.createObjectURL(new Blob([bytes]));
  img.alt = name;
  row.appendChild(img);
  const info = document.createElement("div");
  const title = document.createElement("div");
  title.textContent = name;
  info.appendChild(title);
  if (result.error) {
    const e = document.createElement("div");
    e.className = "err";
    e.textContent = result.error;
    info.appendChild(e);
  } else {
    const table = document.createElement("table");
    for (const c of result.top) {
      const tr = table.insertRow();
      tr.insertCell().textContent = c.name;
      tr.insertCell().textContent = `${(100 * c.probability).toFixed(1)}%`;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${Math.max(1, Math.round(160 * c.probability))}px`;
      tr.insertCell().appendChild(bar);
    }
    info.appendChild(table);
  }
  row.appendChild(info);
  if (result.cam) {
    const cam = document.createElement("img");
    cam.className = "cam";
    cam.src = URL.createObjectURL(new Blob([result.cam], { type: "image/png" }));
    cam.alt = `class maps of ${name}`;
    row.appendChild(cam);
  }
  $("results").prepend(row);
}

async function classify(name, bytes, top = TOP) {
  if (!classifier) throw new Error("no model is open");
  const maps = $("showcam").checked ? MAPS : 0;
  try {
    return await classifier.classify(name, new Uint8Array(bytes), top, maps);
  } catch (e) {
    return { error: String(e.message || e) };
  }
}

async function classifyFiles(files) {
  for (const f of files) {
    const bytes = await f.arrayBuffer();
    show(f.name, bytes, await classify(f.name, bytes));
  }
}

async function sampleNames() {
  const r = await fetch("samples/index.json");
  if (!r.ok) throw new Error(`samples/index.json: HTTP ${r.status}`);
  return r.json();
}

// `top`: classes per image (the self-test asks for all of them, to compare every
// probability with native inference).
async function classifySamples(top = TOP) {
  const out = [];
  for (const name of await sampleNames()) {
    const r = await fetch(`samples/${name}`);
    if (!r.ok) throw new Error(`samples/${name}: HTTP ${r.status}`);
    const bytes = await r.arrayBuffer();
    const result = await classify(name, bytes, top);
    show(name, bytes, result);
    out.push({ file: name, top: result.top, error: result.error, cam_bytes: result.cam ? result.cam.length : 0 });
  }
  return out;
}

async function main() {
  await init();
  if (!navigator.gpu) {
    throw new Error("this browser has no WebGPU (navigator.gpu is missing)");
  }
  const r = await fetch(DEFAULT_MODEL);
  if (!r.ok) throw new Error(`${DEFAULT_MODEL}: HTTP ${r.status}`);
  await openModel(DEFAULT_MODEL.split("/").pop(), await r.arrayBuffer());

  $("model").addEventListener("change", async (ev) => {
    const f = ev.target.files[0];
    if (!f) return;
    try { await openModel(f.name, await f.arrayBuffer()); }
    catch (e) { status(`Cannot open ${f.name}: ${e.message || e}`, true); }
  });
  $("files").addEventListener("change", (ev) => classifyFiles(ev.target.files));
  $("samples").addEventListener("click", () => classifySamples().catch((e) => status(String(e), true)));
  const drop = $("drop");
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    classifyFiles(ev.dataTransfer.files);
  });

  if (new URLSearchParams(location.search).has("selftest")) {
    const results = await classifySamples(classifier.classes.length);
    window.finegrainResult = JSON.stringify({
      adapter: classifier.adapter,
      precision: classifier.precision,
      results,
    });
  }
}

main().catch((e) => {
  const msg = String(e.message || e);
  status(msg, true);
  window.finegrainResult = JSON.stringify({ error: msg });
});
