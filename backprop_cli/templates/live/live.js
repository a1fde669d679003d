// backprop's live page: plain DOM, SVG and canvas, no library. Every request carries the
// token of the address backprop printed. Names from the run (run, feature and class names)
// are only ever set as text, never as markup.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const $ = (id) => document.getElementById(id);
let meta = null, state = null, ended = false;
const curves = { epochs: [], values: {} };

function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "-";
  return String(+Number(v).toPrecision(6));
}

function short(text, n) { text = String(text); return text.length > n ? text.slice(0, n - 1) + "\u2026" : text; }

function notice(text, error) { $("notice").textContent = text || ""; $("notice").className = error ? "error" : ""; }

async function control(action, value) {
  try {
    const response = await fetch("/api/control", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Backprop-Token": TOKEN },
      body: JSON.stringify({ action, value }),
    });
    const answer = await response.json().catch(() => ({}));
    notice(response.ok ? "" : (answer.error || `the server said ${response.status}`), !response.ok);
  } catch (e) {
    notice("the server cannot be reached: training has ended or was stopped", true);
  }
}

// -- curves ------------------------------------------------------------------------------

function addCurves(part) {
  if (!part) return;
  if (part.reset) { curves.epochs = []; curves.values = {}; }
  // a page that connects gets the curves so far and then the last snapshot, whose new points
  // it may already have: only epochs past the last one are added
  const last = curves.epochs.length ? curves.epochs[curves.epochs.length - 1] : -Infinity;
  const skip = part.epochs.findIndex((e) => e > last);
  if (skip < 0) return;
  curves.epochs.push(...part.epochs.slice(skip));
  for (const [column, rows] of Object.entries(part.values)) {
    (curves.values[column] = curves.values[column] || []).push(...rows.slice(skip));
  }
}

function setupCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio); canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "11px sans-serif";
  return { ctx, width, height };
}

function niceTicks(lo, hi, count) {
  const span = hi - lo || Math.abs(hi) || 1;
  const step0 = span / count, mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
}

// series: [{x: [...], y: [...], color, dash}], the y values may be null (not finite)
function drawChart(canvas, series, options) {
  const { ctx, width, height } = setupCanvas(canvas);
  const left = 58, right = 26, top = 8, bottom = 30;
  const xs = series.flatMap((s) => s.x), ys = series.flatMap((s) => s.y).filter((v) => v !== null && Number.isFinite(v));
  if (!xs.length || !ys.length) {
    ctx.fillStyle = "#888"; ctx.fillText("no epochs yet", left, top + 20); return;
  }
  let x0 = options.x0 !== undefined ? options.x0 : Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let lo = Math.min(...ys), hi = Math.max(...ys);
  const log = options.log === "auto" ? (lo > 0 && hi / lo > 100) : false;
  if (options.range) { [lo, hi] = options.range; }
  const ty = log ? (v) => Math.log10(v) : (v) => v;
  let y0 = ty(lo), y1 = ty(hi);
  if (y1 - y0 < 1e-12) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05; if (!options.range) { y0 -= pad; y1 += pad; }
  const px = (x) => left + (x - x0) / (x1 - x0) * (width - left - right);
  const py = (y) => top + (1 - (ty(y) - y0) / (y1 - y0)) * (height - top - bottom);
  ctx.strokeStyle = "#e5e5e5"; ctx.fillStyle = "#555"; ctx.lineWidth = 1;
  const yTicks = log ? niceTicks(Math.ceil(y0), Math.floor(y1), 5).filter(Number.isInteger).map((e) => Math.pow(10, e))
                     : niceTicks(y0, y1, 5);
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (const t of yTicks) {
    const y = py(t); if (y < top - 1 || y > height - bottom + 1) continue;
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(width - right, y); ctx.stroke();
    ctx.fillText(log ? t.toExponential(0).replace("e+", "e") : fmt(t), left - 5, y);
  }
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (const t of niceTicks(x0, x1, Math.max(2, Math.floor((width - left) / 90)))) {
    const x = px(t); if (x < left - 1 || x > width - right + 1) continue;
    ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, height - bottom); ctx.stroke();
    ctx.fillText(String(t), x, height - bottom + 4);
  }
  ctx.fillText("epoch", left + (width - left - right) / 2, height - 14);
  ctx.strokeStyle = "#999"; ctx.strokeRect(left, top, width - left - right, height - top - bottom);
  ctx.save(); ctx.beginPath(); ctx.rect(left, top, width - left - right, height - top - bottom); ctx.clip();
  for (const s of series) {
    ctx.strokeStyle = s.color; ctx.lineWidth = s.width || 1.6; ctx.setLineDash(s.dash || []);
    ctx.beginPath(); let pen = false;
    for (let i = 0; i < s.x.length; i++) {
      const v = s.y[i];
      if (v === null || !Number.isFinite(v) || (log && v <= 0)) { pen = false; continue; }
      if (pen) ctx.lineTo(px(s.x[i]), py(v)); else { ctx.moveTo(px(s.x[i]), py(v)); pen = true; }
    }
    ctx.stroke();
  }
  ctx.setLineDash([3, 3]); ctx.strokeStyle = "#9a6ad0"; ctx.lineWidth = 1;
  for (const m of options.marks || []) {   // the learning-rate changes
    if (m < x0 || m > x1) continue;
    ctx.beginPath(); ctx.moveTo(px(m), top); ctx.lineTo(px(m), height - bottom); ctx.stroke();
  }
  ctx.restore(); ctx.setLineDash([]);
  if (log) { ctx.fillStyle = "#777"; ctx.textAlign = "left"; ctx.fillText("log scale", left + 4, top + 2); }
}

