// LanceDB (the embedded on-disk vector store a user would otherwise pick) on the same vectors
// and queries as bench/scale.sh measures nearlabel on: the vectors are read from nearlabel's
// segment file (STORE.vectors: a 4096-byte header, rows x dims float32, then the ids), the
// queries and their exact top 10 from the files scale_store writes.
//
//   node scale.mjs load DIR SEGMENT [flat]     create the table (batches of 20,000 rows) and
//                                              its IVF-PQ index (not with "flat")
//   node scale.mjs measure DIR QUERIES EXACT   open time, flat and IVF-PQ queries/s, recall@10
//   node scale.mjs once DIR QUERIES [flat|ivf] one query, for whole-process timing
import fs from "node:fs";
import { createRequire } from "node:module";
import * as lancedb from "@lancedb/lancedb";

// LanceDB loads apache-arrow with require(): the same (CommonJS) instance, or its
// `instanceof Table` checks fail on our tables.
const arrow = createRequire(import.meta.url)("apache-arrow");

const now = () => Number(process.hrtime.bigint()) / 1e9;

function readSegment(path) {
  const fd = fs.openSync(path, "r");
  const h = Buffer.alloc(4096);
  fs.readSync(fd, h, 0, 4096, 0);
  if (h.toString("latin1", 0, 13) !== "NEARLABEL-VEC") throw new Error(`${path}: not a segment`);
  return { fd, dims: h.readUInt32LE(20), rows: Number(h.readBigUInt64LE(24)),
           idsOffset: Number(h.readBigUInt64LE(96)) };
}

function batchTable(ids, vectors, dims) {
  const itemField = new arrow.Field("item", new arrow.Float32(), true);
  const listType = new arrow.FixedSizeList(dims, itemField);
  const n = ids.length;
  const child = arrow.makeData({ type: new arrow.Float32(), length: n * dims, data: vectors });
  const vec = arrow.makeVector(arrow.makeData({ type: listType, length: n, nullCount: 0, child }));
  const id = arrow.makeVector(ids);
  return new arrow.Table({ id, vector: vec });
}

async function load(dir, segmentPath, withIndex) {
  const seg = readSegment(segmentPath);
  const db = await lancedb.connect(dir);
  const t0 = now();
  let table = null;
  const per = 20000;
  for (let at = 0; at < seg.rows; at += per) {
    const n = Math.min(per, seg.rows - at);
    const vbuf = Buffer.alloc(n * seg.dims * 4);
    fs.readSync(seg.fd, vbuf, 0, vbuf.length, 4096 + at * seg.dims * 4);
    const ibuf = Buffer.alloc(n * 8);
    fs.readSync(seg.fd, ibuf, 0, ibuf.length, seg.idsOffset + at * 8);
    const t = batchTable(new BigInt64Array(ibuf.buffer, ibuf.byteOffset, n),
                         new Float32Array(vbuf.buffer, vbuf.byteOffset, n * seg.dims), seg.dims);
    if (table === null) table = await db.createTable("v", t, { mode: "overwrite" });
    else await table.add(t);
  }
  const loaded = now() - t0;
  if (withIndex === "flat") {
    console.log(`lancedb load: ${seg.rows} rows x ${seg.dims} in ${loaded.toFixed(1)} s, no IVF-PQ ` +
                `index (its build took 503 s at 100k rows on this machine)`);
    return;
  }
  const t1 = now();
  // IVF-PQ as LanceDB's docs size it: sqrt(N) partitions, dims/16 sub-vectors.
  await table.createIndex("vector", { config: lancedb.Index.ivfPq({
    numPartitions: Math.max(1, Math.round(Math.sqrt(seg.rows))),
    numSubVectors: Math.max(1, Math.floor(seg.dims / 16)), distanceType: "cosine" }) });
  console.log(`lancedb load: ${seg.rows} rows x ${seg.dims} in ${loaded.toFixed(1)} s, ` +
              `IVF-PQ index built in ${(now() - t1).toFixed(1)} s`);
}

function readQueries(path, dims) {
  const b = fs.readFileSync(path);
  const all = new Float32Array(b.buffer, b.byteOffset, b.length / 4);
  const out = [];
  for (let i = 0; i + dims <= all.length; i += dims) out.push(all.slice(i, i + dims));
  return out;
}

function query(table, q, mode) {
  let s = table.vectorSearch(q).distanceType("cosine").limit(10);
  s = mode === "flat" ? s.bypassVectorIndex() : s.nprobes(20).refineFactor(10);
  return s.toArray();
}

async function measure(dir, queriesPath, exactPath) {
  const opens = [];
  for (let i = 0; i < 5; i++) {
    const t0 = now();
    const db = await lancedb.connect(dir);
    await db.openTable("v");
    opens.push(now() - t0);
  }
  opens.sort((a, b) => a - b);
  const t0 = now();
  const db = await lancedb.connect(dir);
  const table = await db.openTable("v");
  const rows = await table.countRows();
  const dims = (await table.schema()).fields[1].type.listSize;
  const qs = readQueries(queriesPath, dims);
  const exact = fs.readFileSync(exactPath, "utf8").trim().split("\n").map((l) => l.split(" ").map(Number));
  await query(table, qs[0], (await table.listIndices()).length ? "ivf" : "flat");
  const first = now() - t0;
  const modes = (await table.listIndices()).length ? ["ivf", "flat"] : ["flat"];
  for (const mode of modes) {
    const n = mode === "flat" ? Math.max(3, Math.min(qs.length, Math.round(2e6 / rows))) : qs.length;
    let hits = 0;
    const t = now();
    for (let i = 0; i < n; i++) {
      const got = (await query(table, qs[i], mode)).map((r) => Number(r.id));
      const want = new Set(exact[i]);
      hits += got.filter((id) => want.has(id)).length;
    }
    const qps = n / (now() - t);
    console.log(`lancedb ${mode === "flat" ? "flat  " : "IVF-PQ"}: ${rows} rows: open ` +
                `${(opens[2] * 1e3).toFixed(2)} ms (median of 5), first answer in process ` +
                `${(first * 1e3).toFixed(1)} ms, ${qps.toFixed(1)} q/s, recall@10 ` +
                `${(hits / (n * 10)).toFixed(4)} over ${n} queries`);
  }
}

async function once(dir, queriesPath, mode) {
  const db = await lancedb.connect(dir);
  const table = await db.openTable("v");
  const dims = (await table.schema()).fields[1].type.listSize;
  await query(table, readQueries(queriesPath, dims)[0], mode || "ivf");
}

const [cmd, ...args] = process.argv.slice(2);
const run = { load: () => load(args[0], args[1], args[2]), measure: () => measure(args[0], args[1], args[2]),
              once: () => once(args[0], args[1], args[2]) }[cmd];
if (!run) {
  console.error("usage: scale.mjs load DIR SEGMENT | measure DIR QUERIES EXACT | once DIR QUERIES [flat|ivf]");
  process.exit(2);
}
await run();
