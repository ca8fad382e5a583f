// ONNX Runtime session settings against nearlabel's (graph optimisation ALL, one thread per
// session, one image a run), on one single-thread session, in the same run: does any setting
// make inference itself cheaper? Runs the ONNX Runtime library nearlabel loads
// (npm onnxruntime-node), settings alternating pass by pass so that a shared machine's drift
// hits all of them alike.
//
//   node bench/ort_session_options.js MODEL.onnx [--images N] [--passes P] [--input NAME]
//
// The input is a fixed, deterministic tensor in the ImageNet-normalised range (inference time
// does not depend on the pixels, except through denormals, which one setting tests).
'use strict';
const path = require('path');
const ort = require(path.join(__dirname, '..', 'node_modules', 'onnxruntime-node'));

function parseArgs(argv) {
  const a = {model: null, images: 16, passes: 3, input: 'input'};
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${k} needs a value`);
      return argv[++i];
    };
    if (k === '--images') a.images = parseInt(value(), 10);
    else if (k === '--passes') a.passes = parseInt(value(), 10);
    else if (k === '--input') a.input = value();
    else if (k === '--help' || k === '-h') a.help = true;
    else if (!a.model) a.model = k;
    else throw new Error(`unknown argument ${k}`);
  }
  if (a.help || !a.model || !(a.images > 0) || !(a.passes > 0)) {
    console.error('usage: node bench/ort_session_options.js MODEL.onnx [--images N] ' +
                  '[--passes P] [--input NAME]');
    process.exit(a.help ? 0 : 2);
  }
  return a;
}

const kSettings = [
  {name: 'optimisation ALL, batch 1 (nearlabel)', batch: 1, options: {graphOptimizationLevel: 'all'}},
  {name: 'optimisation EXTENDED, batch 1', batch: 1, options: {graphOptimizationLevel: 'extended'}},
  {name: 'optimisation BASIC, batch 1', batch: 1, options: {graphOptimizationLevel: 'basic'}},
  {
    name: 'ALL + set_denormal_as_zero, batch 1',
    batch: 1,
    options: {graphOptimizationLevel: 'all', extra: {session: {set_denormal_as_zero: '1'}}},
  },
  {name: 'optimisation ALL, batch 2', batch: 2, options: {graphOptimizationLevel: 'all'}},
  {name: 'optimisation ALL, batch 4', batch: 4, options: {graphOptimizationLevel: 'all'}},
];

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const runs = [];
  for (const s of kSettings) {
    const session = await ort.InferenceSession.create(a.model, Object.assign({
      intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential',
      extra: {session: {intra_op: {allow_spinning: '0'}}},
    }, s.options));
    const data = new Float32Array(s.batch * 3 * 224 * 224);
    for (let i = 0; i < data.length; i++) data[i] = 2 * Math.sin(i * 0.37);
    const feeds = {[a.input]: new ort.Tensor('float32', data, [s.batch, 3, 224, 224])};
    await session.run(feeds);  // warm-up
    runs.push({setting: s, session, feeds, ms: []});
  }
  for (let p = 0; p < a.passes; p++) {
    for (const r of runs) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < a.images; i += r.setting.batch) await r.session.run(r.feeds);
      r.ms.push(Number(process.hrtime.bigint() - t0) / 1e6 / a.images);
    }
  }
  console.log(`ort_session_options: ${path.basename(a.model)}, one session x 1 thread, ` +
              `${a.images} images a pass, ${a.passes} passes, ONNX Runtime ${ort.env.versions.common}`);
  const best = (r) => Math.min(...r.ms);
  const median = (r) => [...r.ms].sort((x, y) => x - y)[Math.floor(r.ms.length / 2)];
  const base = runs[0];
  for (const r of runs) {
    console.log(`  ${r.setting.name.padEnd(40)} ms/image best ${best(r).toFixed(1).padStart(6)}, ` +
                `median ${median(r).toFixed(1).padStart(6)}; time / nearlabel's ` +
                `${(best(r) / best(base)).toFixed(3)}x`);
  }
}

main().catch((e) => {
  console.error(`ort_session_options: ${e.message}`);
  process.exit(1);
});
