// Loop Farm review room. Plain JavaScript over the room's JSON API; audio through Web Audio.
// A loop plays from an AudioBuffer decoded at the loop's own sample rate (so its length in samples
// is the catalog's) with loop points at 0 and the buffer's end: sample-exact, no gap at the seam.
"use strict";

const FILTERS = ["status", "machine", "style", "part", "role", "patch", "key", "operation", "batch"];
const KEYS = ["C", "Cm", "Db", "C#m", "D", "Dm", "Eb", "Ebm", "E", "Em", "F", "Fm", "F#", "F#m", "G", "Gm",
              "Ab", "G#m", "A", "Am", "Bb", "Bbm", "B", "Bm"];
const BALANCE_LUFS = { drums: -16, bass: -18, chords: -20, melody: -19, arp: -21 };  // a mix's usual balance

const $ = (id) => document.getElementById(id);
const room = window.room = {
  config: null, filters: { status: "pending" }, offset: 0, limit: 50, page: null, index: -1, detail: null,
  contexts: {}, buffers: new Map(), sources: [], playing: false, startedAt: 0, undoStack: [], lastError: null,
  mixer: {},  // part -> {source: "loop:<id>" | "patch:<name>" | "", mute, solo}
  loads: 0, matchesFor: null,  // the newest loop load wins; whose matches room.matches holds
};

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new Error(body.error || body || response.statusText);
  return body;
}

function post(path, data) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json", "X-Farm-Review": "1" },
                     body: JSON.stringify(data) });
}

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").style.color = isError ? "var(--bad)" : "";
  if (isError) room.lastError = text;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

// -- the lock (project key and tempo) ---------------------------------------------------------
function lockQuery() {
  const params = new URLSearchParams();
  if ($("lock-key").value) params.set("key", $("lock-key").value);
  if ($("lock-bpm").value) params.set("bpm", $("lock-bpm").value);
  return params;
}

function withLock(path, extra = null) {
  const params = lockQuery();
  if (extra) for (const [k, v] of Object.entries(extra)) if (v && !params.has(k)) params.set(k, v);
  const query = params.toString();
  return query ? `${path}?${query}` : path;
}

// -- the queue --------------------------------------------------------------------------------
function filterQuery() {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(room.filters)) if (v !== "" && v != null) params.set(k, v);
  return params;
}

async function loadQueue(keepIndex = false) {
  // Counts per filter are asked for when the filters change (or after a bulk decision), not per page.
  const params = filterQuery(), key = params.toString();
  const counts = key !== room.countsFor || keepIndex;
  params.set("offset", room.offset); params.set("limit", room.limit);
  if (!counts) params.set("counts", "0");
  const page = await api(`/api/queue?${params}`);
  if (counts) { room.counts = page.counts; room.countsFor = key; }
  room.page = page;
  drawFilters(room.counts);
  drawRows();
  const first = room.page.total ? room.page.offset + 1 : 0;
  $("total").textContent = `${room.page.total} loop${room.page.total === 1 ? "" : "s"}`;
  $("page").textContent = `${first}–${room.page.offset + room.page.loops.length}`;
  $("empty").hidden = room.page.loops.length > 0;
  $("detail").hidden = room.page.loops.length === 0;
  if (!room.page.loops.length) { stop(); room.index = -1; return; }
  await select(keepIndex ? Math.min(Math.max(room.index, 0), room.page.loops.length - 1) : 0);
}

function drawFilters(counts) {
  const form = $("filters");
  form.replaceChildren();
  for (const name of FILTERS) {
    const select = el("select", { name, onchange: () => setFilter(name, select.value) });
    const values = counts[name] || {};
    const total = Object.values(values).reduce((a, b) => a + b, 0);
    select.append(el("option", { value: "" }, `any (${total})`));
    for (const [value, n] of Object.entries(values)) select.append(el("option", { value }, `${value} (${n})`));
    select.value = room.filters[name] || "";
    form.append(el("label", {}, name, select));
  }
  for (const [name, label] of [["bpm_min", "bpm from"], ["bpm_max", "bpm to"]]) {
    const input = el("input", { type: "number", name, step: "0.5", placeholder: String(counts.bpm[name === "bpm_min" ? "min" : "max"] ?? "") });
    input.value = room.filters[name] || "";
    input.addEventListener("change", () => setFilter(name, input.value));
    form.append(el("label", {}, label, input));
  }
}

