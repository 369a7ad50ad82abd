// gsd annotate: paint class ids on the shots of a gsd workdir (served by gsd.annotate.server).
//
// A label is a Uint8Array of class ids, one per image pixel; every tool writes ids into it and the colours
// on screen are drawn from it, so a label never holds a blended or antialiased pixel. The label is sent to
// the server as those bytes (deflate-compressed where the browser can), which checks and writes it.
'use strict';

const token = document.querySelector('meta[name="gsd-token"]').content;
const $ = (id) => document.getElementById(id);
const ZOOMS = [0.125, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64];
const UNDO_BYTES = 192 << 20; // history kept per shot; the oldest steps go first
const STATE_NAMES = { empty: 'empty', in_progress: 'in progress', done: 'done' };

const app = {
  session: null,
  shots: [],
  docs: new Map(), // shot index -> its loaded image, label and history
  current: -1,
  tool: 'brush',
  size: 4,
  tolerance: 24,
  cls: 1,
  opacity: 0.6,
  view: { zoom: 1, panX: 0, panY: 0 },
  pointer: null, // the last pointer position over the canvas, in canvas CSS pixels
  stroke: null,
  pan: null,
  polygon: [],
  spaceHeld: false,
  finished: false,
  colours: null, // Uint32Array: class id -> RGBA as the label canvas stores it
};
window.gsdAnnotator = app; // for a person's console, and the tests' reading of the view

// -- server -----------------------------------------------------------------------------------------------

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), 'X-Gsd-Token': token },
    cache: 'no-store',
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body.error) message = body.error;
    } catch (e) {
      // not JSON (a 403 page): keep the status line
    }
    throw new Error(message);
  }
  return response;
}

function say(text, kind = '') {
  const m = $('message');
  m.textContent = text;
  m.className = kind;
}

