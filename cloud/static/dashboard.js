// qwatch live dashboard: alerts and band positions over one WebSocket. No external libraries.
// Sign-in and the authenticated fetch (`api`, `auth`, `boot`) are in signin.js, loaded first.
"use strict";

const state = {
  alerts: new Map(),          // alert_id -> alert view
  positions: new Map(),       // site -> Map(node -> {ts, bands})
  bounds: new Map(),          // site -> {minX, maxX, minY, maxY}
  trails: new Map(),          // site -> Map(band -> [[x, y], ...])
  nodes: new Map(),           // site -> [node records]
  geometry: new Map(),        // site -> {zones, receivers, beacons} in site metres (configured sites only)
  seenCritical: new Set(),
  track: null,                // {site, band, points} from VictoriaMetrics, drawn on that site's map
};
const BAND_ALARM_TYPES = new Set(["geofence_breach", "band_missing", "band_tamper", "sos"]);
const $ = (sel) => document.querySelector(sel);
const guardInput = $("#guard-name");
guardInput.value = localStorage.getItem("qwatch.guard") || "";
guardInput.addEventListener("change", () => localStorage.setItem("qwatch.guard", guardInput.value.trim()));
$("#only-open").addEventListener("change", renderAlerts);

function isOpen(a) { return !a.acknowledged; }
// Active: the condition still holds and nobody has taken it on. These drive the banner.
function isActive(a) { return a.state === "raised"; }
function fmtTime(ts) { return ts ? new Date(ts * 1000).toLocaleTimeString() : "—"; }
function subjectText(a) {
  const s = a.subject || {};
  if (s.band !== undefined) return `band ${s.band}`;
  if (s.camera !== undefined) return `camera ${s.camera}${s.zone ? " / " + s.zone : ""}`;
  if (s.node !== undefined) return `node ${s.node}`;
  return JSON.stringify(s);
}

// ---------------------------------------------------------------- alerts
function upsertAlert(a) {
  const before = state.alerts.get(a.alert_id);
  state.alerts.set(a.alert_id, a);
  if (!before && a.severity === "critical" && isOpen(a) && !state.seenCritical.has(a.alert_id)) {
    state.seenCritical.add(a.alert_id);
    beep();
  } else if (before && a.escalated && !before.escalated && isOpen(a)) {
    beep();  // nobody took it on in time: sound again
  }
}

function renderAlerts() {
  const onlyOpen = $("#only-open").checked;
  const list = [...state.alerts.values()]
    .filter((a) => !onlyOpen || isOpen(a))
    .sort((a, b) => sevRank(a) - sevRank(b) || (b.received_at || 0) - (a.received_at || 0));
  const ol = $("#alerts");
  const tpl = $("#alert-tpl");
  const keep = new Set(list.map((a) => a.alert_id));
  for (const li of [...ol.children]) if (!keep.has(li.dataset.alertId)) li.remove();
  let prev = null;
  for (const a of list) {
    let li = ol.querySelector(`li[data-alert-id="${a.alert_id}"]`);
    if (!li) {
      li = tpl.content.firstElementChild.cloneNode(true);
      li.dataset.alertId = a.alert_id;
      li.querySelector("form").addEventListener("submit", (ev) => { ev.preventDefault(); ack(a.alert_id, li); });
      li.querySelector(".what").addEventListener("click", () => showTrack(state.alerts.get(li.dataset.alertId)));
      li.querySelector(".snap").addEventListener("click", (ev) => { ev.preventDefault(); openSnapshot(a.alert_id); });
    }
    fillAlert(li, a);
    if (prev ? prev.nextSibling !== li : ol.firstChild !== li) {
      if (prev) prev.after(li); else ol.prepend(li);
    }
    prev = li;
  }
  const all = [...state.alerts.values()];
  const critOpen = all.filter((a) => a.severity === "critical" && isActive(a));
  $("#alert-counts").textContent = `${all.filter(isOpen).length} need attention, ${all.length} shown`;
  const banner = $("#banner");
  banner.hidden = critOpen.length === 0;
  banner.textContent = critOpen.length
    ? `${critOpen.length} CRITICAL ALERT${critOpen.length > 1 ? "S" : ""} — ` +
      critOpen.slice(0, 3).map((a) => `${a.type.replace("_", " ")} ${a.site} ${subjectText(a)}`).join("; ")
    : "";
  document.title = critOpen.length ? `(${critOpen.length}) CRITICAL — qwatch` : "qwatch — province command centre";
  renderMaps();
}