function column(name, k) {
  const rows = curves.values[name] || [];
  return rows.map((r) => (r ? r[k] : null));
}

function modelColor(k) { return COLORS[k % COLORS.length]; }

function drawCurves() {
  if (!meta) return;
  const K = meta.labels.length, series = [], legend = [];
  const lastEpoch = state ? state.epoch : 0;
  for (let k = 0; k < K; k++) {
    const x = curves.epochs.slice(), y = column("loss", k);
    if (state && state.loss && state.loss[k] !== null && x[x.length - 1] !== lastEpoch && lastEpoch > 0) {
      x.push(lastEpoch); y.push(state.loss[k]);
    }
    series.push({ x, y, color: modelColor(k), width: k === (state ? state.selected : 0) ? 2.2 : 1.4 });
    if (curves.values.val_loss) series.push({ x: curves.epochs, y: column("val_loss", k), color: modelColor(k), dash: [5, 4] });
    legend.push([modelColor(k), K > 1 ? meta.labels[k] : "training", false]);
  }
  if (curves.values.val_loss) legend.push(["#666", "validation (dashed)", false]);
  const start = state ? (state.start_epoch || 0) : 0;
  const marks = state ? state.changes.map((c) => c.epoch) : [];
  if (marks.length) legend.push(["#9a6ad0", "learning-rate change", false]);
  drawChart($("curve"), series, { log: "auto", x0: Math.min(start, curves.epochs[0] || start), marks });
  setLegend($("legend"), legend);
  $("curve").dataset.points = String(curves.epochs.length);  // what the tests read
  if (curves.values.accuracy) {
    $("accuracypanel").hidden = false;
    const acc = [];
    for (let k = 0; k < K; k++) {
      acc.push({ x: curves.epochs, y: column("accuracy", k), color: modelColor(k) });
      if (curves.values.val_accuracy) acc.push({ x: curves.epochs, y: column("val_accuracy", k), color: modelColor(k), dash: [5, 4] });
    }
    drawChart($("accuracy"), acc, { range: [0, 1] });
    const key = K > 1 ? meta.labels.map((label, k) => [modelColor(k), label, false]) : [[modelColor(0), "training", false]];
    if (curves.values.val_accuracy) key.push(["#666", "validation (dashed)", false]);
    setLegend($("accuracylegend"), key);
  }
}

function setLegend(element, items) {
  element.replaceChildren(...items.map(([color, label, dot]) => {
    const span = document.createElement("span"), mark = document.createElement("i");
    mark.style.background = color; if (dot) mark.className = "dot";
    span.append(mark, document.createTextNode(label));
    return span;
  }));
}

// -- the picture: class regions or the fitted curve -----------------------------------------

function hexRgb(hex) { return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)); }

