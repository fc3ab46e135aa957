// The page's driver: reads the job from the URL, downloads the model's files, runs the job in
// the wasm module (pkg/, built by examples/web/build.sh) and writes the result as JSON into
// #result, setting data-done="1" when it is there (errors too, as {"error": …}).
import init, { init_gpu, Files, run } from './pkg/zoo_web.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

// Files of a Hugging Face / sentence-transformers folder, tried in turn when the server gives
// no listing; missing ones are skipped.
const FOLDER_FILES = [
  'config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json',
  'generation_config.json', 'vocab.json', 'merges.txt', 'special_tokens_map.json',
  'modules.json', 'sentence_bert_config.json', '1_Pooling/config.json',
];

function status(text) { $('status').textContent = text; }

function finish(obj) {
  const el = $('result');
  el.textContent = JSON.stringify(obj);
  el.dataset.done = '1';
}

async function fetchBytes(url) {
  const res = await fetch(url);
  if (!res.ok) return null;
  const total = Number(res.headers.get('content-length')) || 0;
  const reader = res.body.getReader();
  const chunks = [];
  let got = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    got += value.length;
    status(`downloading ${url}: ${(got / 1e6).toFixed(1)}${total ? ' / ' + (total / 1e6).toFixed(1) : ''} MB`);
  }
  const bytes = new Uint8Array(got);
  let at = 0;
  for (const c of chunks) { bytes.set(c, at); at += c.length; }
  return bytes;
}

// The model's files: one .gguf, or a folder (its listing from `zoo web`, else the usual names).
async function download(model) {
  const files = new Files();
  if (model.toLowerCase().endsWith('.gguf')) {
    const bytes = await fetchBytes(model);
    if (!bytes) throw new Error(`cannot download ${model}`);
    files.add(model.split('/').pop(), bytes);
    return files;
  }
  const base = model.replace(/\/+$/, '');
  let names = FOLDER_FILES;
  try {
    const res = await fetch(base + '/');
    if (res.ok && (res.headers.get('content-type') || '').includes('json')) names = await res.json();
  } catch (_) { /* no listing */ }
  const gguf = names.find((n) => n.toLowerCase().endsWith('.gguf'));
  if (gguf) names = [gguf];
  let count = 0;
  for (const name of names) {
    const bytes = await fetchBytes(`${base}/${name}`);
    if (bytes) { files.add(name, bytes); count++; }
  }
  if (!count) throw new Error(`no files found under ${base}/`);
  return files;
}

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return dot / Math.sqrt(na * nb);
}

function similarityTable(texts, vectors) {
  const table = document.createElement('table');
  const head = table.insertRow();
  head.insertCell().textContent = '';
  texts.forEach((_, j) => { head.insertCell().textContent = `#${j + 1}`; });
  texts.forEach((t, i) => {
    const row = table.insertRow();
    row.insertCell().textContent = `#${i + 1} ${t}`;
    texts.forEach((_, j) => { row.insertCell().textContent = cosine(vectors[i], vectors[j]).toFixed(3); });
  });
  $('table').replaceChildren(table);
}

async function showForm() {
  const form = $('form');
  form.hidden = false;
  try {
    const res = await fetch('models.json');
    if (res.ok) {
      for (const m of await res.json()) {
        const li = document.createElement('li');
        li.textContent = m;
        $('models').append(li);
      }
      const first = $('models').firstChild;
      if (first) form.model.value = first.textContent;
    }
  } catch (_) { /* a plain static server */ }
  status('give a job in the URL, or fill in the form');
}

async function main() {
  const model = params.get('model');
  if (!model) { await showForm(); return; }
  const task = params.get('task') || 'chat';
  const prompt = params.get('prompt') ?? 'What is the capital of France?';
  const job = {
    task, model, prompt: task === 'embed' ? '' : prompt, texts: [],
    max_new_tokens: Number(params.get('max_new_tokens') || 64),
    greedy: ['1', 'true', 'on'].includes(params.get('greedy') || ''),
    seed: Number(params.get('seed') || 0),
  };
  if (task === 'embed') {
    job.texts = JSON.parse(prompt);
    if (!Array.isArray(job.texts)) throw new Error('for embed, prompt is a JSON list of strings');
  }
  await init();
  if (!navigator.gpu) throw new Error('this browser offers no WebGPU (navigator.gpu is missing)');
  status('starting WebGPU…');
  const adapter = await init_gpu();
  const files = await download(model);
  status(`running ${task} on ${adapter}`);
  const out = $('output');
  const t0 = performance.now();
  let tFirst = null, tLast = null, n = 0;
  const result = JSON.parse(await run(JSON.stringify(job), files, (piece, count) => {
    const now = performance.now();
    if (tFirst === null) tFirst = now;
    tLast = now; n = count;
    out.textContent += piece;
    const rate = n > 1 ? (n - 1) / ((tLast - tFirst) / 1000) : 0;
    $('stats').textContent = `${n} tokens, ${rate.toFixed(2)} tokens/s`;
  }));
  const seconds = (performance.now() - t0) / 1000;
  if (task === 'embed') {
    similarityTable(job.texts, result.embeddings);
    $('stats').textContent = `${job.texts.length} sentences in ${seconds.toFixed(2)} s`;
  } else {
    result.prefill_s = (tFirst - t0) / 1000;
    result.decode_tok_s = n > 1 ? (n - 1) / ((tLast - tFirst) / 1000) : 0;
    $('stats').textContent = `${n} tokens in ${seconds.toFixed(2)} s; first token after ${result.prefill_s.toFixed(2)} s, then ${result.decode_tok_s.toFixed(2)} tokens/s`;
  }
  result.adapter = adapter;
  status(`done on ${adapter}`);
  finish(result);
}

main().catch((e) => {
  const message = String(e && e.message ? e.message : e);
  status('error: ' + message);
  finish({ error: message });
});