function setFilter(name, value) {
  room.filters[name] = value;
  room.offset = 0;
  loadQueue().catch((e) => say(e.message, true));
}

function drawRows() {
  const list = $("rows");
  list.replaceChildren();
  room.page.loops.forEach((loop, i) => {
    list.append(el("li", { "data-id": loop.id, onclick: () => select(i) },
      el("span", { class: `dot ${loop.status}` }),
      el("span", {}, loop.name, el("br"), el("span", { class: "meta" },
        `${loop.style} · ${loop.part} · ${loop.patch} · ${loop.operation}${loop.machine === "rejected" ? " · machine: " + (loop.reject_reason || "rejected") : ""}`)),
      el("span", { class: "meta" }, `${loop.key} ${loop.bpm}`)));
  });
}

async function move(step) {
  const next = room.index + step;
  if (next >= 0 && next < room.page.loops.length) return select(next);
  if (step > 0 && room.page.offset + room.page.loops.length < room.page.total) {
    room.offset += room.limit; await loadQueue(); return;
  }
  if (step < 0 && room.page.offset > 0) {
    room.offset = Math.max(0, room.offset - room.limit); await loadQueue(); return select(room.page.loops.length - 1);
  }
}

// -- one loop ---------------------------------------------------------------------------------
async function select(i) {
  const wasPlaying = room.playing;
  stop();
  room.index = i;
  const loop = room.page.loops[i];
  document.querySelectorAll("#rows li").forEach((li, j) => li.classList.toggle("current", j === i));
  document.querySelector("#rows li.current")?.scrollIntoView({ block: "nearest" });
  const ticket = ++room.loads;
  const detail = await api(withLock(`/api/loops/${loop.id}`));
  if (ticket !== room.loads) return;  // a later selection won: show that one, not this
  room.detail = detail;
  drawDetail();
  if (wasPlaying) play();
}