function drawPicture() {
  if (!meta || !state) return;
  const canvas = $("picture"), picture = state.picture;
  if (!picture) { $("picturepanel").hidden = true; return; }
  const { ctx, width, height } = setupCanvas(canvas);
  const left = 44, right = 10, top = 8, bottom = 30;
  const pts = meta.points;
  if (meta.panel === "boundary") {
    $("picturetitle").textContent = "Class regions";
    const [x0, x1, y0, y1] = meta.extent, n = meta.grid;
    const w = width - left - right, h = height - top - bottom;
    const cw = w / n, ch = h / n;
    for (let i = 0; i < picture.class.length; i++) {
      const gx = i % n, gy = Math.floor(i / n);   // rows of constant y, from y0 up
      const [r, g, b] = hexRgb(modelColor(picture.class[i]));
      const a = picture.sure[i] / 100 * 0.55;
      ctx.fillStyle = `rgb(${255 - a * (255 - r)},${255 - a * (255 - g)},${255 - a * (255 - b)})`;
      ctx.fillRect(left + gx * cw, top + h - (gy + 1) * ch, cw + 0.6, ch + 0.6);
    }
    const px = (x) => left + (x - x0) / (x1 - x0) * w, py = (y) => top + h - (y - y0) / (y1 - y0) * h;
    for (let i = 0; i < pts.x.length; i++) {
      ctx.beginPath(); ctx.arc(px(pts.x[i][0]), py(pts.x[i][1]), 4, 0, 2 * Math.PI);
      ctx.fillStyle = modelColor(pts.y[i]); ctx.fill(); ctx.strokeStyle = "#222"; ctx.lineWidth = 0.8; ctx.stroke();
    }
    axes(ctx, left, top, w, h, [x0, x1], [y0, y1], meta.feature_names[0] || "x1", meta.feature_names[1] || "x2");
    const names = meta.class_names || (meta.layers[meta.layers.length - 1] === 1 ? ["0", "1"] : null) ||
      Array.from({ length: meta.layers[meta.layers.length - 1] }, (_, i) => String(i));
    setLegend($("picturelegend"), names.map((c, i) => [modelColor(i), c, true]));
  } else {
    $("picturetitle").textContent = "Fitted curve";
    const xs = meta.fit_x, ys = picture.y.filter((v) => v !== null);
    const all = ys.concat(pts.y);
    const ylo = Math.min(...all), yhi = Math.max(...all), pad = (yhi - ylo) * 0.08 || 0.5;
    const w = width - left - right, h = height - top - bottom;
    const [x0, x1] = [xs[0], xs[xs.length - 1]], [y0, y1] = [ylo - pad, yhi + pad];
    const px = (x) => left + (x - x0) / (x1 - x0) * w, py = (y) => top + h - (y - y0) / (y1 - y0) * h;
    ctx.fillStyle = "#444";
    for (let i = 0; i < pts.x.length; i++) { ctx.beginPath(); ctx.arc(px(pts.x[i][0]), py(pts.y[i]), 2.5, 0, 2 * Math.PI); ctx.fill(); }
    ctx.strokeStyle = modelColor(state.selected); ctx.lineWidth = 2; ctx.beginPath();
    picture.y.forEach((v, i) => { if (v === null) return; i ? ctx.lineTo(px(xs[i]), py(v)) : ctx.moveTo(px(xs[i]), py(v)); });
    ctx.stroke();
    axes(ctx, left, top, w, h, [x0, x1], [y0, y1], meta.feature_names[0] || "x", "output");
    setLegend($("picturelegend"), [["#444", "data", true], [modelColor(state.selected), "network", false]]);
  }
}

function axes(ctx, left, top, w, h, [x0, x1], [y0, y1], xlabel, ylabel) {
  ctx.strokeStyle = "#999"; ctx.strokeRect(left, top, w, h); ctx.fillStyle = "#555";
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (const t of niceTicks(x0, x1, 4)) ctx.fillText(fmt(t), left + (t - x0) / (x1 - x0) * w, top + h + 3);
  ctx.fillText(short(xlabel, 40), left + w / 2, top + h + 16);
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (const t of niceTicks(y0, y1, 4)) ctx.fillText(fmt(t), left - 4, top + h - (t - y0) / (y1 - y0) * h);
  ctx.save(); ctx.translate(10, top + h / 2); ctx.rotate(-Math.PI / 2); ctx.textAlign = "center"; ctx.fillText(short(ylabel, 28), 0, 0); ctx.restore();
}

// -- the network -----------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, title) {
  const element = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) element.setAttribute(k, v);
  if (title) { const t = document.createElementNS(SVG, "title"); t.textContent = title; element.append(t); }
  return element;
}

