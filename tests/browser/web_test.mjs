// End-to-end browser test: the web page of `nearlabel serve` and the `eval --report` HTML,
// driven in Debian's headless Chromium with playwright-core.
//
// Usage: node tests/browser/web_test.mjs NEARLABEL_BINARY ARTIFACT_DIR
// Needs NEARLABEL_MODELS and NEARLABEL_DATASETS. Screenshots land in ARTIFACT_DIR.
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, basename } from "node:path";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const [nl, artifacts] = process.argv.slice(2);
const datasets = process.env.NEARLABEL_DATASETS;
assert.ok(nl && artifacts, "usage: web_test.mjs NEARLABEL ARTIFACT_DIR (NEARLABEL_DATASETS set)");
if (!datasets || !process.env.NEARLABEL_MODELS) {
  console.log("web_test: NEARLABEL_DATASETS / NEARLABEL_MODELS unset: skipped");
  process.exit(77);  // CTest SKIP_RETURN_CODE
}
mkdirSync(artifacts, { recursive: true });
const work = mkdtempSync(join(tmpdir(), "nearlabel-web-"));
const store = join(work, "neu.db");
const dataset = join(datasets, "neu-surface-defects");
const token = "browser-test-token";

function run(args) {
  const r = spawnSync(nl, args, { encoding: "utf8" });
  assert.equal(r.status, 0, `nearlabel ${args.join(" ")} failed:\n${r.stderr}`);
  return r.stdout;
}

let checks = 0;
function check(what, fn) {
  return Promise.resolve(fn()).then(() => { ++checks; console.log("ok   " + what); });
}

// A store of one shared dataset, and the report of its evaluation; an anomaly model that takes
// crazing as normal, and the report of its evaluation against scratches.
run(["ingest", store, dataset]);
const report = join(work, "report.html");
run(["eval", store, "--report", report, "--show", "0"]);
const normal = "field(metadata,'label')='crazing'";
run(["anomaly", "fit", store, "--normal", normal, "--coreset", "0.02"]);
const anomalyReport = join(work, "anomaly.html");
const anomalyEval = JSON.parse(run(["--json", "anomaly", "eval", store, "--report", anomalyReport,
                                    "--anomalous", "field(metadata,'label')='scratches'"]));

// The server on a free port (it prints the port it bound).
// --max-batch 4: a drop of 10 images goes in three batch requests.
const server = spawn(nl, ["serve", store, "--port", "0", "--token", token, "--max-batch", "4"],
                     { stdio: ["ignore", "pipe", "inherit"] });
