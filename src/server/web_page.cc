// The page `nearlabel serve` shows at "/": plain HTML, CSS and JavaScript in one string, no
// outside resources, so it works offline. It only calls the JSON API (/v1/...).
namespace nearlabel {

extern const char kWebPage[] = R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nearlabel</title>
<style>
  :root { --fg:#1d2330; --muted:#667085; --line:#e4e7ec; --accent:#2563eb; --bg:#f7f8fa; }
  * { box-sizing: border-box; }
  body { margin:0; font:15px/1.45 system-ui, sans-serif; color:var(--fg); background:var(--bg); }
  header { display:flex; align-items:baseline; gap:24px; padding:14px 24px; background:#fff;
           border-bottom:1px solid var(--line); }
  header h1 { font-size:20px; margin:0; }
  header .info { color:var(--muted); font-size:13px; }
  nav button { border:0; background:none; font:inherit; padding:6px 10px; cursor:pointer;
               color:var(--muted); border-bottom:2px solid transparent; }
  nav button.active { color:var(--fg); border-bottom-color:var(--accent); }
  main { padding:20px 24px; max-width:1200px; }
  .panel { background:#fff; border:1px solid var(--line); border-radius:8px; padding:16px;
           margin-bottom:16px; }
  .drop { border:2px dashed #b6c2d6; border-radius:8px; padding:28px; text-align:center;
          color:var(--muted); cursor:pointer; }
  #batch-table { border-collapse:collapse; width:100%; margin-top:10px; }
  #batch-table th, #batch-table td { padding:4px 8px; border-bottom:1px solid #e5e9f0;
    text-align:left; }
  img.thumb { width:48px; height:48px; object-fit:cover; border-radius:4px; }
  .drop.over { border-color:var(--accent); background:#eef4ff; }
  .row { display:flex; gap:20px; flex-wrap:wrap; align-items:flex-start; }
  #query-img, #anomaly-img, #anomaly-heatmap { max-width:220px; max-height:220px; border-radius:6px; border:1px solid var(--line); }
  #result-label { font-size:28px; font-weight:600; }
  .muted { color:var(--muted); font-size:13px; }
  .bars { min-width:280px; flex:1; }
  .bar { display:grid; grid-template-columns:140px 1fr 56px; gap:8px; align-items:center;
         margin:4px 0; font-size:13px; }
  .bar .track { background:#eef0f4; border-radius:4px; height:12px; overflow:hidden; }
  .bar .fill { background:var(--accent); height:100%; }
  .grid { display:grid; grid-template-columns:repeat(auto-fill, minmax(150px, 1fr)); gap:12px; }
  .card { border:1px solid var(--line); border-radius:6px; padding:6px; background:#fff;
          font-size:12px; word-break:break-all; }
  .card img { width:100%; height:130px; object-fit:contain; background:#f0f2f5; border-radius:4px; }
  .card .lbl { font-weight:600; font-size:13px; }
  .chips { display:flex; flex-wrap:wrap; gap:8px; margin-bottom:12px; }
  .chip { border:1px solid var(--line); border-radius:16px; padding:4px 12px; cursor:pointer;
          background:#fff; font:inherit; font-size:13px; }
  .chip.active { border-color:var(--accent); color:var(--accent); }
  .error { color:#b42318; background:#fef3f2; border:1px solid #fecdca; padding:8px 12px;
           border-radius:6px; margin:8px 0; }
  label { font-size:13px; color:var(--muted); }
  input[type=text], input[type=password], input[type=number] { font:inherit; padding:5px 8px;
           border:1px solid var(--line); border-radius:5px; }
  button.primary { background:var(--accent); color:#fff; border:0; border-radius:5px;
                   padding:7px 14px; font:inherit; cursor:pointer; }
  .verdict { font-size:28px; font-weight:600; }
  .verdict.anomalous { color:#b42318; }
  .verdict.normal { color:#067647; }
  [hidden] { display:none !important; }
</style>
</head>
<body>
<header>
  <h1>nearlabel</h1>
  <nav>
    <button id="tab-classify" class="active" data-view="classify">Classify</button>
    <button id="tab-browse" data-view="browse">Browse labels</button>
    <button id="tab-anomaly" data-view="anomaly" hidden>Anomaly</button>
    <button id="tab-add" data-view="add">Add an image</button>
  </nav>
  <span class="info" id="store-info">loading…</span>
</header>
<main>
<section id="view-classify">
  <div class="panel">
    <div id="drop" class="drop" tabindex="0">Drop an image here, or many at once, or click to
      pick them <input type="file" id="file" accept="image/*" multiple hidden></div>
    <div style="margin-top:10px">
      <label>k <input type="number" id="k" value="5" min="1" max="100" style="width:64px"></label>
      <label>vote <select id="vote"><option>majority</option><option>distance</option>
        <option>softmax</option></select></label>
    </div>
  </div>
  <div id="classify-error" class="error" hidden></div>
  <div class="panel" id="result" hidden>
    <div class="row">
      <img id="query-img" alt="the image you gave">
      <div>
        <div class="muted" id="result-field">label</div>
        <div id="result-label"></div>
        <div class="muted">confidence <span id="confidence"></span> ·
          <span id="result-plan"></span></div>
      </div>
      <div class="bars" id="bars"></div>
    </div>
    <h3>Nearest labelled images</h3>
    <div class="grid" id="neighbors"></div>
  </div>
  <div class="panel" id="batch" hidden>
    <div class="row"><b id="batch-summary"></b>
      <a id="batch-csv" download="nearlabel-results.csv" href="#">Download CSV</a></div>
    <table id="batch-table"><thead><tr><th></th><th>image</th><th id="batch-field">label</th>
      <th>confidence</th><th>nearest</th><th>distance</th></tr></thead><tbody></tbody></table>
  </div>
</section>
<section id="view-browse" hidden>
  <div class="panel">
    <div class="chips" id="chips"></div>
    <div class="muted" id="browse-count"></div>
    <div class="grid" id="browse-grid"></div>
    <button class="chip" id="more" hidden>more</button>
  </div>
</section>
<section id="view-anomaly" hidden>
  <div class="panel">
    <div id="anomaly-drop" class="drop" tabindex="0">Drop an image here, or click to pick one:
      its patches are compared with the normal images' patches
      <input type="file" id="anomaly-file" accept="image/*" hidden></div>
    <p class="muted" id="anomaly-model"></p>
  </div>
  <div id="anomaly-error" class="error" hidden></div>
  <div class="panel" id="anomaly-result" hidden>
    <div class="row">
      <img id="anomaly-img" alt="the image you gave">
      <img id="anomaly-heatmap" alt="heat map of the patch scores">
      <div>
        <div class="muted">verdict</div>
        <div id="anomaly-verdict" class="verdict"></div>
        <div class="muted">score <span id="anomaly-score"></span> · threshold
          <span id="anomaly-threshold"></span> · <span id="anomaly-ms"></span></div>
        <p class="muted" style="max-width:360px">The score is the distance of the image's most
          unusual patch to the nearest patch of a normal image. The heat map colours every
          patch from blue (like the normal images) to red (twice the threshold); outlined
          patches are above the threshold.</p>
      </div>
    </div>
  </div>
</section>
<section id="view-add" hidden>
  <div class="panel">
    <p class="muted" id="add-readonly">This server is read-only: start it with
      <code>--token</code> to add images.</p>
    <form id="add-form">
      <p><label>image <input type="file" id="add-file" accept="image/*" required></label></p>
      <p><label><span id="add-field">label</span>
        <input type="text" id="add-label" required list="label-list"></label>
        <datalist id="label-list"></datalist></p>
      <p><label>token <input type="password" id="add-token" autocomplete="off"></label></p>
      <button class="primary" type="submit">Add</button>
    </form>
    <div id="add-result" class="muted"></div>
  </div>
</section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let stats = null;

function text(tag, s, cls) {
  const e = document.createElement(tag);
  e.textContent = s;
  if (cls) e.className = cls;
  return e;
}

async function api(path, options) {
  const r = await fetch(path, options);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.error && body.error.message) || ("HTTP " + r.status));
  return body;
}

function show(view) {
  for (const v of ["classify", "browse", "anomaly", "add"]) {
    $("view-" + v).hidden = v !== view;
    $("tab-" + v).classList.toggle("active", v === view);
  }
  if (view === "browse") loadChips();
}
document.querySelectorAll("nav button").forEach((b) =>
  b.addEventListener("click", () => show(b.dataset.view)));

function card(item, extra) {
  const c = document.createElement("div");
  c.className = "card";
  const img = document.createElement("img");
  img.src = item.thumbnail;
  img.alt = item.label;
  img.loading = "lazy";
  c.append(img, text("div", item.label || "(no label)", "lbl"));
  if (extra) c.append(text("div", extra, "muted"));
  c.append(text("div", "#" + item.id + " " + (item.source || ""), "muted"));
  return c;
}

async function loadStats() {
  stats = await api("/v1/stats");
  $("store-info").textContent = stats.rows + " images · " + stats.labels.length + " labels · " +
      stats.model + " (" + stats.dims + "-d) · index: " + stats.index;
  $("result-field").textContent = stats.label_field;
  $("add-field").textContent = stats.label_field;
  $("add-readonly").hidden = stats.writable;
  $("add-form").hidden = !stats.writable;
  $("tab-anomaly").hidden = !stats.anomaly;
  if (stats.anomaly) {
    const a = stats.anomaly;
    $("anomaly-model").textContent = "anomaly model '" + a.name + "': " + a.bank_patches +
        " normal patches (" + a.normal + "), threshold " + a.threshold.toFixed(4) + " (" +
        (100 * a.false_alarm_rate).toFixed(1) + "% false alarms on held-out normal images)";
  }
  const list = $("label-list");
  list.replaceChildren(...stats.labels.map((l) => { const o = document.createElement("option");
    o.value = l.label; return o; }));
}

async function classify(files) {
  // The previous result goes at once: it must not stand beside this one's error.
  $("classify-error").hidden = true;
  $("result").hidden = true;
  $("batch").hidden = true;
  if (files.length > 1) return classifyMany(files);
  const file = files[0];
  const form = new FormData();
  form.append("image", file);
  form.append("k", $("k").value);
  form.append("vote", $("vote").value);
  try {
    const r = await api("/v1/classify", { method: "POST", body: form });
    $("query-img").src = URL.createObjectURL(file);
    $("result-label").textContent = r.label || "(no labelled neighbours)";
    $("confidence").textContent = (100 * r.confidence).toFixed(1) + "%";
    $("result-plan").textContent = r.plan + ", k=" + r.k + ", " + r.vote + " vote, " +
        r.ms.toFixed(0) + " ms";
    $("bars").replaceChildren(...r.scores.map((s) => {
      const b = document.createElement("div");
      b.className = "bar";
      const track = document.createElement("div");
      track.className = "track";
      const fill = document.createElement("div");
      fill.className = "fill";
      fill.style.width = (100 * s.score).toFixed(1) + "%";
      track.append(fill);
      b.append(text("span", s.label), track, text("span", (100 * s.score).toFixed(1) + "%"));
      return b;
    }));
    $("neighbors").replaceChildren(...r.neighbors.map((n, i) =>
      card(n, "rank " + (i + 1) + " · distance " + n.distance.toFixed(4))));
    $("result").hidden = false;
  } catch (e) {
    $("classify-error").textContent = e.message;
    $("classify-error").hidden = false;
  }
}

// One CSV field (RFC 4180).
function csvField(v) {
  const s = v === undefined || v === null ? "" : String(v);
  return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}

// Many images: sent in requests of at most the server's batch limit, one table row each as
// the answers come, and a CSV of the same columns as `nearlabel classify --out FILE.csv`.
async function classifyMany(files) {
  const limit = (stats && stats.limits.max_batch_images) || 64;
  const k = Number($("k").value);
  const rows = [], body = $("batch-table").tBodies[0];
  body.replaceChildren();
  $("batch-field").textContent = stats ? stats.label_field : "label";
  $("batch").hidden = false;
  const header = ["image", "label", "confidence", "unknown", "error"];
  for (let i = 1; i <= k; ++i) header.push("n" + i + "_id", "n" + i + "_label", "n" + i + "_distance");
  let failed = 0;
  for (let at = 0; at < files.length; at += limit) {
    const chunk = Array.from(files).slice(at, at + limit);
    const form = new FormData();
    for (const f of chunk) form.append("image", f);
    form.append("k", $("k").value);
    form.append("vote", $("vote").value);
    $("batch-summary").textContent = "classifying " + files.length + " images… " + at + " done";
    let answer;
    try {
      answer = await api("/v1/classify/batch", { method: "POST", body: form });
    } catch (e) {
      $("classify-error").textContent = e.message;
      $("classify-error").hidden = false;
      break;
    }
    answer.results.forEach((r, j) => {
      const tr = document.createElement("tr");
      const img = document.createElement("img");
      img.src = URL.createObjectURL(chunk[j]);
      img.className = "thumb";
      const td = document.createElement("td");
      td.append(img);
      const nb = r.neighbors && r.neighbors[0];
      const err = r.error ? r.error.message : "";
      if (err) ++failed;
      tr.append(td, text("td", r.image), text("td", err ? "error: " + err : (r.unknown ? "unknown" : r.label), "lbl"),
                text("td", err ? "" : (100 * r.confidence).toFixed(1) + "%"),
                text("td", nb ? nb.label + " #" + nb.id : ""),
                text("td", nb ? nb.distance.toFixed(4) : ""));
      body.append(tr);
      const row = [r.image, err ? "" : r.label, err ? "" : r.confidence,
                   err ? "" : (r.unknown ? 1 : 0), err];
      for (let i = 0; i < k; ++i) {
        const n = (r.neighbors || [])[i];
        row.push(n ? n.id : "", n ? n.label : "", n ? n.distance : "");
      }
      rows.push(row);
    });
  }
  $("batch-summary").textContent = rows.length + " of " + files.length + " images classified" +
      (failed ? ", " + failed + " could not be read" : "");
  const csv = [header, ...rows].map((r) => r.map(csvField).join(",")).join("\n") + "\n";
  $("batch-csv").href = URL.createObjectURL(new Blob([csv], { type: "text/csv" }));
}

async function scoreAnomaly(file) {
  $("anomaly-error").hidden = true;
  $("anomaly-result").hidden = true;
  const form = new FormData();
  form.append("image", file);
  try {
    const r = await api("/v1/anomaly", { method: "POST", body: form });
    $("anomaly-img").src = URL.createObjectURL(file);
    $("anomaly-heatmap").src = r.heatmap;
    $("anomaly-verdict").textContent = r.verdict;
    $("anomaly-verdict").className = "verdict " + r.verdict;
    $("anomaly-score").textContent = r.score.toFixed(4);
    $("anomaly-threshold").textContent = r.threshold.toFixed(4);
    $("anomaly-ms").textContent = r.ms.toFixed(0) + " ms";
    $("anomaly-result").hidden = false;
  } catch (e) {
    $("anomaly-error").textContent = e.message;
    $("anomaly-error").hidden = false;
  }
}

// A drop zone: click (or Enter) opens the file picker; a dropped or picked file goes to `use`.
function dropZone(drop, input, use) {
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter") input.click(); });
  input.addEventListener("change", () => { if (input.files.length) use(input.files); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) use(e.dataTransfer.files);
  });
}
dropZone($("drop"), $("file"), classify);
dropZone($("anomaly-drop"), $("anomaly-file"), (files) => scoreAnomaly(files[0]));

let browseLabel = "", browseOffset = 0, browseSeq = 0;
async function loadChips() {
  await loadStats();
  const all = [{ label: "", count: stats.rows }, ...stats.labels];
  $("chips").replaceChildren(...all.map((l) => {
    const b = text("button", (l.label || "all") + " (" + l.count + ")", "chip");
    b.dataset.label = l.label;
    b.classList.toggle("active", l.label === browseLabel);
    b.addEventListener("click", () => { browseLabel = l.label; browse(true); });
    return b;
  }));
  browse(true);
}
async function browse(fresh) {
  const seq = ++browseSeq;  // a later click wins over an answer still on its way
  if (fresh) { browseOffset = 0; $("browse-grid").replaceChildren(); }
  document.querySelectorAll("#chips .chip").forEach((c) =>
    c.classList.toggle("active", c.dataset.label === browseLabel));
  const q = new URLSearchParams({ offset: browseOffset, limit: 60 });
  if (browseLabel) q.set("label", browseLabel);
  const r = await api("/v1/items?" + q);
  if (seq !== browseSeq) return;
  $("browse-grid").append(...r.items.map((i) => card(i)));
  browseOffset += r.items.length;
  $("browse-count").textContent = r.total + " images" + (browseLabel ? " labelled " + browseLabel : "");
  $("more").hidden = browseOffset >= r.total;
}
$("more").addEventListener("click", () => browse(false));

$("add-token").value = sessionStorage.getItem("nearlabel-token") || "";
$("add-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const token = $("add-token").value;
  sessionStorage.setItem("nearlabel-token", token);
  const form = new FormData();
  form.append("image", $("add-file").files[0]);
  form.append("label", $("add-label").value);
  try {
    const r = await api("/v1/items", { method: "POST", body: form,
                                       headers: { Authorization: "Bearer " + token } });
    $("add-result").textContent = r.duplicate ? "Already stored as #" + r.id
                                              : "Added as #" + r.id;
    await loadStats();
  } catch (err) {
    $("add-result").textContent = "Not added: " + err.message;
  }
});

loadStats().catch((e) => { $("store-info").textContent = e.message; });
</script>
</body>
</html>
)html";

}  // namespace nearlabel
