// Creates every compute pipeline finegrain has (shaders/manifest.json, written by
// `cargo run --example wgsl -- --out`) in this browser's WebGPU, with WebGPU's default
// limits, and records every compilation message and pipeline error. Modules that need a
// feature the adapter lacks (shader-f16) or that no browser has (wgpu's experimental
// cooperative matrices) are listed as not requested. The outcome is left in
// `window.finegrainCheck` (what web/browser_check.py reads).
const rows = document.getElementById("rows");

function row(module, entry, text, cls) {
  const tr = rows.insertRow();
  tr.insertCell().textContent = module;
  tr.insertCell().textContent = entry;
  const td = tr.insertCell();
  const pre = document.createElement("pre");
  pre.textContent = text;
  pre.className = cls;
  td.appendChild(pre);
}

async function check() {
  if (!navigator.gpu) throw new Error("this browser has no WebGPU (navigator.gpu is missing)");
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) throw new Error("no WebGPU adapter");
  const wanted = ["shader-f16", "subgroups"].filter((f) => adapter.features.has(f));
  const device = await adapter.requestDevice({ requiredFeatures: wanted });
  const info = adapter.info || {};
  const adapterText = `${info.vendor || "?"} ${info.architecture || ""} ${info.description || ""}` +
    ` (fallback: ${info.isFallbackAdapter ?? "?"}; features: ${wanted.join(", ") || "none"})`;
  document.getElementById("adapter").textContent = `Adapter: ${adapterText}`;
  const manifest = await (await fetch("shaders/manifest.json")).json();
  const out = { adapter: adapterText, features: wanted, modules: 0, pipelines: 0, failures: [], skipped: [] };
  for (const m of manifest) {
    const missing = m.features.filter((f) => !device.features.has(f));
    if (missing.length) {
      const why = missing.includes("cooperative-matrix")
        ? "not requested: wgpu's experimental cooperative matrices exist only natively"
        : `not requested: the adapter lacks ${missing.join(", ")}`;
      out.skipped.push({ module: m.name, why });
      row(m.name, "", why, "skip");
      continue;
    }
    const code = await (await fetch(`shaders/${m.file}`)).text();
    const module = device.createShaderModule({ code, label: m.name });
    const info = await module.getCompilationInfo();
    out.modules += 1;
    if (info.messages.length) {
      const text = info.messages
        .map((x) => `${x.type} at ${m.file}:${x.lineNum}:${x.linePos}: ${x.message}`)
        .join("\n");
      out.failures.push({ module: m.name, entry: "", message: text });
      row(m.name, "(module)", text, "fail");
      continue;
    }
    for (const entry of m.entries) {
      device.pushErrorScope("validation");
      let message = null;
      try {
        await device.createComputePipelineAsync({
          label: `${m.name}.${entry}`,
          layout: "auto",
          compute: { module, entryPoint: entry },
        });
      } catch (e) {
        message = String(e.message || e);
      }
      const scoped = await device.popErrorScope();
      if (scoped) message = (message ? message + "\n" : "") + scoped.message;
      out.pipelines += 1;
      if (message) {
        out.failures.push({ module: m.name, entry, message });
        row(m.name, entry, message, "fail");
      } else {
        row(m.name, entry, "ok", "ok");
      }
    }
    if (!m.entries.length) row(m.name, "(fragment)", "compiles", "ok");
  }
  return out;
}

check()
  .then((out) => { window.finegrainCheck = JSON.stringify(out); })
  .catch((e) => { window.finegrainCheck = JSON.stringify({ error: String(e.message || e) }); });