function sevRank(a) {
  const open = isActive(a) ? 0 : isOpen(a) ? 10 : 20;
  return open + ({ critical: 0, major: 1, minor: 2 }[a.severity] ?? 3);
}

function fillAlert(li, a) {
  li.className = `alert ${a.severity} ${a.state}` + (isOpen(a) ? " open" : "") +
    (isActive(a) ? " active" : "") + (a.escalated ? " escalated" : "");
  li.dataset.state = a.state;
  li.dataset.severity = a.severity;
  li.querySelector(".sev").textContent = a.severity;
  li.querySelector(".type").textContent = a.type.replaceAll("_", " ");
  li.querySelector(".state").textContent = a.state;
  const zone = a.detail && a.detail.zone ? ` in ${a.detail.zone}` : "";
  li.querySelector(".what").textContent = `${a.site} · ${a.node} · ${subjectText(a)}${zone}`;
  li.querySelector(".when").textContent =
    `raised ${fmtTime(a.raised_ts)}` + (a.cleared_ts ? ` · cleared ${fmtTime(a.cleared_ts)}` : "");
  const snap = li.querySelector(".snap");
  snap.hidden = !(a.subject && a.subject.camera !== undefined);
  snap.href = `/api/v1/alerts/${a.alert_id}/snapshot`;
  li.querySelector(".acked").textContent = a.ack ? `acknowledged by ${a.ack.by} ${fmtTime(a.ack.at)}: ${a.ack.note}` : "";
}