async function deflate(bytes) {
  if (typeof CompressionStream === 'undefined') return null;
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream('deflate'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

// -- shots and their documents ----------------------------------------------------------------------------

async function loadDoc(index) {
  if (app.docs.has(index)) return app.docs.get(index);
  const shot = app.shots[index];
  const [imageBlob, labelBytes] = await Promise.all([
    api(`/api/shots/${index}/image`).then((r) => r.blob()),
    api(`/api/shots/${index}/label`).then((r) => r.arrayBuffer()),
  ]);
  // As stored: no colour management, so the wand compares the pixel values the generator wrote.
  const image = await createImageBitmap(imageBlob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const w = shot.width;
  const h = shot.height;
  if (image.width !== w || image.height !== h || labelBytes.byteLength !== w * h) {
    throw new Error(`shot ${shot.name}: image or label is not ${w}x${h}`);
  }
  // The image's pixels, for the wand.
  const scratch = new OffscreenCanvas(w, h);
  const sctx = scratch.getContext('2d', { willReadFrequently: true });
  sctx.drawImage(image, 0, 0);
  const rgba = sctx.getImageData(0, 0, w, h).data;
  const labelCanvas = new OffscreenCanvas(w, h);
  const doc = {
    index,
    w,
    h,
    image,
    rgba,
    ids: new Uint8Array(labelBytes),
    labelCanvas,
    labelCtx: labelCanvas.getContext('2d'),
    labelData: new ImageData(w, h),
    undo: [],
    redo: [],
    undoBytes: 0,
    revision: 0,
    savedRevision: 0,
    saving: Promise.resolve(),
    timer: null,
  };
  doc.labelPixels = new Uint32Array(doc.labelData.data.buffer);
  renderLabel(doc, 0, 0, w, h);
  app.docs.set(index, doc);
  return doc;
}

function currentDoc() {
  return app.docs.get(app.current) || null;
}

async function showShot(index) {
  if (index < 0 || index >= app.shots.length || app.finished) return;
  const before = currentDoc();
  app.polygon = [];
  if (before) flush(before);
  say(`loading shot ${app.shots[index].name}...`);
  try {
    const doc = await loadDoc(index);
    const fresh = app.current !== index;
    app.current = index;
    if (fresh) fit();
    const shot = app.shots[index];
    say(shot.problem ? `${shot.problem} (starting from an empty label)` : `shot ${shot.name}`, shot.problem ? 'error' : '');
    updateShots();
    updateHistory();
    requestDraw();
    return doc;
  } catch (e) {
    say(String(e.message || e), 'error');
  }
}

function updateShots() {
  const nav = $('shots');
  nav.replaceChildren(
    ...app.shots.map((shot, i) => {
      const b = document.createElement('button');
      b.textContent = shot.name;
      b.className = shot.state + (i === app.current ? ' current' : '');
      b.dataset.index = i;
      b.title = `shot ${shot.name}: ${STATE_NAMES[shot.state]}${shot.by ? ` (by ${shot.by})` : ''}`;
      b.addEventListener('click', () => showShot(i));
      return b;
    }),
  );
  const shot = app.shots[app.current];
  $('shot-done').checked = !!shot && shot.state === 'done';
  $('shot-done').disabled = !shot || shot.state === 'empty';
  $('prev').disabled = app.current <= 0;
  $('next').disabled = app.current >= app.shots.length - 1;
  const labelled = app.shots.some((s) => s.state !== 'empty' && s.by !== 'assist');
  const empty = app.shots.some((s) => s.state === 'empty' && !s.problem);
  $('assist').disabled = !app.session.assist.available || !labelled || !empty;
  $('assist').title = app.session.assist.available
    ? `train the head (${app.session.assist.epochs} epochs) on the labelled shots and pre-fill the empty ones`
    : 'no assist in this run';
}

function setShot(summary) {
  app.shots[summary.index] = summary;
  updateShots();
}

// -- saving -----------------------------------------------------------------------------------------------

function changed(doc) {
  doc.revision += 1;
  clearTimeout(doc.timer);
  doc.timer = setTimeout(() => save(doc), app.session.autosave_ms);
  updateHistory();
}

function dirty(doc) {
  return doc.revision !== doc.savedRevision;
}

// Saves run one after another per shot; each sends the label as it was when it started.
function save(doc) {
  clearTimeout(doc.timer);
  doc.saving = doc.saving.then(async () => {
    if (!dirty(doc)) return;
    const revision = doc.revision;
    const bytes = doc.ids.slice();
    const packed = await deflate(bytes);
    const headers = { 'Content-Type': 'application/octet-stream' };
    if (packed) headers['X-Gsd-Encoding'] = 'deflate';
    $('save-state').textContent = 'saving...';
    try {
      const r = await api(`/api/shots/${doc.index}/label`, { method: 'POST', headers, body: packed || bytes });
      doc.savedRevision = revision;
      setShot((await r.json()).shot);
      $('save-state').textContent = dirty(doc) ? 'unsaved changes' : `saved ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      $('save-state').textContent = 'not saved';
      say(String(e.message || e), 'error');
    }
  });
  return doc.saving;
}

function flush(doc) {
  return dirty(doc) ? save(doc) : doc.saving;
}

async function flushAll() {
  await Promise.all([...app.docs.values()].map(flush));
}

window.addEventListener('beforeunload', (e) => {
  if ([...app.docs.values()].some(dirty) && !app.finished) {
    [...app.docs.values()].forEach(flush);
    e.preventDefault();
    e.returnValue = '';
  }
});
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'hidden') [...app.docs.values()].forEach(flush);
});

// -- drawing ----------------------------------------------------------------------------------------------

function renderLabel(doc, x0, y0, x1, y1) {
  // Class id -> colour for the rectangle [x0, x1) x [y0, y1), background transparent.
  const { w, ids, labelPixels } = doc;
  const colours = app.colours;
  for (let y = y0; y < y1; y++) {
    for (let i = y * w + x0, end = y * w + x1; i < end; i++) labelPixels[i] = colours[ids[i]];
  }
  doc.labelCtx.putImageData(doc.labelData, 0, 0, x0, y0, x1 - x0, y1 - y0);
}

let drawPending = false;
function requestDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    draw();
  });
}

function draw() {
  const canvas = $('view');
  const dpr = window.devicePixelRatio || 1;
  const cw = Math.round(canvas.clientWidth * dpr);
  const ch = Math.round(canvas.clientHeight * dpr);
  if (canvas.width !== cw || canvas.height !== ch) {
    canvas.width = cw;
    canvas.height = ch;
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, cw, ch);
  const doc = currentDoc();
  if (!doc) return;
  const { zoom, panX, panY } = app.view;
  ctx.setTransform(dpr * zoom, 0, 0, dpr * zoom, dpr * panX, dpr * panY);
  // Shrunk, the image is smoothed (sharp pixels would alias); enlarged, its pixels stay square. The label is
  // always drawn pixel for pixel: what is on screen is what is saved.
  ctx.imageSmoothingEnabled = zoom < 1;
  ctx.drawImage(doc.image, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.globalAlpha = app.opacity;
  ctx.drawImage(doc.labelCanvas, 0, 0);
  ctx.globalAlpha = 1;
  // Overlays in CSS pixels.
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.strokeStyle = '#ffffff88';
  ctx.lineWidth = 1;
  ctx.strokeRect(panX - 0.5, panY - 0.5, doc.w * zoom + 1, doc.h * zoom + 1);
  if (app.polygon.length) {
    ctx.strokeStyle = '#ffffff';
    ctx.beginPath();
    app.polygon.forEach(([x, y], i) => {
      const sx = panX + (x + 0.5) * zoom;
      const sy = panY + (y + 0.5) * zoom;
      if (i === 0) ctx.moveTo(sx, sy);
      else ctx.lineTo(sx, sy);
    });
    if (app.pointer) ctx.lineTo(app.pointer.x, app.pointer.y);
    ctx.stroke();
  }
  if (app.pointer && (app.tool === 'brush' || app.tool === 'eraser') && !app.pan) {
    const p = toImage(app.pointer);
    ctx.strokeStyle = app.tool === 'eraser' ? '#ffffff' : cssColour(app.cls);
    ctx.beginPath();
    ctx.arc(panX + (p.x + 0.5) * zoom, panY + (p.y + 0.5) * zoom, Math.max(1, (app.size / 2) * zoom), 0, 2 * Math.PI);
    ctx.stroke();
  }
}

function cssColour(cls) {
  return app.session.classes[cls].hex;
}

// -- view -------------------------------------------------------------------------------------------------

function toImage(p) {
  // Canvas CSS pixels -> the image pixel under them (integer; may lie outside the image).
  return {
    x: Math.floor((p.x - app.view.panX) / app.view.zoom),
    y: Math.floor((p.y - app.view.panY) / app.view.zoom),
  };
}

function setZoom(zoom, cx, cy) {
  const v = app.view;
  zoom = Math.min(64, Math.max(0.05, zoom));
  v.panX = Math.round(cx - ((cx - v.panX) * zoom) / v.zoom);
  v.panY = Math.round(cy - ((cy - v.panY) * zoom) / v.zoom);
  v.zoom = zoom;
  $('zoom-value').textContent = `${Math.round(zoom * 100)}%`;
  requestDraw();
}

function fit() {
  const doc = currentDoc();
  if (!doc) return;
  const canvas = $('view');
  let zoom = Math.min((canvas.clientWidth - 16) / doc.w, (canvas.clientHeight - 16) / doc.h);
  zoom = zoom >= 1 ? Math.floor(zoom) : zoom; // whole screen pixels per image pixel where it fits
  app.view.zoom = zoom;
  app.view.panX = Math.round((canvas.clientWidth - doc.w * zoom) / 2);
  app.view.panY = Math.round((canvas.clientHeight - doc.h * zoom) / 2);
  $('zoom-value').textContent = `${Math.round(zoom * 100)}%`;
  requestDraw();
}

// -- edits, undo and redo ---------------------------------------------------------------------------------

// An edit records the rectangle it changed, before and after, so undo and redo touch only that rectangle.
function record(doc, before, x0, y0, x1, y1) {
  if (x1 <= x0 || y1 <= y0) return false;
  const w = x1 - x0;
  const old = new Uint8Array(w * (y1 - y0));
  const now = new Uint8Array(w * (y1 - y0));
  let differs = false;
  for (let y = y0; y < y1; y++) {
    const row = y * doc.w;
    old.set(before.subarray(row + x0, row + x1), (y - y0) * w);
    now.set(doc.ids.subarray(row + x0, row + x1), (y - y0) * w);
  }
  for (let i = 0; i < old.length && !differs; i++) differs = old[i] !== now[i];
  if (!differs) return false;
  doc.undo.push({ x0, y0, x1, y1, old, now });
  doc.undoBytes += 2 * old.length;
  doc.redo = [];
  while (doc.undoBytes > UNDO_BYTES && doc.undo.length > 1) {
    const dropped = doc.undo.shift();
    doc.undoBytes -= 2 * dropped.old.length;
  }
  renderLabel(doc, x0, y0, x1, y1);
  changed(doc);
  requestDraw();
  return true;
}

function apply(doc, step, data) {
  const w = step.x1 - step.x0;
  for (let y = step.y0; y < step.y1; y++) {
    doc.ids.set(data.subarray((y - step.y0) * w, (y - step.y0 + 1) * w), y * doc.w + step.x0);
  }
  renderLabel(doc, step.x0, step.y0, step.x1, step.y1);
  changed(doc);
  requestDraw();
}

function undo() {
  const doc = currentDoc();
  if (!doc || !doc.undo.length) return;
  const step = doc.undo.pop();
  doc.redo.push(step);
  apply(doc, step, step.old);
}

function redo() {
  const doc = currentDoc();
  if (!doc || !doc.redo.length) return;
  const step = doc.redo.pop();
  doc.undo.push(step);
  apply(doc, step, step.now);
}

function updateHistory() {
  const doc = currentDoc();
  $('undo').disabled = !doc || !doc.undo.length;
  $('redo').disabled = !doc || !doc.redo.length;
  if (doc && dirty(doc)) $('save-state').textContent = 'unsaved changes';
}

// -- tools ------------------------------------------------------------------------------------------------

// A round stamp of diameter `size`: pixel (cx + dx, cy + dy) is covered when 4 (dx^2 + dy^2) <= size^2.
function stamp(doc, cx, cy, value, box) {
  const s2 = app.size * app.size;
  const { w, h, ids } = doc;
  for (let dy = 0; 4 * dy * dy <= s2; dy++) {
    let half = Math.floor(Math.sqrt((s2 - 4 * dy * dy) / 4));
    while (4 * (half + 1) * (half + 1) + 4 * dy * dy <= s2) half++;
    while (half > 0 && 4 * half * half + 4 * dy * dy > s2) half--;
    const xa = Math.max(0, cx - half);
    const xb = Math.min(w - 1, cx + half);
    if (xa > xb) continue;
    for (const y of dy ? [cy - dy, cy + dy] : [cy]) {
      if (y < 0 || y >= h) continue;
      ids.fill(value, y * w + xa, y * w + xb + 1);
      box.x0 = Math.min(box.x0, xa);
      box.x1 = Math.max(box.x1, xb + 1);
      box.y0 = Math.min(box.y0, y);
      box.y1 = Math.max(box.y1, y + 1);
    }
  }
}

// Every pixel of the line from (x0, y0) to (x1, y1) (Bresenham), the first one excluded when `skipFirst`.
function line(x0, y0, x1, y1, visit, skipFirst = false) {
  const dx = Math.abs(x1 - x0);
  const dy = -Math.abs(y1 - y0);
  const sx = x0 < x1 ? 1 : -1;
  const sy = y0 < y1 ? 1 : -1;
  let err = dx + dy;
  let first = true;
  for (;;) {
    if (!(first && skipFirst)) visit(x0, y0);
    first = false;
    if (x0 === x1 && y0 === y1) return;
    const e2 = 2 * err;
    if (e2 >= dy) {
      err += dy;
      x0 += sx;
    }
    if (e2 <= dx) {
      err += dx;
      y0 += sy;
    }
  }
}

function strokeTo(p) {
  const { doc, last, value, box } = app.stroke;
  line(last.x, last.y, p.x, p.y, (x, y) => stamp(doc, x, y, value, box), true);
  app.stroke.last = p;
  if (box.x1 > box.x0) {
    renderLabel(doc, box.x0, box.y0, box.x1, box.y1);
    requestDraw();
  }
}

function beginStroke(doc, p) {
  const box = { x0: doc.w, y0: doc.h, x1: 0, y1: 0 };
  app.stroke = { doc, before: doc.ids.slice(), last: p, value: app.tool === 'eraser' ? 0 : app.cls, box };
  stamp(doc, p.x, p.y, app.stroke.value, box);
  if (box.x1 > box.x0) renderLabel(doc, box.x0, box.y0, box.x1, box.y1);
  requestDraw();
}

function endStroke() {
  const { doc, before, box } = app.stroke;
  app.stroke = null;
  record(doc, before, box.x0, box.y0, box.x1, box.y1);
}

// Fill the 4-connected region from (x, y) of the pixels `inside` accepts with the current class.
function grow(doc, x, y, inside) {
  const { w, h, ids } = doc;
  const seen = new Uint8Array(w * h);
  const todo = new Int32Array(w * h);
  const before = ids.slice();
  const box = { x0: x, y0: y, x1: x + 1, y1: y + 1 };
  let n = 0;
  const start = y * w + x;
  todo[n++] = start;
  seen[start] = 1;
  while (n) {
    const i = todo[--n];
    const px = i % w;
    const py = (i - px) / w;
    ids[i] = app.cls;
    if (px < box.x0) box.x0 = px;
    if (px >= box.x1) box.x1 = px + 1;
    if (py < box.y0) box.y0 = py;
    if (py >= box.y1) box.y1 = py + 1;
    if (px > 0 && !seen[i - 1] && inside(i - 1)) (seen[i - 1] = 1), (todo[n++] = i - 1);
    if (px < w - 1 && !seen[i + 1] && inside(i + 1)) (seen[i + 1] = 1), (todo[n++] = i + 1);
    if (py > 0 && !seen[i - w] && inside(i - w)) (seen[i - w] = 1), (todo[n++] = i - w);
    if (py < h - 1 && !seen[i + w] && inside(i + w)) (seen[i + w] = 1), (todo[n++] = i + w);
  }
  record(doc, before, box.x0, box.y0, box.x1, box.y1);
}

function floodFill(doc, p) {
  const target = doc.ids[p.y * doc.w + p.x];
  if (target === app.cls) return;
  const ids = doc.ids.slice(); // the region is decided on the label as it was before the fill
  grow(doc, p.x, p.y, (i) => ids[i] === target);
}

function wand(doc, p) {
  const { rgba } = doc;
  const s = 4 * (p.y * doc.w + p.x);
  const [r, g, b] = [rgba[s], rgba[s + 1], rgba[s + 2]];
  const tol = app.tolerance;
  grow(doc, p.x, p.y, (i) => {
    const k = 4 * i;
    return Math.abs(rgba[k] - r) <= tol && Math.abs(rgba[k + 1] - g) <= tol && Math.abs(rgba[k + 2] - b) <= tol;
  });
}

// The polygon through the clicked pixels, outline included: a pixel inside is one whose centre lies inside
// (even-odd, scanline through pixel centres), and the edges are drawn as lines of pixels.
function fillPolygon(doc, points) {
  const { w, h, ids } = doc;
  const before = ids.slice();
  const box = { x0: w, y0: h, x1: 0, y1: 0 };
  const mark = (x, y) => {
    if (x < 0 || y < 0 || x >= w || y >= h) return;
    ids[y * w + x] = app.cls;
    box.x0 = Math.min(box.x0, x);
    box.y0 = Math.min(box.y0, y);
    box.x1 = Math.max(box.x1, x + 1);
    box.y1 = Math.max(box.y1, y + 1);
  };
  const ys = points.map((q) => q[1]);
  for (let y = Math.max(0, Math.min(...ys)); y <= Math.min(h - 1, Math.max(...ys)); y++) {
    const xs = [];
    points.forEach(([ax, ay], k) => {
      const [bx, by] = points[(k + 1) % points.length];
      if ((ay <= y && y < by) || (by <= y && y < ay)) xs.push(ax + ((y - ay) * (bx - ax)) / (by - ay));
    });
    xs.sort((a, b) => a - b);
    for (let k = 0; k + 1 < xs.length; k += 2) {
      for (let x = Math.max(0, Math.ceil(xs[k])); x < Math.min(w, Math.ceil(xs[k + 1])); x++) mark(x, y);
    }
  }
  points.forEach(([ax, ay], k) => {
    const [bx, by] = points[(k + 1) % points.length];
    line(ax, ay, bx, by, mark);
  });
  record(doc, before, box.x0, box.y0, box.x1, box.y1);
}

function closePolygon() {
  const doc = currentDoc();
  const points = app.polygon;
  app.polygon = [];
  if (doc && points.length >= 3) fillPolygon(doc, points);
  requestDraw();
}

// -- input ------------------------------------------------------------------------------------------------

function canvasPoint(e) {
  const r = $('view').getBoundingClientRect();
  return { x: e.clientX - r.left, y: e.clientY - r.top };
}

function inImage(doc, p) {
  return p.x >= 0 && p.y >= 0 && p.x < doc.w && p.y < doc.h;
}

function onPointerDown(e) {
  const doc = currentDoc();
  if (!doc || app.finished) return;
  const canvas = $('view');
  const p = canvasPoint(e);
  app.pointer = p;
  if (e.button === 1 || e.button === 2 || (e.button === 0 && (app.spaceHeld || app.tool === 'pan'))) {
    app.pan = { x: p.x, y: p.y, panX: app.view.panX, panY: app.view.panY };
    canvas.setPointerCapture(e.pointerId);
    $('stage').classList.add('panning');
    e.preventDefault();
    return;
  }
  if (e.button !== 0) return;
  const q = toImage(p);
  if (app.tool === 'brush' || app.tool === 'eraser') {
    canvas.setPointerCapture(e.pointerId);
    beginStroke(doc, q);
  } else if (app.tool === 'polygon') {
    if (!inImage(doc, q)) return;
    const first = app.polygon[0];
    const near = first && Math.abs(first[0] - q.x) * app.view.zoom <= 6 && Math.abs(first[1] - q.y) * app.view.zoom <= 6;
    if (near && app.polygon.length >= 3) closePolygon();
    else app.polygon.push([q.x, q.y]);
    requestDraw();
  } else if (inImage(doc, q)) {
    if (app.tool === 'fill') floodFill(doc, q);
    else if (app.tool === 'wand') wand(doc, q);
  }
  e.preventDefault();
}

function onPointerMove(e) {
  const p = canvasPoint(e);
  app.pointer = p;
  const doc = currentDoc();
  if (app.pan) {
    app.view.panX = Math.round(app.pan.panX + p.x - app.pan.x);
    app.view.panY = Math.round(app.pan.panY + p.y - app.pan.y);
  } else if (app.stroke) {
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
    for (const c of events.length ? events : [e]) strokeTo(toImage(canvasPoint(c)));
  }
  if (doc) {
    const q = toImage(p);
    const cls = inImage(doc, q) ? app.session.classes[doc.ids[q.y * doc.w + q.x]].name : '';
    $('cursor').textContent = inImage(doc, q) ? `${q.x}, ${q.y} · ${cls}` : '';
  }
  requestDraw();
}

function onPointerUp(e) {
  if (app.pan) {
    app.pan = null;
    $('stage').classList.remove('panning');
  } else if (app.stroke) {
    strokeTo(toImage(canvasPoint(e)));
    endStroke();
  }
}

function onWheel(e) {
  e.preventDefault();
  const p = canvasPoint(e);
  const z = app.view.zoom;
  const next = e.deltaY < 0 ? ZOOMS.find((v) => v > z + 1e-9) : [...ZOOMS].reverse().find((v) => v < z - 1e-9);
  if (next) setZoom(next, p.x, p.y);
}

function selectTool(tool) {
  if (tool !== 'polygon') app.polygon = [];
  app.tool = tool;
  document.querySelectorAll('[data-tool]').forEach((b) => b.classList.toggle('active', b.dataset.tool === tool));
  requestDraw();
}

function selectClass(cls) {
  if (cls < 0 || cls >= app.session.classes.length) return;
  app.cls = cls;
  document.querySelectorAll('#classes button').forEach((b) => b.classList.toggle('active', +b.dataset.cls === cls));
  if (app.tool === 'eraser' || app.tool === 'pan') selectTool('brush');
  requestDraw();
}

function setSize(size) {
  app.size = Math.min(200, Math.max(1, Math.round(size)));
  $('size').value = app.size;
  $('size-value').textContent = app.size;
  requestDraw();
}

const TOOL_KEYS = { b: 'brush', e: 'eraser', p: 'polygon', f: 'fill', w: 'wand' };

function onKeyDown(e) {
  const t = e.target;
  if (t && t.tagName === 'INPUT' && t.type !== 'checkbox' && t.type !== 'range') return;
  const key = e.key;
  const ctrl = e.ctrlKey || e.metaKey;
  if (ctrl && (key === 'z' || key === 'Z') && !e.shiftKey) undo();
  else if (ctrl && (key === 'y' || key === 'Y' || ((key === 'z' || key === 'Z') && e.shiftKey))) redo();
  else if (ctrl && (key === 's' || key === 'S')) {
    const doc = currentDoc();
    if (doc) save(doc);
  } else if (ctrl || e.altKey) return;
  else if (/^[0-9]$/.test(key)) selectClass(+key);
  else if (TOOL_KEYS[key.toLowerCase()]) selectTool(TOOL_KEYS[key.toLowerCase()]);
  else if (key === '[') setSize(app.size > 10 ? app.size / 1.2 : app.size - 1);
  else if (key === ']') setSize(app.size >= 10 ? app.size * 1.2 : app.size + 1);
  else if (key === 'Enter') closePolygon();
  else if (key === 'Escape') (app.polygon = []), requestDraw();
  else if (key === 'PageUp') showShot(app.current - 1);
  else if (key === 'PageDown') showShot(app.current + 1);
  else if (key === ' ') {
    app.spaceHeld = true;
    $('stage').classList.add('panning');
  } else return;
  e.preventDefault();
}

function onKeyUp(e) {
  if (e.key === ' ') {
    app.spaceHeld = false;
    $('stage').classList.remove('panning');
  }
}

// -- shot state, assist, done -----------------------------------------------------------------------------

async function markDone(done) {
  const doc = currentDoc();
  if (!doc) return;
  try {
    await flush(doc);
    const r = await api(`/api/shots/${doc.index}/state`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ state: done ? 'done' : 'in_progress' }),
    });
    setShot((await r.json()).shot);
    say(`shot ${app.shots[doc.index].name}: ${done ? 'done' : 'in progress'}`, 'ok');
  } catch (e) {
    say(String(e.message || e), 'error');
    updateShots();
  }
}

async function assist() {
  const button = $('assist');
  button.disabled = true;
  say(`assist: training the head for ${app.session.assist.epochs} epochs on the labelled shots...`);
  try {
    await flushAll();
    const r = await api('/api/assist', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' });
    const result = await r.json();
    app.shots = result.shots;
    for (const name of result.prefilled) {
      const index = app.shots.findIndex((s) => s.name === name);
      const doc = app.docs.get(index);
      if (doc && !dirty(doc)) app.docs.delete(index); // reloaded with the prediction when shown
    }
    if (!app.docs.has(app.current)) await showShot(app.current);
    const filled = result.prefilled.length ? result.prefilled.join(', ') : 'no shot';
    say(
      `assist: trained on ${result.trained_on.join(', ')} in ${result.seconds} s; pre-filled ${filled} (in progress: correct, then mark done)`,
      'ok',
    );
  } catch (e) {
    say(String(e.message || e), 'error');
  }
  updateShots();
}

async function finish() {
  try {
    await flushAll();
    await api('/api/done', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' });
    app.finished = true;
    $('finished').hidden = false;
  } catch (e) {
    say(String(e.message || e), 'error');
  }
}

// -- start ------------------------------------------------------------------------------------------------

function buildClasses() {
  const list = $('classes');
  const colours = new Uint32Array(256);
  const bytes = new Uint8Array(colours.buffer);
  app.session.classes.forEach((c, i) => {
    const b = document.createElement('button');
    b.dataset.cls = i;
    b.id = `class-${i}`;
    const key = document.createElement('span');
    key.className = 'key';
    key.textContent = i <= 9 ? String(i) : '';
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = c.hex;
    const name = document.createElement('span');
    name.textContent = c.name;
    b.append(key, swatch, name);
    b.title = i <= 9 ? `${c.name} (key ${i})` : c.name;
    b.addEventListener('click', () => selectClass(i));
    list.append(b);
    if (i > 0) {
      // Background stays transparent on the label layer: the image shows through where nothing is labelled.
      const hex = c.hex.slice(1);
      bytes.set([parseInt(hex.slice(0, 2), 16), parseInt(hex.slice(2, 4), 16), parseInt(hex.slice(4, 6), 16), 255], 4 * i);
    }
  });
  app.colours = colours;
}

async function start() {
  try {
    app.session = await (await api('/api/session')).json();
  } catch (e) {
    say(`cannot reach the annotator: ${e.message || e}`, 'error');
    return;
  }
  app.shots = app.session.shots;
  buildClasses();
  selectClass(Math.min(1, app.session.classes.length - 1));
  selectTool('brush');
  setSize(app.size);

  const canvas = $('view');
  canvas.addEventListener('pointerdown', onPointerDown);
  canvas.addEventListener('pointermove', onPointerMove);
  canvas.addEventListener('pointerup', onPointerUp);
  canvas.addEventListener('pointercancel', onPointerUp);
  canvas.addEventListener('pointerleave', () => {
    app.pointer = null;
    requestDraw();
  });
  canvas.addEventListener('dblclick', () => app.tool === 'polygon' && closePolygon());
  canvas.addEventListener('wheel', onWheel, { passive: false });
  canvas.addEventListener('contextmenu', (e) => e.preventDefault());
  document.addEventListener('keydown', onKeyDown);
  document.addEventListener('keyup', onKeyUp);
  window.addEventListener('resize', requestDraw);

  document.querySelectorAll('[data-tool]').forEach((b) => b.addEventListener('click', () => selectTool(b.dataset.tool)));
  $('size').addEventListener('input', (e) => setSize(+e.target.value));
  $('tolerance').addEventListener('input', (e) => {
    app.tolerance = +e.target.value;
    $('tolerance-value').textContent = app.tolerance;
  });
  $('opacity').addEventListener('input', (e) => {
    app.opacity = e.target.value / 100;
    $('opacity-value').textContent = e.target.value;
    requestDraw();
  });
  $('zoom-fit').addEventListener('click', fit);
  $('zoom-1').addEventListener('click', () => setZoom(1, $('view').clientWidth / 2, $('view').clientHeight / 2));
  $('undo').addEventListener('click', undo);
  $('redo').addEventListener('click', redo);
  $('save').addEventListener('click', () => currentDoc() && save(currentDoc()));
  $('prev').addEventListener('click', () => showShot(app.current - 1));
  $('next').addEventListener('click', () => showShot(app.current + 1));
  $('shot-done').addEventListener('change', (e) => markDone(e.target.checked));
  $('assist').addEventListener('click', assist);
  $('finish').addEventListener('click', finish);
  // Buttons keep no keyboard focus, so Space and the digit keys always reach the canvas's handlers.
  document.addEventListener('mousedown', (e) => e.target.closest('button') && e.preventDefault());

  const first = app.shots.findIndex((s) => s.state !== 'done');
  await showShot(first >= 0 ? first : 0);
  document.body.dataset.ready = '1';
}

start();