function drawNetwork() {
  const figure = $("network");
  if (!meta || !state) return;
  if (!meta.drawable || !state.weights) {
    figure.replaceChildren(); figure.style.height = "0";
    $("networkkey").hidden = true;
    $("networknote").textContent = `The network (${meta.layers.join("-")}) is too large to draw.`;
    return;
  }
  const layers = meta.layers, width = figure.clientWidth || 600;
  const height = Math.min(440, Math.max(170, 58 * Math.max(...layers) + 50));
  figure.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const margin = (meta.feature_names.length || meta.class_names) ? 140 : 50;
  const xAt = (l) => margin + l * (width - 2 * margin) / (layers.length - 1);
  const yAt = (l, i) => height / 2 - 8 + (i - (layers[l] - 1) / 2) * Math.min(58, (height - 60) / Math.max(1, layers[l] - 1));
  const all = state.weights.flatMap((layer) => layer.w.flat()).filter((v) => v !== null).map(Math.abs);
  const biggest = Math.max(...all, 1e-12);
  const items = [];
  state.weights.forEach((layer, l) => {
    layer.w.forEach((row, o) => row.forEach((v, i) => {
      if (v === null) return;
      items.push(svg("line", {
        x1: xAt(l), y1: yAt(l, i), x2: xAt(l + 1), y2: yAt(l + 1, o),
        stroke: v >= 0 ? "#1f77b4" : "#ff7f0e", "stroke-width": (0.4 + 6 * Math.abs(v) / biggest).toFixed(2),
        "stroke-opacity": 0.8, class: "edge",
      }, `${meta.neurons[l][i]} -> ${meta.neurons[l + 1][o]}: weight ${fmt(v)}`));
    }));
  });
  layers.forEach((n, l) => {
    for (let i = 0; i < n; i++) {
      const bias = l > 0 && state.weights[l - 1].b ? state.weights[l - 1].b[i] : null;
      const name = meta.neurons[l][i];
      const label = l === 0 ? (meta.feature_names[i] || name) : name;
      items.push(svg("circle", { cx: xAt(l), cy: yAt(l, i), r: 15, fill: "#fff", stroke: "#444", "stroke-width": 1.2 },
        bias === null ? label : `${name}: bias ${fmt(bias)}`));
      const text = svg("text", { x: xAt(l), y: yAt(l, i) + 4, "text-anchor": "middle", "font-size": 11, "pointer-events": "none" });
      text.textContent = name; items.push(text);
      if (bias !== null) {
        const b = svg("text", { x: xAt(l), y: yAt(l, i) + 28, "text-anchor": "middle", "font-size": 10, fill: "#555" });
        b.textContent = `b ${fmt(bias)}`; items.push(b);
      }
      const outside = l === 0 ? meta.feature_names[i] : (l === layers.length - 1 && meta.class_names ? meta.class_names[i] : null);
      if (outside) {   // input and class names beside the first and last columns, as network.png has them
        const first = l === 0;
        const t = svg("text", { x: xAt(l) + (first ? -20 : 20), y: yAt(l, i) + 4, "text-anchor": first ? "end" : "start", "font-size": 11, fill: "#333" });
        t.textContent = short(outside, 18); items.push(t);
      }
    }
  });
  figure.style.height = height + "px";
  figure.replaceChildren(...items);
  $("networknote").textContent = `${layers.join("-")}, ${meta.activations.join(" / ")}; ${meta.loss} loss`;
}

// -- numbers and controls ------------------------------------------------------------------

function drawGrads() {
  const box = $("grads");
  const norms = state && state.grad_norms;
  if (!norms) { if (!box.childElementCount) box.textContent = "after the first epoch"; return; }
  const biggest = Math.max(...norms.filter((v) => v !== null), 1e-300);
  box.replaceChildren(...norms.map((v, l) => {
    const row = document.createElement("div"); row.className = "bar";
    const name = document.createElement("span"); name.textContent = `layer ${l + 1}`;
    const track = document.createElement("span"), fill = document.createElement("span");
    track.className = "track"; fill.className = "fill"; fill.style.width = `${v === null ? 0 : 100 * v / biggest}%`; track.append(fill);
    const value = document.createElement("span"); value.className = "value"; value.textContent = fmt(v);
    row.append(name, track, value); return row;
  }));
}