async function ack(alertId, li) {
  const note = li.querySelector(".note").value;
  const body = { note };
  if (auth.me && auth.me.auth === "off") {   // no sign-in: the typed name is the only one there is
    const person = guardInput.value.trim();
    if (!person) { guardInput.focus(); guardInput.placeholder = "enter your name to acknowledge"; return; }
    localStorage.setItem("qwatch.guard", person);
    body.person = person;
  }   // signed in: the server records the signed-in user
  const resp = await api(`/api/v1/alerts/${alertId}/ack`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (resp.ok || resp.status === 409) {
    const r = await api(`/api/v1/alerts/${alertId}`);
    if (r.ok) { upsertAlert(await r.json()); renderAlerts(); }
  } else {
    li.querySelector(".acked").textContent = `ack failed: ${resp.status}`;
  }
}

async function showTrack(a) {
  if (!a || !a.subject || a.subject.band === undefined) return;
  const since = (a.raised_ts || a.ts || Date.now() / 1000) - 300;
  const r = await api(`/api/v1/bands/${a.subject.band}/track?since=${since}`);
  if (!r.ok) return;
  const body = await r.json();
  state.track = { site: a.site, band: a.subject.band, points: body.points.filter((p) => p.site === a.site) };
  renderMaps();
}

let audio = null;
function beep() {
  if (!$("#sound").checked) return;
  try {
    audio = audio || new AudioContext();
    for (let i = 0; i < 3; i++) {
      const o = audio.createOscillator(); const g = audio.createGain();
      o.frequency.value = 880; o.connect(g); g.connect(audio.destination);
      const t = audio.currentTime + i * 0.3; g.gain.setValueAtTime(0.4, t); o.start(t); o.stop(t + 0.18);
    }
  } catch (e) { /* sound is a bonus; the banner is the alarm */ }
}

// ---------------------------------------------------------------- positions
function updatePositions(p) {
  if (!state.positions.has(p.site)) state.positions.set(p.site, new Map());
  state.positions.get(p.site).set(p.node, p);
  const b = state.bounds.get(p.site) || { minX: Infinity, maxX: -Infinity, minY: Infinity, maxY: -Infinity };
  const trails = state.trails.get(p.site) || new Map();
  for (const band of p.bands) {
    if (band.x === null || band.y === null) continue;
    b.minX = Math.min(b.minX, band.x); b.maxX = Math.max(b.maxX, band.x);
    b.minY = Math.min(b.minY, band.y); b.maxY = Math.max(b.maxY, band.y);
    const t = trails.get(band.band) || [];
    t.push([band.x, band.y]); if (t.length > 20) t.shift();
    trails.set(band.band, t);
  }
  state.bounds.set(p.site, b);
  state.trails.set(p.site, trails);
  scheduleMaps();
}

let mapPending = false;
function scheduleMaps() {
  if (mapPending) return;
  mapPending = true;
  requestAnimationFrame(() => { mapPending = false; renderMaps(); });
}

function alarmedBands() {
  const out = new Map();
  for (const a of state.alerts.values()) {
    if (BAND_ALARM_TYPES.has(a.type) && a.state !== "cleared" && a.subject && a.subject.band !== undefined) {
      out.set(`${a.site}/${a.subject.band}`, a);
    }
  }
  return out;
}

function siteCard(site) {
  let card = document.querySelector(`.site[data-site="${site}"]`);
  if (!card) {
    card = document.createElement("div");
    card.className = "site"; card.dataset.site = site;
    card.innerHTML = `<div class="title"><b></b><span class="muted"></span></div><canvas></canvas>`;
    card.querySelector("b").textContent = site;
    $("#sites").append(card);
  }
  return card;
}

function renderMaps() {
  const alarmed = alarmedBands();
  let total = 0;
  const sites = new Set([...state.positions.keys(), ...state.nodes.keys(), ...state.geometry.keys()]);
  for (const a of state.alerts.values()) if (isOpen(a)) sites.add(a.site);
  // Few sites: big readable maps; a province of 50: small tiles (dashboard.css).
  $("#sites").dataset.density = sites.size <= 4 ? "few" : sites.size <= 16 ? "some" : "many";
  for (const site of [...sites].sort()) {
    const card = siteCard(site);
    const nodes = state.nodes.get(site) || [];
    const offline = nodes.filter((n) => !n.online).length;
    const bands = [...(state.positions.get(site) || new Map()).values()].flatMap((p) => p.bands);
    total += bands.length;
    const siteAlarm = [...alarmed.values()].some((a) => a.site === site) ||
      [...state.alerts.values()].some((a) => a.site === site && a.severity === "critical" && isActive(a));
    card.classList.toggle("alarm", siteAlarm);
    card.querySelector(".title span").textContent =
      `${bands.length} bands · ${nodes.length - offline}/${nodes.length} nodes online`;
    drawSite(card.querySelector("canvas"), site, bands, alarmed);
  }
  $("#band-count").textContent = `(${total} bands)`;
}

function drawTrack(ctx, site, px, py) {
  const t = state.track;
  if (!t || t.site !== site || t.points.length === 0) return;
  ctx.save();
  ctx.strokeStyle = "#ffd23f"; ctx.lineWidth = 2; ctx.setLineDash([5, 3]);
  ctx.beginPath();
  t.points.filter((p) => p.x !== null && p.y !== null)
    .forEach((p, i) => (i ? ctx.lineTo(px(p.x), py(p.y)) : ctx.moveTo(px(p.x), py(p.y))));
  ctx.stroke();
  ctx.restore();
}

// The map's extent in site metres. With geometry: the site plus the bands now, so an escapee stays on the
// map and the scale recovers once it is back. Without: every band position seen so far (a steady scale).
function siteBounds(site, bands) {
  const g = state.geometry.get(site);
  if (!g) return state.bounds.get(site) || { minX: Infinity, maxX: -Infinity, minY: Infinity, maxY: -Infinity };
  const b = { minX: Infinity, maxX: -Infinity, minY: Infinity, maxY: -Infinity };
  const pts = [...g.zones.flatMap((z) => z.polygon), ...g.receivers.map((r) => r.position),
    ...g.beacons.map((r) => r.position), ...bands.filter((x) => x.x !== null && x.y !== null).map((x) => [x.x, x.y])];
  for (const [x, y] of pts) {
    b.minX = Math.min(b.minX, x); b.maxX = Math.max(b.maxX, x);
    b.minY = Math.min(b.minY, y); b.maxY = Math.max(b.maxY, y);
  }
  return b;
}

let hatch = null;
function restrictedFill(ctx) {
  if (!hatch) {
    const c = document.createElement("canvas"); c.width = c.height = 8;
    const g = c.getContext("2d");
    g.fillStyle = "rgba(255,45,45,.10)"; g.fillRect(0, 0, 8, 8);
    g.strokeStyle = "rgba(255,45,45,.75)"; g.lineWidth = 1.5;
    g.beginPath(); g.moveTo(-2, 10); g.lineTo(10, -2); g.moveTo(-2, 2); g.lineTo(2, -2);
    g.moveTo(6, 10); g.lineTo(10, 6); g.stroke();
    hatch = c;
  }
  return ctx.createPattern(hatch, "repeat");
}

// Zones first (under everything), then receivers (triangles) and beacons (diamonds). Returns counts drawn.
function drawGeometry(ctx, g, px, py, labels) {
  const drawn = { zones: 0, receivers: 0, beacons: 0 };
  if (!g) return drawn;
  const zones = [...g.zones].sort((a, b) => (a.kind === "restricted") - (b.kind === "restricted"));
  for (const z of zones) {
    ctx.beginPath();
    z.polygon.forEach(([x, y], i) => (i ? ctx.lineTo(px(x), py(y)) : ctx.moveTo(px(x), py(y))));
    ctx.closePath();
    if (z.kind === "restricted") {
      ctx.fillStyle = restrictedFill(ctx); ctx.fill();
      ctx.strokeStyle = "#ff2d2d"; ctx.lineWidth = 1.5; ctx.stroke();
    } else {
      ctx.fillStyle = "rgba(46,204,113,.05)"; ctx.fill();
      ctx.strokeStyle = "rgba(46,204,113,.8)"; ctx.lineWidth = 1.2; ctx.stroke();
    }
    if (labels) {   // top-left corner inside the zone, clear of receivers placed at its centre
      const x0 = Math.min(...z.polygon.map((p) => p[0])), y1 = Math.max(...z.polygon.map((p) => p[1]));
      ctx.fillStyle = z.kind === "restricted" ? "#ff8a8a" : "rgba(46,204,113,.8)";
      ctx.font = "10px sans-serif";
      ctx.fillText(z.id, px(x0) + 3, py(y1) + 11);
    }
    drawn.zones++;
  }
  ctx.fillStyle = "#c9d3dd"; ctx.strokeStyle = "#0b0e11"; ctx.lineWidth = 1;
  for (const r of g.receivers) {
    const x = px(r.position[0]), y = py(r.position[1]);
    ctx.beginPath(); ctx.moveTo(x, y - 6); ctx.lineTo(x + 5, y + 4); ctx.lineTo(x - 5, y + 4); ctx.closePath();
    ctx.fill(); ctx.stroke();
    drawn.receivers++;
  }
  ctx.fillStyle = "#ffd23f";
  for (const bc of g.beacons) {
    const x = px(bc.position[0]), y = py(bc.position[1]);
    ctx.beginPath(); ctx.moveTo(x, y - 4); ctx.lineTo(x + 4, y); ctx.lineTo(x, y + 4); ctx.lineTo(x - 4, y);
    ctx.closePath(); ctx.fill();
    drawn.beacons++;
  }
  return drawn;
}

// A grid step (metres) that keeps lines at least ~28 px apart, whatever the site's size.
function gridStep(s) {
  for (const step of [5, 10, 20, 50, 100, 200, 500]) if (step * s >= 28) return step;
  return 1000;
}

function drawSite(canvas, site, bands, alarmed) {
  const w = canvas.clientWidth, h = canvas.clientHeight, dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = "#0b0e11"; ctx.fillRect(0, 0, w, h);
  const g = state.geometry.get(site);
  const b = siteBounds(site, bands);
  canvas.dataset.zones = "0"; canvas.dataset.receivers = "0"; canvas.dataset.beacons = "0";
  if (!isFinite(b.minX)) { ctx.fillStyle = "#8a96a3"; ctx.fillText("no positions yet", 8, 16); return; }
  const m = 5, spanX = b.maxX - b.minX + 2 * m, spanY = b.maxY - b.minY + 2 * m;
  const s = Math.min(w / spanX, h / spanY);   // one scale for both axes: metres stay square
  const px = (x) => (x - b.minX + m) * s + (w - spanX * s) / 2;
  const py = (y) => h - ((y - b.minY + m) * s + (h - spanY * s) / 2);   // north up
  const step = gridStep(s);
  ctx.strokeStyle = "#1f262e"; ctx.lineWidth = 1;
  for (let gx = Math.ceil((b.minX - m) / step) * step; gx <= b.maxX + m; gx += step) {
    ctx.beginPath(); ctx.moveTo(px(gx), 0); ctx.lineTo(px(gx), h); ctx.stroke();
  }
  for (let gy = Math.ceil((b.minY - m) / step) * step; gy <= b.maxY + m; gy += step) {
    ctx.beginPath(); ctx.moveTo(0, py(gy)); ctx.lineTo(w, py(gy)); ctx.stroke();
  }
  const drawn = drawGeometry(ctx, g, px, py, w >= 300);
  canvas.dataset.zones = String(drawn.zones);
  canvas.dataset.receivers = String(drawn.receivers);
  canvas.dataset.beacons = String(drawn.beacons);
  ctx.fillStyle = "#5d6874"; ctx.font = "10px sans-serif";
  ctx.fillText(`grid ${step} m`, 4, h - 4);
  const trails = state.trails.get(site) || new Map();
  for (const band of bands) {
    if (band.x === null || band.y === null) continue;
    const alarm = alarmed.get(`${site}/${band.band}`);
    const t = trails.get(band.band) || [];
    ctx.strokeStyle = alarm ? "rgba(255,45,45,.6)" : "rgba(77,163,255,.25)"; ctx.lineWidth = 1;
    ctx.beginPath(); t.forEach(([x, y], i) => (i ? ctx.lineTo(px(x), py(y)) : ctx.moveTo(px(x), py(y)))); ctx.stroke();
    if (band.err_m) {
      const r = Math.max(2, band.err_m * s);
      ctx.beginPath(); ctx.arc(px(band.x), py(band.y), r, 0, 2 * Math.PI);
      if (r < Math.min(w, h) / 4) {
        ctx.fillStyle = alarm ? "rgba(255,45,45,.12)" : "rgba(77,163,255,.08)"; ctx.fill();
      } else {   // a huge uncertainty would tint the whole site: outline it instead
        ctx.save(); ctx.setLineDash([4, 4]); ctx.strokeStyle = alarm ? "rgba(255,45,45,.5)" : "rgba(77,163,255,.4)";
        ctx.stroke(); ctx.restore();
      }
    }
    ctx.fillStyle = alarm ? "#ff2d2d" : "#4da3ff";
    ctx.beginPath(); ctx.arc(px(band.x), py(band.y), alarm ? 6 : 3, 0, 2 * Math.PI); ctx.fill();
    if (alarm) {
      const left = px(band.x) > w - 50;
      ctx.fillStyle = "#fff"; ctx.font = "bold 11px sans-serif"; ctx.textAlign = left ? "right" : "left";
      ctx.fillText(String(band.band), px(band.x) + (left ? -8 : 8), py(band.y) - 6);
      ctx.textAlign = "left";
    }
  }
  drawTrack(ctx, site, px, py);
}

// ---------------------------------------------------------------- sites / nodes
async function refreshSites() {
  try {
    const r = await api("/api/v1/sites");
    if (r.ok) {
      for (const s of await r.json()) {
        state.nodes.set(s.site, s.nodes);
        if (s.geometry) state.geometry.set(s.site, s.geometry);
      }
      renderMaps();
    }
  } catch (e) { /* the connection badge shows the outage */ }
}
window.addEventListener("resize", scheduleMaps);

// ---------------------------------------------------------------- live connection
let retry = 500;
function connect() {
  const protocols = auth.token ? ["qwatch.v1", `qwatch.bearer.${auth.token}`] : ["qwatch.v1"];
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/live`, protocols);
  ws.onopen = () => { retry = 500; $("#conn").className = "conn up"; $("#conn").textContent = "live"; refreshSites(); };
  ws.onclose = (ev) => {
    if (ev.code === 4401) { signOut(`Signed out: ${ev.reason || "token not accepted"}.`); return; }
    $("#conn").className = "conn down"; $("#conn").textContent = "offline — reconnecting";
    setTimeout(connect, retry); retry = Math.min(retry * 2, 10000);
  };
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.kind === "hello") {
      for (const a of msg.data.alerts) { state.seenCritical.add(a.alert_id); state.alerts.set(a.alert_id, a); }
      for (const p of msg.data.positions) updatePositions(p);
      renderAlerts();
    } else if (msg.kind === "alert") {
      upsertAlert(msg.data); renderAlerts();
    } else if (msg.kind === "bands") {
      updatePositions(msg.data);
    } else if (msg.kind === "node") {
      refreshSites();
    }
  };
}
boot();