const url = await new Promise((resolve, reject) => {
  let out = "";
  server.stdout.on("data", (d) => {
    out += d;
    const m = out.match(/on (http:\/\/\S+)/);
    if (m) resolve(m[1]);
  });
  server.on("exit", (code) => reject(new Error("server exited with " + code)));
  setTimeout(() => reject(new Error("server did not start: " + out)), 60000);
});

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));

  // 1. Classify a shared-dataset image by picking it in the page.
  const cls = "scratches";
  const image = join(dataset, cls, readdirSync(join(dataset, cls)).sort()[3]);
  const cli = JSON.parse(run(["--json", "classify", store, image]))[0];
  await page.goto(url);
  await page.waitForFunction(() => /images/.test(document.getElementById("store-info").textContent));
  await page.setInputFiles("#file", image);
  await page.waitForSelector("#result:not([hidden])");
  await check("the page shows the label nearlabel classify gives", async () => {
    assert.equal(await page.textContent("#result-label"), cli.label);
    assert.equal(cli.label, cls);
  });
  await check("one bar per class score, and a confidence", async () => {
    assert.ok((await page.locator("#bars .bar").count()) >= 1);
    assert.match(await page.textContent("#confidence"), /%$/);
  });
  await check("the k neighbour thumbnails are those of the CLI, and they load", async () => {
    const cards = page.locator("#neighbors .card");
    assert.equal(await cards.count(), cli.neighbors.length);
    await page.waitForFunction(() => [...document.querySelectorAll("#neighbors img")]
      .every((i) => i.complete && i.naturalWidth > 0));
    const srcs = await page.$$eval("#neighbors img", (imgs) => imgs.map((i) => i.getAttribute("src")));
    assert.deepEqual(srcs, cli.neighbors.map((n) => `/v1/items/${n.id}/thumbnail`));
  });
  await page.screenshot({ path: join(artifacts, "classify.png"), fullPage: true });

  // 2. A file that is not an image: a clear error on the page.
  await page.setInputFiles("#file", { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("hello") });
  await check("a non-image upload shows the server's error", async () => {
    await page.waitForSelector("#classify-error:not([hidden])");
    assert.match(await page.textContent("#classify-error"), /not an image/);
    assert.ok(await page.isHidden("#result"), "the previous image's result is gone");
  });

  // 2b. Drop 10 images at once: a table of results and a CSV download, with the labels and
  // nearest neighbours `nearlabel classify --out results.csv` gives for the same files.
  const many = ["crazing", "inclusion", "patches", "pitted_surface", "scratches"].flatMap((c) =>
    readdirSync(join(dataset, c)).sort().slice(20, 22).map((f) => join(dataset, c, f)));
  const cliCsv = join(work, "many.csv");
  run(["classify", store, ...many, "--out", cliCsv]);
  const cliRows = readFileSync(cliCsv, "utf8").trim().split("\n").slice(1).map((l) => l.split(","));
  const payload = many.map((f) => ({ name: basename(f), b64: readFileSync(f).toString("base64") }));
  const dataTransfer = await page.evaluateHandle((files) => {
    const dt = new DataTransfer();
    for (const f of files) {
      const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
      dt.items.add(new File([bytes], f.name, { type: "image/jpeg" }));
    }
    return dt;
  }, payload);
  await page.dispatchEvent("#drop", "drop", { dataTransfer });
  await page.waitForFunction(() => /10 of 10 images classified/.test(document.getElementById("batch-summary").textContent));
  await check("a drop of 10 images fills a table of 10 rows with the CLI's labels", async () => {
    const rows = await page.$$eval("#batch-table tbody tr", (trs) =>
      trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
    assert.equal(rows.length, 10);
    assert.deepEqual(rows.map((r) => r[1]), many.map((f) => basename(f)));
    assert.deepEqual(rows.map((r) => r[2]), cliRows.map((r) => r[1]));
    assert.ok(await page.isHidden("#result"), "the single-image panel is hidden");
  });
  await check("the CSV download has the CLI's columns, labels and nearest ids", async () => {
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#batch-csv")]);
    const csv = readFileSync(await download.path(), "utf8").trim().split("\n").map((l) => l.split(","));
    assert.equal(csv.length, 11);
    assert.deepEqual(csv[0], readFileSync(cliCsv, "utf8").split("\n")[0].split(","));
    for (let i = 0; i < 10; ++i) {
      assert.equal(csv[i + 1][1], cliRows[i][1], "label of " + many[i]);
      assert.equal(csv[i + 1][5], cliRows[i][5], "nearest id of " + many[i]);
      assert.ok(Math.abs(Number(csv[i + 1][7]) - Number(cliRows[i][7])) < 1e-5, "distance");
    }
  });
  await page.screenshot({ path: join(artifacts, "classify-many.png"), fullPage: true });

  // 3. Browse the labels.
  await page.click("#tab-browse");
  await page.waitForSelector("#chips .chip");
  await page.click(`#chips .chip[data-label="crazing"]`);
  await page.waitForFunction(() => /labelled crazing/.test(document.getElementById("browse-count").textContent));
  await check("browsing a label lists its thumbnails, loaded", async () => {
    assert.match(await page.textContent("#browse-count"), /^150 images labelled crazing/);
    await page.waitForFunction(() => {
      const imgs = [...document.querySelectorAll("#browse-grid img")];
      return imgs.length > 0 && imgs.slice(0, 8).every((i) => i.complete && i.naturalWidth > 0);
    });
    const labels = await page.$$eval("#browse-grid .lbl", (l) => l.map((e) => e.textContent));
    assert.ok(labels.length === 60 && labels.every((l) => l === "crazing"));
  });
  await page.screenshot({ path: join(artifacts, "browse.png") });

  // 4. Add an image of a new class with the token; the next search finds it.
  const casting = join(datasets, "casting", "ok_front");
  const newImage = join(casting, readdirSync(casting).sort()[0]);
  await page.click("#tab-add");
  await page.setInputFiles("#add-file", newImage);
  await page.fill("#add-label", "casting_ok");
  await page.fill("#add-token", "wrong-token");
  await page.click("#add-form button[type=submit]");
  await check("a wrong token is refused and says why", async () => {
    await page.waitForFunction(() => /Not added/.test(document.getElementById("add-result").textContent));
    assert.match(await page.textContent("#add-result"), /bearer token/);
  });
  await page.fill("#add-token", token);
  await page.click("#add-form button[type=submit]");
  await page.waitForFunction(() => /Added as #/.test(document.getElementById("add-result").textContent));
  await page.click("#tab-classify");
  await page.setInputFiles("#file", newImage);
  await check("an added image is the nearest neighbour of itself at once", async () => {
    await page.waitForFunction(() => {
      const first = document.querySelector("#neighbors .card .lbl");
      return first && first.textContent === "casting_ok";
    });
    assert.match(await page.textContent("#neighbors .card"), /distance 0\.0000/);
  });
  await page.screenshot({ path: join(artifacts, "added.png"), fullPage: true });

  // 5. Anomaly: the tab scores an image like `nearlabel anomaly score` and shows its heat map.
  const scratch = join(dataset, "scratches", readdirSync(join(dataset, "scratches")).sort()[5]);
  const scored = JSON.parse(run(["--json", "anomaly", "score", store, scratch]))[0];
  await page.click("#tab-anomaly");
  await page.setInputFiles("#anomaly-file", scratch);
  await page.waitForSelector("#anomaly-result:not([hidden])");
  await check("the anomaly tab gives the score and verdict of nearlabel anomaly score", async () => {
    assert.equal(await page.textContent("#anomaly-score"), scored.score.toFixed(4));
    assert.equal(await page.textContent("#anomaly-verdict"), scored.verdict);
    assert.equal(await page.textContent("#anomaly-threshold"), scored.threshold.toFixed(4));
  });
  await check("the heat map is an image of the model's input size", async () => {
    await page.waitForFunction(() => {
      const i = document.getElementById("anomaly-heatmap");
      return i.complete && i.naturalWidth > 0;
    });
    const size = await page.$eval("#anomaly-heatmap", (i) => [i.naturalWidth, i.naturalHeight]);
    assert.ok(size[0] >= 100 && size[0] === size[1], "heat map " + size);
  });
  await page.setInputFiles("#anomaly-file", { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("hi") });
  await check("a non-image in the anomaly tab shows the server's error", async () => {
    await page.waitForSelector("#anomaly-error:not([hidden])");
    assert.match(await page.textContent("#anomaly-error"), /not an image/);
    assert.ok(await page.isHidden("#anomaly-result"), "the previous image's result is gone");
  });
  await page.screenshot({ path: join(artifacts, "anomaly.png"), fullPage: true });
  assert.deepEqual(pageErrors, [], "no JavaScript errors on the page");

  // 6. The evaluation report: the confusion matrix adds up to N.
  const rp = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await rp.goto("file://" + report);
  await check("the report's confusion matrix cells sum to N", async () => {
    const n = Number(await rp.textContent("#n"));
    const sum = await rp.$$eval("#confusion td.cell", (cells) =>
      cells.reduce((s, c) => s + Number(c.dataset.count), 0));
    assert.ok(n > 800, "N = " + n);
    assert.equal(sum, n);
  });
  await check("the report shows every mistake with two thumbnails", async () => {
    const title = await rp.textContent("h2:has-text('Mistakes')");
    const mistakes = Number(title.match(/\((\d+)\)/)[1]);
    assert.equal(await rp.locator("#mistakes .pair").count(), mistakes);
    assert.equal(await rp.locator("#mistakes .pair img").count(), 2 * mistakes);
  });
  await check("the report's reliability diagram has a point per filled bin of each confidence", async () => {
    const points = await rp.locator("#reliability circle").count();
    assert.ok(points >= 2, points + " points");
    const ece = Number(await rp.textContent("#ece"));
    assert.ok(ece >= 0 && ece <= 1, "ECE " + ece);
  });
  await rp.screenshot({ path: join(artifacts, "report.png"), fullPage: true });

  // 7. The anomaly report: its figures are the CLI's, and it shows a heat map for every error.
  const ap = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await ap.goto("file://" + anomalyReport);
  await check("the anomaly report's AUROC and counts are those of anomaly eval --json", async () => {
    assert.equal(await ap.textContent("#auroc"), anomalyEval.auroc.toFixed(4));
    assert.equal(Number(await ap.textContent("#normal-n")), anomalyEval.normal_images);
    assert.equal(Number(await ap.textContent("#anomalous-n")), anomalyEval.anomalous_images);
  });
  await check("missed anomalies and false alarms match the calibrated threshold's rates", async () => {
    const cal = anomalyEval.thresholds[0];
    const count = async (title) => Number((await ap.textContent(`h2:has-text('${title}')`)).match(/\((\d+)\)/)[1]);
    assert.equal(await count("Missed anomalies"), Math.round(cal.miss_rate * anomalyEval.anomalous_images));
    assert.equal(await count("False alarms"), Math.round(cal.false_alarm_rate * anomalyEval.normal_images));
    const shown = await ap.locator("#missed figure, #false-alarms figure").count();
    assert.equal(shown, Math.min(24, await count("Missed anomalies")) + Math.min(24, await count("False alarms")));
  });
  await check("every heat map in the anomaly report loads", async () => {
    const sizes = await ap.$$eval(".heat img", (imgs) => imgs.map((i) => i.naturalWidth));
    assert.ok(sizes.length > 0 && sizes.every((w) => w > 0), "heat maps: " + sizes);
  });
  await ap.screenshot({ path: join(artifacts, "anomaly-report.png"), fullPage: true });
} catch (e) {
  failed = true;
  console.error("FAIL " + e.stack);
} finally {
  await browser.close();
  server.kill("SIGTERM");
  await new Promise((r) => server.on("exit", r));
  rmSync(work, { recursive: true, force: true });
}
console.log(`${checks} browser checks passed${failed ? ", then one failed" : ""}; screenshots in ${artifacts}`);
process.exit(failed ? 1 : 0);