function showState() {
  if (!meta || !state) return;
  const status = ended && state.status === "running" ? "ended" : state.status;
  $("status").textContent = status; $("status").className = `badge ${status}`;
  $("epoch").textContent = String(state.epoch);
  $("of").textContent = ` of ${(state.start_epoch || 0) + meta.epochs}`;
  const k = state.selected;
  $("loss").textContent = fmt(state.loss[k]) + (meta.labels.length > 1 ? ` (${meta.labels[k]})` : "");
  const next = state.next_rate ? state.next_rate[k] : null;   // a change waiting for the next epoch
  $("rate").textContent = fmt(state.learning_rate[k]) + (next !== null ? ` \u2192 ${fmt(next)} from epoch ${state.epoch + 1}` : "");
  const changes = $("changes");
  if (state.changes.length) {
    changes.replaceChildren(...state.changes.map((c) => {
      const li = document.createElement("li"); li.textContent = `from epoch ${c.epoch}: ${fmt(c.learning_rate)}`; return li;
    }));
  }
  const busy = ["stopping", "saving"].includes(state.status) && !ended;   // ending: nothing to steer
  const over = busy || ended || !["running", "paused"].includes(state.status);
  const paused = state.status === "paused";
  if (!state.changes.length && over) changes.firstElementChild.textContent = "none";
  $("run").disabled = over || !paused; $("pause").disabled = over || paused;
  for (const id of ["step", "stepn", "steps"]) $(id).disabled = over || !paused;
  $("stop").disabled = over;
  for (const id of ["newrate", "setrate"]) $(id).disabled = over || !meta.steer_rate;
  $("speed").disabled = over; $("model").disabled = over;
  if (document.activeElement !== $("speed")) $("speed").value = String(state.delay);
  if (busy) notice(state.status === "saving" ? "Training has ended; saving the run folder..." : "Stopping after this epoch...");
  else if (state.status === "stopped") notice(state.note || "Stopped before the first epoch.");
  else if (over && status !== "ended") {
    notice(`Training ended (${status}). The run folder is saved; backprop serve shows it.` + (state.note ? " " + state.note : ""));
  }
}

function render() {
  if (!meta || !state) return;
  showState(); drawCurves(); drawPicture(); drawNetwork(); drawGrads();
}

let pending = false;
function schedule() {
  if (pending) return; pending = true;
  requestAnimationFrame(() => { pending = false; render(); });
}

function wire() {
  $("run").onclick = () => control("resume");
  $("pause").onclick = () => control("pause");
  $("step").onclick = () => control("step", 1);
  $("stepn").onclick = () => {
    const n = Number($("steps").value);
    if (!Number.isInteger(n) || n < 1) { notice("Step N: a whole number of epochs, 1 or more", true); return; }
    control("step", n);
  };
  $("stop").onclick = () => control("stop");
  $("setrate").onclick = () => {
    const value = parseFloat($("newrate").value);
    if (!(value > 0) || !Number.isFinite(value)) { notice("a learning rate is a finite number > 0"); return; }
    control("rate", value);
  };
  $("newrate").onkeydown = (e) => { if (e.key === "Enter") $("setrate").click(); };
  $("speed").onchange = () => control("delay", parseFloat($("speed").value));
  $("model").onchange = () => control("select", parseInt($("model").value, 10));
  window.addEventListener("resize", schedule);
}

async function start() {
  wire();
  const response = await fetch(`/api/meta?token=${encodeURIComponent(TOKEN)}`);
  if (!response.ok) { notice(`the server refused the page (${response.status}): open the address backprop printed`); return; }
  meta = await response.json();
  $("name").textContent = meta.name; document.title = `${meta.name}: backprop live`;
  $("curvetitle").textContent = `Loss (${meta.loss})`;
  if (!meta.steer_rate) {
    $("rategroup").title = meta.rate_note || "";
    $("changespanel").hidden = true;
  }
  if (meta.labels.length > 1) {
    $("modelgroup").hidden = false;
    $("model").replaceChildren(...meta.labels.map((label, k) => {
      const option = document.createElement("option"); option.value = String(k); option.textContent = label; return option;
    }));
  }
  for (const canvas of document.querySelectorAll("canvas")) canvas.style.height = canvas.getAttribute("height") + "px";
  const events = new EventSource(`/api/events?token=${encodeURIComponent(TOKEN)}`);
  events.addEventListener("curves", (e) => { const data = JSON.parse(e.data); if (data.curves) addCurves(data.curves); });
  events.onmessage = (e) => {
    state = JSON.parse(e.data); addCurves(state.curves);
    $("model").value = String(state.selected);
    schedule();
  };
  events.addEventListener("end", () => { ended = true; events.close(); schedule(); });
  events.onerror = () => {
    if (!ended) { ended = true; events.close(); notice("The server has stopped: training ended or backprop was stopped.", true); schedule(); }
  };
}

start();