function drawDetail() {
  const d = room.detail, locked = d.locked;
  $("name").textContent = d.name;
  $("badges").replaceChildren(
    el("span", { class: `badge ${d.status}` }, d.status + (d.reject_reason ? `: ${d.reject_reason}` : "")),
    ...(d.machine === "rejected" ? [el("span", { class: "badge machine-rejected" }, "machine checks rejected it")] : []));
  const labels = [
    ["key", locked.semitones ? `${locked.key} (${d.key} ${locked.semitones > 0 ? "+" : ""}${locked.semitones})` : `${d.key} (${d.camelot})`],
    ["bpm", locked.bpm !== d.bpm ? `${locked.bpm} (${d.bpm})` : d.bpm], ["meter", d.meter], ["bars", d.bars],
    ["style", d.style], ["part", d.part], ["role", d.role], ["patch", d.patch],
    ["operation", describe(d.operation, d.params)],
    ["chords", locked.chords.map((c) => c.symbol).join(" ")], ["romans", locked.chords.map((c) => c.roman).join(" ")],
    ["samples", `${d.samples} @ ${d.sample_rate} Hz`],
  ];
  $("labels").replaceChildren(...labels.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
  $("lock-note").textContent = locked.semitones || locked.bpm !== d.bpm
    ? `previewing in ${locked.key} at ${locked.bpm} bpm (Rubber Band)` : "";
  const checks = [["verdict", d.machine], ["reason", d.reject_reason || "—"], ["loudness", `${fixed(d.lufs)} LUFS`],
                  ["true peak", `${fixed(d.true_peak_db)} dBTP`], ["rms", `${fixed(d.rms_db)} dBFS`], ["onsets", d.onsets],
                  ["centroid", `${fixed(d.centroid_hz, 0)} Hz`], ["file", d.file], ["sidecar", d.sidecar_file]];
  $("checks").replaceChildren(...checks.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
  $("history").replaceChildren(...(d.reviews.length ? d.reviews.map((r) => el("li", {},
    `${r.reviewed_at.replace("T", " ").replace("Z", "")} ${r.reviewer}: ${r.previous_status} → ${r.status}${r.reason ? ` (${r.reason})` : ""}`))
    : [el("li", {}, "none yet")]));
  drawLineage();
  drawMatches(d.id);
  drawMixer();
  $("plot").hidden = true;
  drawWave(null);
  loadBuffer(mainUrl()).then((buffer) => { room.mainBuffer = buffer; drawWave(buffer); })
    .catch((e) => say(e.message, true));
}

const fixed = (x, n = 2) => (x == null ? "—" : Number(x).toFixed(n));

function drawLineage() {
  const d = room.detail, items = [];
  const hear = (loop, label) => el("li", { "data-id": loop.id },
    el("button", { type: "button", title: "hear it", onclick: () => audition(loop.id) }, "▶"),
    ` ${label}: `, el("a", { href: "#", onclick: (e) => { e.preventDefault(); jump(loop.id); } },
      `${describe(loop.operation, loop.params)} · ${loop.key} ${loop.bpm}`), ` (${loop.status})`);
  if (d.lineage.parent) items.push(hear(d.lineage.parent, "parent"));
  for (const s of d.lineage.siblings) items.push(hear(s, "sibling"));
  for (const c of d.lineage.children) items.push(hear(c, "child"));
  $("lineage").replaceChildren(...(items.length ? items : [el("li", {}, "a render with no permutations yet")]));
}

// -- loops that fit, and kits (farm match, farm kit) ------------------------------------------
async function drawMatches(id) {
  if (room.matchesFor !== id) {  // another loop's matches go; the same loop's stay until the new ones arrive
    $("matches").replaceChildren(el("li", {}, "…"));
    $("loop-kits").replaceChildren();
    room.matches = null; room.matchesFor = id;
  }
  let found, kits;
  try { [found, kits] = await Promise.all([api(`/api/loops/${id}/matches?limit=6`), api(`/api/kits?loop=${id}`)]); }
  catch (e) {
    if (room.matchesFor === id) { $("matches").replaceChildren(el("li", {}, e.message)); room.matches = room.matchesFor = null; }
    return;
  }
  if (room.detail.id !== id) return;  // moved on meanwhile
  room.matches = found;
  $("matches").replaceChildren(...(found.length ? found.map((m, i) => el("li", { "data-id": m.id, title: m.why.join("\n") },
    el("button", { type: "button", title: "play together", onclick: () => playWith(i) }, "▶"),
    ` ${m.score.toFixed(2)} ${m.part} · ${m.patch}`, m.transform ? ` (${describe(m.transform.operation, m.transform.params)})` : ""))
    : [el("li", {}, "nothing in the catalog fits yet")]));
  $("loop-kits").replaceChildren(...(kits.length ? kits.map((k) => el("li", { "data-kit": k.id },
    el("button", { type: "button", title: "hear the kit's mix", onclick: () => playKit(k) }, "▶"),
    ` ${k.name} (${k.status})`)) : [el("li", {}, "none")]));
}

function matchUrl(m) {
  // A match that needs a permutation not made yet is previewed at this loop's key and tempo.
  const id = m.transform && m.transform.exists ? m.transform.id : m.id;
  return withLock(`/audio/${id}`, lockTarget());
}

async function playWith(i) {
  const m = room.matches && room.matches[i];
  if (!m) return;
  const d = room.detail;
  await playTracks([{ part: d.part, url: mainUrl(), gain: balance(d.part, d.lufs) },
                    { part: m.part, url: matchUrl(m), gain: balance(m.part, m.lufs) }], d.sample_rate);
  say(`playing with ${m.part} ${m.patch} (${m.score.toFixed(2)}): ${m.why.join("; ")}`);
}

async function playKit(k) {
  await playTracks([{ part: "kit", url: `/kits/${k.id}/mix.wav`, gain: 1 }], room.detail ? room.detail.sample_rate : 44100);
  room.playingKit = k.id;
  say(`playing kit ${k.name}: ${k.key || "no key"}, ${k.bpm} bpm, ${k.progression}`);
}

async function showKits() {
  const kits = await api("/api/kits");
  $("kit-rows").replaceChildren(...(kits.length ? kits.map((k) => el("tr", { "data-kit": k.id },
    el("td", {}, el("button", { type: "button", title: "hear the mix", onclick: () => playKit(k) }, "▶")),
    el("td", {}, el("a", { href: "#", onclick: (e) => { e.preventDefault(); $("kit-picture").src = `/kits/${k.id}/kit.png`;
      $("kit-picture").hidden = false; } }, k.name)),
    el("td", {}, k.key || "—"), el("td", {}, String(k.bpm)), el("td", {}, k.progression),
    el("td", {}, k.members.map((m) => m.role).join(", ")), el("td", { class: "kit-status" }, k.status),
    el("td", {}, ...(room.config.read_only ? [] : [
      el("button", { type: "button", class: "kit-approve", onclick: () => decideKit(k.id, "approve") }, "approve"), " ",
      el("button", { type: "button", class: "kit-reject", onclick: () => decideKit(k.id, "reject") }, "reject")]))))
    : [el("tr", {}, el("td", { colspan: "8" }, "no kits yet: farm kit builds one"))]));
  if (!$("kits").open) $("kits").showModal();
}

async function decideKit(id, decision) {
  const reason = decision === "reject" ? (prompt("Reject the kit: why?") || "").trim() : null;
  if (decision === "reject" && !reason) return;
  try { await post("/api/kits/decide", { id, decision, reason }); await showKits(); }
  catch (e) { say(e.message, true); }
}

function describe(operation, params) {
  // "pitch +1", "stretch 88 bpm", "splice bars 1 1 2 2", "repatch sweep-pad"
  const p = typeof params === "string" ? JSON.parse(params || "{}") : (params || {});
  if (operation === "pitch") return `pitch ${p.semitones > 0 ? "+" : ""}${p.semitones}`;
  if (operation === "stretch") return `stretch ${p.bpm} bpm`;
  if (operation === "splice") return `splice bars ${(p.bars || []).join(" ")}`;
  if (operation === "repatch") return `repatch ${p.patch}`;
  return operation;
}

async function jump(id) {
  if (room.detail && room.detail.id === id) return;  // already shown: keep it playing
  const i = room.page.loops.findIndex((l) => l.id === id);
  if (i >= 0) return select(i);
  const ticket = ++room.loads;
  const detail = await api(withLock(`/api/loops/${id}`));  // outside this page: show it anyway
  if (ticket !== room.loads) return;
  room.detail = detail; room.index = -1; stop(); drawDetail();
}

// -- audio ------------------------------------------------------------------------------------
function context(sampleRate) {
  if (!room.contexts[sampleRate]) room.contexts[sampleRate] = new AudioContext({ sampleRate });
  return room.contexts[sampleRate];
}

function mainUrl(id = room.detail.id) { return withLock(`/audio/${id}`); }

async function loadBuffer(url, sampleRate = room.detail.sample_rate) {
  const key = `${sampleRate} ${url}`;
  if (!room.buffers.has(key)) {
    room.buffers.set(key, (async () => {
      const response = await fetch(url);
      if (!response.ok) throw new Error(`${url}: ${(await response.text()).trim() || response.status}`);
      const buffer = await context(sampleRate).decodeAudioData(await response.arrayBuffer());
      room.lastDecoded = { url, length: buffer.length, sampleRate: buffer.sampleRate, channels: buffer.numberOfChannels };
      return buffer;
    })());
    room.buffers.get(key).catch(() => room.buffers.delete(key));
  }
  return room.buffers.get(key);
}

function contextTracks() {
  const d = room.detail, tracks = [], solo = Object.values(room.mixer).some((m) => m.solo);
  for (const part of d.parts) {
    const m = room.mixer[part.part];
    if (!m || !m.source || m.mute || (solo && !m.solo)) continue;
    const [kind, value] = m.source.split(":");
    let url, lufs;
    if (kind === "loop") {
      const render = part.renders.find((r) => r.id === value);
      url = withLock(`/audio/${value}`, lockTarget()); lufs = render.lufs;
    } else {
      const patch = part.patches.find((p) => p.name === value);
      url = withLock(`/audio/${d.id}/context/${part.part}/${value}`); lufs = patch.target_lufs;
    }
    tracks.push({ part: part.part, url, gain: balance(part.part, lufs) });
  }
  return tracks;
}

function lockTarget() {
  // Context parts play at the loop's own key and tempo unless the project lock says otherwise.
  const d = room.detail;
  return { key: keyName(d), bpm: String(d.bpm) };
}

function keyName(d) {
  // The lock understands major and minor keys: a dorian loop's context follows its minor tonic.
  return d.key_mode === "major" ? d.key_tonic : d.key_tonic + "m";
}

function balance(part, lufs) {
  const target = BALANCE_LUFS[part] ?? -20;
  return lufs == null ? 1 : Math.pow(10, (target - lufs) / 20);
}

async function play() {
  if (!room.detail) return;
  stop();
  const d = room.detail, ctx = context(d.sample_rate);
  await ctx.resume();
  const tracks = [{ part: d.part, url: mainUrl(), gain: $("in-context").checked ? balance(d.part, d.lufs) : 1 }];
  if ($("in-context").checked) tracks.push(...contextTracks());
  say(tracks.length > 1 ? "loading the other parts…" : "");
  if (await playTracks(tracks, d.sample_rate) && tracks.length > 1) say(`playing ${tracks.map((t) => t.part).join(" + ")}`);
}

async function playTracks(tracks, sampleRate) {
  // Every track loops seamlessly and starts on the same sample.
  stop();
  const ctx = context(sampleRate);
  await ctx.resume();
  let buffers;
  try { buffers = await Promise.all(tracks.map((t) => loadBuffer(t.url, sampleRate))); }
  catch (e) { say(e.message, true); return false; }
  const when = ctx.currentTime + 0.05;
  room.sources = tracks.map((t, i) => {
    const source = ctx.createBufferSource(), gain = ctx.createGain();
    source.buffer = buffers[i]; source.loop = true; source.loopStart = 0; source.loopEnd = buffers[i].duration;
    gain.gain.value = t.gain;
    source.connect(gain).connect(ctx.destination);
    source.start(when, 0);
    return { part: t.part, url: t.url, source, length: buffers[i].length, gain: t.gain };
  });
  room.playing = true; room.startedAt = when; room.playingId = room.detail ? room.detail.id : null;
  $("play").textContent = "■ stop";
  requestAnimationFrame(tick);
  return true;
}

function stop() {
  for (const s of room.sources) { try { s.source.stop(); } catch (e) { /* never started */ } }
  room.sources = []; room.playing = false;
  $("play").textContent = "▶ play";
}

function toggle() { return room.playing ? stop() : play(); }

async function audition(id) {
  // Hear a parent or sibling once round, without leaving the loop under review.
  stop();
  const d = await api(withLock(`/api/loops/${id}`));
  const ctx = context(d.sample_rate);
  await ctx.resume();
  const buffer = await loadBuffer(withLock(`/audio/${id}`), d.sample_rate);
  const source = ctx.createBufferSource();
  source.buffer = buffer; source.loop = true; source.connect(ctx.destination); source.start();
  room.sources = [{ part: d.part, url: `/audio/${id}`, source, length: buffer.length, gain: 1 }];
  room.playing = true; room.startedAt = ctx.currentTime; room.playingId = id;
  $("play").textContent = "■ stop";
  say(`hearing ${d.operation} ${d.key} ${d.bpm} (space stops)`);
}

function tick() {
  if (!room.playing || !room.mainBuffer) return;
  const ctx = context(room.detail.sample_rate);
  const t = Math.max(0, ctx.currentTime - room.startedAt) % room.mainBuffer.duration;
  $("position").textContent = `${t.toFixed(2)} / ${room.mainBuffer.duration.toFixed(2)} s`;
  drawWave(room.mainBuffer, t / room.mainBuffer.duration);
  requestAnimationFrame(tick);
}

// -- the waveform: bars, chords, romans -------------------------------------------------------
function drawWave(buffer, at = null) {
  const canvas = $("wave"), g = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  g.fillStyle = "#101217"; g.fillRect(0, 0, w, h);
  const top = 40, lane = (h - top) / 2;
  if (buffer) {
    for (let ch = 0; ch < Math.min(2, buffer.numberOfChannels); ch++) {
      const data = buffer.getChannelData(ch), mid = top + lane * ch + lane / 2, step = data.length / w;
      g.fillStyle = ch ? "#d0743c" : "#5aa9e6";
      for (let x = 0; x < w; x++) {
        let lo = 1, hi = -1;
        const end = Math.min(data.length, Math.floor((x + 1) * step));
        for (let i = Math.floor(x * step); i < end; i++) { const v = data[i]; if (v < lo) lo = v; if (v > hi) hi = v; }
        g.fillRect(x, mid - hi * lane / 2, 1, Math.max(1, (hi - lo) * lane / 2));
      }
    }
  }
  const d = room.detail, chords = d.locked.chords, total = d.chords.length ? d.chords[d.chords.length - 1].end_s : d.duration_s;
  g.font = "13px system-ui"; g.textBaseline = "top";
  d.chords.forEach((c, i) => {
    const x = Math.round(c.start_s / total * w);
    g.fillStyle = "#4a5060"; g.fillRect(x, 0, 1, h);
    g.fillStyle = "#e6e8ee"; g.fillText(chords[i].symbol, x + 5, 4);
    g.fillStyle = "#8a90a0"; g.fillText(`${c.bar}  ${chords[i].roman}`, x + 5, 21);
  });
  if (at != null) { g.fillStyle = "#ffffff"; g.fillRect(Math.round(at * w), top, 2, h - top); }
}

// -- the mixer --------------------------------------------------------------------------------
function drawMixer() {
  const d = room.detail, body = $("mixer").querySelector("tbody");
  body.replaceChildren();
  $("mixer").hidden = !$("in-context").checked || !d.parts.length;
  for (const part of d.parts) {
    const m = room.mixer[part.part] ??= { source: "", mute: false, solo: false };
    const options = [el("option", { value: "" }, "—")];
    for (const r of part.renders) options.push(el("option", { value: `loop:${r.id}` }, `${r.patch} (catalogued, ${r.status})`));
    for (const p of part.patches) options.push(el("option", { value: `patch:${p.name}` }, `${p.name} (render now)`));
    const select = el("select", { "data-part": part.part, onchange: () => { m.source = select.value; select.blur(); replay(); } }, ...options);
    if (!m.source || ![...select.options].some((o) => o.value === m.source)) {
      m.source = part.renders.length ? `loop:${part.renders[0].id}` : (part.patches[0] ? `patch:${part.patches[0].name}` : "");
    }
    select.value = m.source;
    const lufs = m.source.startsWith("loop:") ? part.renders.find((r) => `loop:${r.id}` === m.source)?.lufs
      : part.patches.find((p) => `patch:${p.name}` === m.source)?.target_lufs;
    const check = (key) => { const box = el("input", { type: "checkbox", "data-part": part.part, "data-role": key });
      box.checked = m[key]; box.addEventListener("change", () => { m[key] = box.checked; box.blur(); replay(); }); return box; };
    body.append(el("tr", {}, el("td", {}, part.part), el("td", {}, select),
      el("td", {}, `${(20 * Math.log10(balance(part.part, lufs))).toFixed(1)} dB`), el("td", {}, check("mute")), el("td", {}, check("solo"))));
  }
}

function replay() { if (room.playing) play(); }

// -- decisions --------------------------------------------------------------------------------
async function decide(decision, reason = null) {
  if (room.config.read_only) return say("this review room is read-only", true);
  const d = room.detail;
  try {
    await post("/api/decide", { id: d.id, decision, reason });
  } catch (e) { return say(e.message, true); }
  room.undoStack.push(d.id);
  const status = decision === "approve" ? "approved" : "rejected";
  markRow(d.id, status, reason);
  say(`${status} ${d.name}${reason ? ` (${reason})` : ""} — u undoes`);
  await move(1);
}

function markRow(id, status, reason) {
  const row = room.page.loops.find((l) => l.id === id);
  if (row) { row.status = status; row.reject_reason = reason; }
  const dot = document.querySelector(`#rows li[data-id="${id}"] .dot`);
  if (dot) dot.className = `dot ${status}`;
}

async function undo() {
  const id = room.undoStack.pop();
  if (!id) return say("nothing to undo");
  try {
    const state = await post("/api/undo", { id });
    markRow(id, state.status, state.reject_reason);
    say(`undone: ${id} is ${state.status} again`);
    await jump(id);
  } catch (e) { say(e.message, true); }
}

function askReason() {
  if (room.config.read_only) return say("this review room is read-only", true);
  const dialog = $("reasons");
  $("reason-text").value = "";
  dialog.returnValue = "";
  dialog.dataset.reason = "";
  dialog.showModal();
  $("reason-list").focus();  // digits pick a reason; a click in the text field writes one
}

function reasonChosen() {
  const dialog = $("reasons");
  if (dialog.returnValue !== "ok") return;
  const reason = $("reason-text").value.trim() || dialog.dataset.reason;
  if (reason) decide("reject", reason);
}

async function bulk(decision) {
  if (room.config.read_only) return say("this review room is read-only", true);
  const params = filterQuery();
  params.set("decision", decision);
  const count = await api(`/api/bulk?${params}`);
  const dialog = $("confirm");
  dialog.dataset.decision = decision;
  const update = async () => {
    params.set("include_machine_rejected", $("include-machine").checked ? "1" : "0");
    const c = await api(`/api/bulk?${params}`);
    dialog.dataset.expected = c.would_decide;
    $("confirm-text").textContent = `${c.would_decide} of the ${c.matching} loops these filters select will be ${decision === "approve" ? "approved" : "rejected"}.`
      + (c.machine_rejected_left ? ` ${c.machine_rejected_left} the machine checks rejected stay as they are.` : "");
    $("confirm-ok").textContent = `${decision} ${c.would_decide}`;
  };
  $("include-machine").checked = false;
  $("include-machine").onchange = update;
  $("confirm-machine").hidden = decision !== "approve" || !count.machine_rejected_left;
  $("confirm-reason").hidden = decision !== "reject";
  $("confirm-title").textContent = `${decision === "approve" ? "Approve" : "Reject"} every loop in this list?`;
  await update();
  dialog.returnValue = "";
  dialog.showModal();
}

async function bulkConfirmed() {
  const dialog = $("confirm");
  if (dialog.returnValue !== "ok") return;
  try {
    const result = await post("/api/bulk", { filters: Object.fromEntries(filterQuery()), decision: dialog.dataset.decision,
      reason: $("bulk-reason").value.trim() || null, include_machine_rejected: $("include-machine").checked,
      expected: Number(dialog.dataset.expected) });
    say(`${result.status} ${result.changed} loops` + (result.machine_rejected_left ? `; ${result.machine_rejected_left} machine-rejected left as they are` : ""));
    await loadQueue(true);
  } catch (e) { say(e.message, true); }
}

// -- keys and start-up ------------------------------------------------------------------------
function onKey(event) {
  if (event.target.closest("input, select, textarea") || document.querySelector("dialog[open]")) return;
  if (event.ctrlKey || event.metaKey || event.altKey || !room.detail) return;
  const actions = { " ": toggle, a: () => decide("approve"), r: askReason, s: () => move(1), u: undo,
                    j: () => move(1), k: () => move(-1), c: () => { $("in-context").click(); }, p: showPlot,
                    m: () => playWith(0) };
  const action = actions[event.key];
  if (action) { event.preventDefault(); Promise.resolve(action()).catch((e) => say(e.message, true)); }
}

function reasonKeys(event) {
  const n = Number(event.key);
  if (event.target.id === "reason-text" || !(n >= 1 && n <= room.config.reasons.length)) return;
  event.preventDefault();
  $("reasons").dataset.reason = room.config.reasons[n - 1];
  $("reasons").close("ok");
}

function showPlot() {
  const img = $("plot");
  img.src = `/plot/${room.detail.id}.png`;
  img.alt = `farm plot of ${room.detail.name}`;
  img.hidden = false;
}

async function start() {
  room.config = await api("/api/config");
  $("catalog").textContent = `${room.config.catalog} · reviewer ${room.config.reviewer}${room.config.read_only ? " · read-only" : ""}`;
  for (const id of ["approve", "reject", "undo", "bulk-approve", "bulk-reject"]) $(id).disabled = room.config.read_only;
  for (const k of KEYS) $("lock-key").append(el("option", { value: k }, k));
  $("reason-list").replaceChildren(...room.config.reasons.map((r, i) => el("li", { onclick: () => {
    $("reasons").dataset.reason = r; $("reasons").close("ok"); } }, `${i + 1}. ${r}`)));
  $("reasons").addEventListener("close", reasonChosen);
  $("reasons").addEventListener("keydown", reasonKeys);
  $("reason-ok").addEventListener("click", () => { $("reasons").dataset.reason = ""; });
  $("confirm").addEventListener("close", bulkConfirmed);
  $("play").addEventListener("click", toggle);
  $("approve").addEventListener("click", () => decide("approve"));
  $("reject").addEventListener("click", askReason);
  $("skip").addEventListener("click", () => move(1));
  $("undo").addEventListener("click", undo);
  $("bulk-approve").addEventListener("click", () => bulk("approve"));
  $("bulk-reject").addEventListener("click", () => bulk("reject"));
  $("prev-page").addEventListener("click", () => { room.offset = Math.max(0, room.offset - room.limit); loadQueue(); });
  $("next-page").addEventListener("click", () => { if (room.offset + room.limit < room.page.total) { room.offset += room.limit; loadQueue(); } });
  $("show-plot").addEventListener("click", showPlot);
  $("help-button").addEventListener("click", () => $("help").showModal());
  $("kits-button").addEventListener("click", () => { $("kits-button").blur(); showKits().catch((e) => say(e.message, true)); });
  // Controls hand the keyboard back to the page once used: space and the letters keep working.
  $("in-context").addEventListener("change", () => { $("in-context").blur(); drawMixer(); replay(); });
  $("wave").addEventListener("click", toggle);
  for (const id of ["lock-key", "lock-bpm"]) {
    $(id).addEventListener("change", async () => {
      $(id).blur();
      const wasPlaying = room.playing; stop();
      const ticket = ++room.loads;
      try {
        const detail = await api(withLock(`/api/loops/${room.detail.id}`));
        if (ticket !== room.loads) return;
        room.detail = detail; drawDetail(); if (wasPlaying) play();
      }
      catch (e) { say(e.message, true); }
    });
  }
  document.addEventListener("keydown", onKey);
  await loadQueue();
  room.ready = true;
}

start().catch((e) => { say(e.message, true); room.ready = true; });
