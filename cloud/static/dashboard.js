// qwatch live dashboard: the state, the live WebSocket and its badge, band positions and maps, sites and
// views, start-up. No external libraries. Loaded last; the other scripts are, in order: i18n.js (strings
// and formats), signin.js (`api`, `auth`, `boot`), sound.js, map.js, health.js, history.js, messages.js
// (checking what arrives), alerts.js.
"use strict";

const $ = (sel) => document.querySelector(sel);
const STALE_S = 30;               // band positions not refreshed for this long are drawn stale (grey)
const MAX_TRAIL = 20;
const state = {
  alerts: new Map(),          // alert_id -> cleaned alert view
  positions: new Map(),       // site -> Map(node -> {ts, received, bands})
  bounds: new Map(),          // site -> extent of every sane position seen (sites without geometry)
  trails: new Map(),          // site -> Map(band -> [[x, y], ...])
  sites: new Map(),           // site -> summary from GET /api/v1/sites (nodes with health, counts, geometry)
  seenCritical: new Set(),
  seenEscalated: new Set(),
  track: null,                // {site, band, points} from VictoriaMetrics, drawn on that site's map
  view: "live",
  siteFilter: null,
  // Whose band positions the live feed sends (docs/cloud.md, province scale): null = every site we may see;
  // a Set = only those (a large province: per-site summaries, and the map of the site opened).
  watching: null,
  watchAll: false,
  bad: { count: 0, reasons: new Map() },
  conn: { ws: "idle", health: null, helloOk: false, helloFailed: false },
  started: false,
};
const BAND_ALARM_TYPES = new Set(["geofence_breach", "band_missing", "band_tamper", "sos"]);
const VIEWS = ["live", "wall", "health", "history"];

// ---------------------------------------------------------------- positions and maps
function updatePositions(raw, received) {
  const p = cleanPositions(raw);
  if (!state.positions.has(p.site)) state.positions.set(p.site, new Map());
  state.positions.get(p.site).set(p.node, { ts: p.ts, received: received ?? Date.now() / 1000, bands: p.bands });
  const b = state.bounds.get(p.site) || emptyBounds();
  const trails = state.trails.get(p.site) || new Map();
  for (const band of p.bands) {
    if (!drawable(band)) continue;
    if (hasPos(band)) grow(b, band.x, band.y);
    const tr = trails.get(band.band) || [];
    tr.push([band.x, band.y]); if (tr.length > MAX_TRAIL) tr.shift();
    trails.set(band.band, tr);
  }
  state.bounds.set(p.site, b);
  state.trails.set(p.site, trails);
  scheduleMaps(p.site);
}

let mapPending = null;
function scheduleMaps(site) {
  if (mapPending === null) {
    mapPending = new Set();
    requestAnimationFrame(() => { const s = mapPending; mapPending = null; renderMaps(s.has("*") ? null : s); });
  }
  mapPending.add(site || "*");
}

function nodeOnline(site, node) {
  const s = state.sites.get(site);
  const n = s && Array.isArray(s.nodes) ? s.nodes.find((x) => x.node === node) : null;
  return n ? n.online === true : true;
}

function siteCard(site) {
  let card = $("#sites").querySelector(`.site[data-site="${site}"]`);
  if (!card) {
    card = el("div", "site");
    card.dataset.site = site;
    const title = el("div", "title");
    title.append(el("b"), el("span", "muted"));
    const open = el("button", "open-site");
    open.type = "button";
    open.addEventListener("click", () => setSiteFilter(site));
    card.append(title, el("div", "brief"), open, document.createElement("canvas"), el("div", "stale-note"));
    $("#sites").append(card);
  }
  return card;
}

function watched(site) { return state.watching === null || state.watching.has(site); }

// A site's counts, from its full summary (GET /api/v1/sites) or the hello's brief one, whichever came last.
function siteCounts(site) {
  const s = state.sites.get(site) || {};
  const n = (k) => (finite(s[k]) ? s[k] : 0);
  const nodes = Array.isArray(s.nodes) && s.nodes.length ? s.nodes : null;
  return { bands: n("bands"), stale: n("bands_stale"), unack: n("unacknowledged"), crit: n("critical_open"),
    on: nodes ? nodes.filter((x) => x.online === true).length : n("nodes_online"),
    nodes: nodes ? nodes.length : n("nodes_total") };
}

// A large province's cards, the sites that need someone first: escalated, critical open, not acknowledged,
// then the rest; by site ID within each. Cards move only when the order changes.
function orderBriefs(sites) {
  const rank = (site) => {
    const c = siteCounts(site);
    const esc = finite((state.sites.get(site) || {}).escalated) ? state.sites.get(site).escalated : 0;
    return esc > 0 ? 0 : c.crit > 0 ? 1 : c.unack > 0 ? 2 : 3;
  };
  const order = [...sites].sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
  const box = $("#sites");
  if (order.join("\n") !== [...box.children].map((c) => c.dataset.site).join("\n")) {
    for (const site of order) box.append(siteCard(site));
  }
}

// An unwatched site of a large province: its counts and a button that opens its map (watches it).
function renderBrief(card, site) {
  const c = siteCounts(site);
  card.querySelector(".title b").textContent = siteName(site);
  card.querySelector(".title span").textContent = t("map.briefNodes", { on: c.on, n: c.nodes });
  const brief = card.querySelector(".brief");
  brief.replaceChildren(
    el("div", "", t("map.briefBands", { bands: c.bands, stale: c.stale })),
    el("div", c.unack || c.crit ? "hot" : "", t("map.briefAlerts", { n: c.unack, crit: c.crit })));
  card.dataset.stale = String(c.stale);
  card.querySelector(".open-site").textContent = t("map.openSite");
  card.querySelector(".stale-note").textContent = "";
  card.querySelector("canvas").dataset.bands = "0";   // no map drawn for it now
  bandCounts.set(site, c.bands);
}

// The site's bands, one entry per band: a band heard by two nodes is drawn from the live, newest report.
function siteBands(site, now) {
  const out = new Map();
  for (const [node, p] of state.positions.get(site) || new Map()) {
    const stale = !nodeOnline(site, node) || now - p.received > STALE_S;
    for (const b of p.bands) {
      const had = out.get(b.band);
      if (!had || (had.stale && !stale) || (had.stale === stale && (b.ts ?? 0) > (had.ts ?? 0))) {
        out.set(b.band, { ...b, stale });
      }
    }
  }
  return [...out.values()];
}

function alarmedBands(site) {
  const out = new Map();
  for (const a of state.alerts.values()) {
    if (a.site === site && BAND_ALARM_TYPES.has(a.type) && a.state !== "cleared" && a.subject.band !== undefined) {
      out.set(a.subject.band, { person: a.person, outside_m: a.outside_m, x: num(a.detail.x), y: num(a.detail.y),
        ts: a.raised_ts ?? a.ts });
    }
  }
  return out;
}

function allSites() {
  const sites = new Set([...state.positions.keys(), ...state.sites.keys()]);
  for (const a of state.alerts.values()) if (isOpen(a)) sites.add(a.site);
  return [...sites].filter(visibleSite).sort();
}

const bandCounts = new Map();   // site -> bands drawn at its last redraw
// Redraw the given sites' maps (null: all, and the tile list).
function renderMaps(only) {
  if (state.view !== "live") return;
  const now = Date.now() / 1000;
  const sites = allSites();
  if (!only) {
    for (const card of [...$("#sites").children]) if (!sites.includes(card.dataset.site)) card.remove();
    // Few sites: big readable maps; a province of 50: small tiles (dashboard.css).
    $("#sites").dataset.density = sites.length <= 4 ? "few" : sites.length <= 16 ? "some" : "many";
  }
  for (const site of sites) {
    if (only && !only.has(site)) continue;   // only the sites that changed are rebuilt and redrawn
    const card = siteCard(site);
    card.classList.toggle("brief-only", !watched(site));
    card.classList.toggle("alarm", [...state.alerts.values()].some((a) => a.site === site && isActive(a) &&
      (a.severity === "critical" || (BAND_ALARM_TYPES.has(a.type) && a.subject.band !== undefined))));
    if (!watched(site)) { renderBrief(card, site); continue; }
    const bands = siteBands(site, now);
    bandCounts.set(site, bands.length);
    const s = state.sites.get(site);
    const nodes = s && Array.isArray(s.nodes) ? s.nodes : [];
    const online = nodes.filter((n) => n.online === true).length;
    const alarmed = alarmedBands(site);
    // An alarmed band with no live position yet is drawn where the alert put it, marked as an old fix.
    const drawn = new Set(bands.map((b) => b.band));
    for (const [band, al] of alarmed) {
      if (!drawn.has(band) && al.x !== null && al.y !== null) {
        bands.push({ band, x: al.x, y: al.y, err_m: null, ts: al.ts, zone: null, stale: true, fromAlert: true });
      }
    }
    const siteAlarm = alarmed.size > 0 ||
      [...state.alerts.values()].some((a) => a.site === site && a.severity === "critical" && isActive(a));
    card.classList.toggle("alarm", siteAlarm);
    card.querySelector(".title b").textContent = siteName(site);
    card.querySelector(".title span").textContent =
      t("map.siteTitle", { bands: bandCounts.get(site), on: online, n: nodes.length });
    const stale = bands.filter((b) => b.stale && !b.fromAlert).length;
    card.dataset.stale = String(stale);
    const note = card.querySelector(".stale-note");
    note.textContent = stale ? t("map.stale", { n: stale }) : "";
    const geometry = s && s.geometry ? s.geometry : null;
    drawSite(card.querySelector("canvas"), {
      geometry, fallback: state.bounds.get(site), bands, trails: state.trails.get(site) || new Map(), alarmed,
      track: state.track && state.track.site === site ? state.track : null,
    });
  }
  if (!only && state.watching !== null) orderBriefs(sites);
  for (const site of [...bandCounts.keys()]) if (!sites.includes(site)) bandCounts.delete(site);
  $("#band-count").textContent = t("map.bandCount", { n: [...bandCounts.values()].reduce((x, y) => x + y, 0) });
  const note = $("#province-note");
  note.hidden = state.watching === null || state.siteFilter !== null;
  note.textContent = note.hidden ? "" : t("map.provinceNote");
}

// ---------------------------------------------------------------- sites, nodes, views
function cleanSite(s) {
  if (!s || typeof s !== "object" || typeof s.site !== "string" || !ID_RE.test(s.site)) throw new Bad("sites:shape");
  const g = s.geometry && typeof s.geometry === "object" && Array.isArray(s.geometry.zones) ? s.geometry : null;
  return { ...s, nodes: Array.isArray(s.nodes) ? s.nodes.filter((n) => n && typeof n.node === "string") : [],
    geometry: g && Array.isArray(g.receivers) && Array.isArray(g.beacons) ? g : null };
}

let sitesLoaded = false;
// Refreshes overlap (the 5 s timer, live alerts, node messages): a slow older answer must not overwrite a newer one.
let sitesAsked = 0;
let sitesShown = 0;
async function refreshSites() {
  const seq = ++sitesAsked;
  try {
    const r = await api("/api/v1/sites");
    if (!r.ok) return;
    const list = parseLenient(await r.text());
    if (seq < sitesShown) return;
    sitesShown = seq;
    if (!Array.isArray(list)) throw new Bad("sites:shape");
    const next = new Map();
    for (const raw of list) {
      try { const s = cleanSite(raw); next.set(s.site, s); } catch (e) { countBad(e.reason || "sites:shape"); }
    }
    state.sites = next;
    sitesLoaded = true;
    renderSiteViews();
    checkSiteHint();
  } catch (e) { if (e instanceof Bad || e instanceof SyntaxError) countBad("sites:json"); }
}

let sitesTimer = null;
function scheduleSitesRefresh() {
  if (sitesTimer === null) sitesTimer = setTimeout(() => { sitesTimer = null; refreshSites(); }, 300);
}

function renderSiteViews() {
  scheduleMaps();
  renderWall();
  renderHealth();
  renderAlerts();
  fillHistorySelects();
}

function editDistance(a, b) {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return d[a.length][b.length];
}

// A site the user asked for (their guard scope, or ?site=) that the cloud has never heard of: say so, and
// suggest near spellings among the sites this user may see, instead of showing an empty page.
function checkSiteHint() {
  const hint = $("#site-hint");
  if (!sitesLoaded) return;
  const wanted = new Set(auth.me && Array.isArray(auth.me.sites) ? auth.me.sites : []);
  if (state.siteFilter) wanted.add(state.siteFilter);
  const known = [...state.sites.keys()];
  const missing = [...wanted].filter((s) => !state.sites.has(s) && !state.positions.has(s));
  if (!missing.length) { hint.hidden = true; hint.textContent = ""; return; }
  const lines = missing.map((site) => {
    const near = known.filter((k) => editDistance(k.toLowerCase(), site.toLowerCase()) <= 3);
    return t("hint.unknownSite", { site }) + (near.length ? ` ${t("hint.didYouMean", { names: near.join(", ") })}` : "");
  });
  hint.textContent = lines.join(" ");
  hint.dataset.sites = missing.join(",");
  hint.hidden = false;
}

function setSiteFilter(site) {
  state.siteFilter = site;
  const chip = $("#site-filter");
  chip.hidden = !site;
  chip.textContent = site ? `${t("site.filter", { site: siteName(site) })} ✕` : "";
  chip.title = t("site.showAll");
  const url = new URL(location.href);
  if (site) url.searchParams.set("site", site); else url.searchParams.delete("site");
  history.replaceState(null, "", url.pathname + url.search);
  checkSiteHint();
  renderAlerts();
  scheduleMaps();
  sendWatch();
}

// Ask the live feed for the positions of the site being looked at; else every site with ?watch=all (a wall
// screen on a strong desktop), else the server's choice ("auto": all in a small province, none in a large one).
function watchChoice() { return state.siteFilter || (state.watchAll ? "*" : "auto"); }
function sendWatch() {
  if (socket && socket.readyState === 1 && state.conn.helloOk) {   // 1: OPEN
    socket.send(JSON.stringify({ op: "watch", sites: state.siteFilter ? [state.siteFilter] : watchChoice() }));
  }
}

function setWatching(raw) {
  state.watching = Array.isArray(raw) ? new Set(raw.filter((x) => typeof x === "string" && ID_RE.test(x))) : null;
  // Positions of sites no longer watched are not refreshed any more: forget them rather than show them stale.
  for (const site of [...state.positions.keys()]) {
    if (!watched(site)) { state.positions.delete(site); state.trails.delete(site); }
  }
}

// The hello's per-site counts (GET /api/v1/sites brings the full summaries a moment later).
function mergeBriefs(list) {
  for (const raw of Array.isArray(list) ? list : []) {
    try {
      if (!raw || typeof raw !== "object" || typeof raw.site !== "string" || !ID_RE.test(raw.site)) throw new Bad("summary:shape");
      const counts = {};
      for (const k of ["bands", "bands_stale", "nodes_online", "nodes_total", "open", "unacknowledged", "critical_open",
        "escalated", "last_alert_at"]) counts[k] = num(raw[k]);
      const had = state.sites.get(raw.site);
      if (had) Object.assign(had, counts);
      else state.sites.set(raw.site, cleanSite({ site: raw.site, ...counts }));
    } catch (e) { countBad(e.reason || "summary:shape"); }
  }
}

function setView(view) {
  if (!VIEWS.includes(view)) return;
  state.view = view;
  $("#app").dataset.view = view;
  localStorage.setItem("qwatch.view", view);
  for (const b of $("#views").querySelectorAll("button")) b.setAttribute("aria-current", String(b.dataset.view === view));
  if (view === "live") scheduleMaps();
  if (view === "wall") renderWall();
  if (view === "health") renderHealth();
  if (view === "history" && !history_.rows.length) searchHistory();
}

// ---------------------------------------------------------------- the live connection and its badge
function renderConn() {
  const c = $("#conn");
  c.hidden = state.conn.ws === "idle";
  const open = state.conn.ws === "open";
  const degraded = open && (state.conn.health !== null || state.conn.helloFailed);
  const kind = !open ? (state.conn.ws === "closed" ? "down" : "idle")
    : degraded ? "degraded" : state.conn.helloOk ? "up" : "idle";
  c.className = `conn ${kind}`;
  c.dataset.state = kind;
  c.textContent = t({ up: "conn.live", down: "conn.offline", idle: "conn.connecting", degraded: "conn.degraded" }[kind]);
  const why = state.conn.health || (open && state.conn.helloFailed ? { key: "conn.why.hello" } : null);
  c.title = why ? t(why.key, why.params) : t("conn.title");
}

// The badge says "live" only when the socket is open, its first picture arrived, and the server itself
// reports healthy (/healthz: store answering, MQTT connected, no stalled loop).
async function checkHealth() {
  let why = null;
  try {
    const r = await fetch("/healthz");
    const body = await r.json().catch(() => ({}));
    if (!r.ok) {
      const stalled = Array.isArray(body.stalled) ? body.stalled.filter((x) => typeof x === "string") : [];
      if (body.store && body.store.ok === false) why = { key: "conn.why.store" };
      else if (body.ingest && body.ingest.connected === false) why = { key: "conn.why.mqtt" };
      else if (stalled.length) why = { key: "conn.why.stalled", params: { what: stalled.join(", ") } };
      else why = { key: "conn.why.unhealthy" };
    }
  } catch (e) { why = { key: "conn.why.unreachable" }; }
  state.conn.health = why;
  renderConn();
}

function onHello(data) {
  const d = obj(data);
  if ("watching" in d) setWatching(d.watching);
  if ("summary" in d) mergeBriefs(d.summary);
  for (const raw of Array.isArray(d.alerts) ? d.alerts : []) {
    try {
      const a = cleanAlert(raw);
      state.seenCritical.add(a.alert_id);
      upsertAlert(a, true);
    } catch (e) { countBad(e.reason || "hello:alert"); }
  }
  for (const p of Array.isArray(d.positions) ? d.positions : []) {
    try {
      const ts = obj(p).ts;
      updatePositions(p, finite(ts) ? Math.min(ts, Date.now() / 1000) : undefined);
    } catch (e) { countBad(e.reason || "hello:bands"); }
  }
  state.conn.helloOk = true;
  state.conn.helloFailed = false;
  renderConn();
  renderAlerts();
  scheduleMaps();
  // The filter changed while the hello was on its way: ask again.
  if (("watching" in d) && state.siteFilter && !watched(state.siteFilter)) sendWatch();
}

// The answer to a watch: the watched sites' current positions.
function onPositions(data) {
  const d = obj(data);
  setWatching(d.watching);
  for (const p of Array.isArray(d.positions) ? d.positions : []) {
    try {
      const ts = obj(p).ts;
      updatePositions(p, finite(ts) ? Math.min(ts, Date.now() / 1000) : undefined);
    } catch (e) { countBad(e.reason || "positions:bands"); }
  }
  scheduleMaps();
  scheduleSitesRefresh();   // the summaries of the sites just left, as of now
}

// The hello could not be read at all: fetch the same picture over HTTP, item by item.
async function helloFallback() {
  try {
    const r = await api("/api/v1/alerts?limit=200");
    const p = await api("/api/v1/positions");
    const alerts = r.ok ? parseLenient(await r.text()) : [];
    const positions = p.ok ? parseLenient(await p.text()) : [];
    onHello({ alerts, positions });
  } catch (e) { countBad("hello:fallback"); }
}

function onMessage(ev) {
  let msg;
  try { msg = parseLenient(ev.data); } catch (e) {
    countBad("json");
    if (!state.conn.helloOk) {
      state.conn.helloFailed = true;
      renderConn();
      helloFallback();
    }
    return;
  }
  if (!msg || typeof msg !== "object" || typeof msg.kind !== "string" || !msg.data || typeof msg.data !== "object") {
    countBad("shape");
    return;
  }
  try {
    if (msg.kind === "hello") onHello(msg.data);
    else if (msg.kind === "alert" || msg.kind === "escalation") {
      const a = cleanAlert(msg.data);
      if (msg.kind === "escalation") { a.escalated = true; a.escalated_at = a.escalated_at ?? num(msg.sent_at); }
      upsertAlert(a, false);
      renderAlerts();
      scheduleSitesRefresh();
    } else if (msg.kind === "bands") { if (watched(obj(msg.data).site)) updatePositions(msg.data); }
    else if (msg.kind === "positions") onPositions(msg.data);
    else if (msg.kind === "node") scheduleSitesRefresh();
    // Other kinds (camera_event, future ones) are not drawn here.
  } catch (e) {
    countBad(e instanceof Bad ? e.reason : `${msg.kind.slice(0, 32)}:error`);
  }
}

let retry = 500;
let socket = null;
function connect() {
  const protocols = auth.token ? ["qwatch.v1", `qwatch.bearer.${auth.token}`] : ["qwatch.v1"];
  const watch = encodeURIComponent(watchChoice());
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/live?watch=${watch}`,
    protocols);
  socket = ws;
  state.conn.ws = state.conn.ws === "closed" ? "closed" : "connecting";
  renderConn();
  ws.onopen = () => {
    retry = 500;
    state.conn.ws = "open";
    state.conn.helloOk = false;
    state.conn.helloFailed = false;
    renderConn();
    refreshSites();
    checkHealth();
  };
  ws.onclose = (ev) => {
    if (ws !== socket) return;   // replaced on purpose (a renewed token)
    if (ev.code === 4401) {
      signOut(whyKey(ev.reason), ev.reason);
      return;
    }
    state.conn.ws = "closed";
    renderConn();
    setTimeout(connect, retry); retry = Math.min(retry * 2, 10000);
  };
  ws.onmessage = onMessage;
}

// signin.js: the session token was renewed; reconnect the live socket with it.
function onTokenRenewed() {
  if (!socket) return;
  const old = socket;
  connect();
  old.close();
}

// ---------------------------------------------------------------- start
function renderAll() {
  renderConn();
  renderBadCount();
  for (const li of $("#alerts").children) applyI18n(li);
  renderAlerts();
  renderMaps(null);
  renderWall();
  renderHealth();
  if (state.siteFilter) setSiteFilter(state.siteFilter);
  checkSiteHint();
}

// Called by signin.js once the user is known.
function startDashboard() {
  if (state.started) return;
  state.started = true;
  $("#views").hidden = false;
  $("#sound").hidden = false;
  renderSoundButton();
  const params = new URLSearchParams(location.search);
  state.watchAll = params.get("watch") === "all";
  const site = params.get("site");
  if (site && ID_RE.test(site)) setSiteFilter(site);
  setView(params.get("view") || localStorage.getItem("qwatch.view") || "live");
  setInterval(refreshSites, 5000);
  setInterval(() => { if (state.conn.ws === "open") checkHealth(); }, 10_000);
  setInterval(() => scheduleMaps(), 5000);   // stale positions turn grey even when nothing else arrives
  setInterval(refreshEscalated, 15_000);
  connect();
}

function init() {
  applyI18n();
  document.title = t("app.title");
  const guardInput = $("#guard-name");
  guardInput.value = localStorage.getItem("qwatch.guard") || "";
  guardInput.addEventListener("change", () => localStorage.setItem("qwatch.guard", guardInput.value.trim()));
  $("#only-open").addEventListener("change", renderAlerts);
  $("#site-filter").addEventListener("click", () => setSiteFilter(null));
  $("#lang").addEventListener("click", () => setLang(i18n.lang === "vi" ? "en" : "vi"));
  for (const b of $("#views").querySelectorAll("button")) b.addEventListener("click", () => setView(b.dataset.view));
  window.addEventListener("resize", () => scheduleMaps());
  onLangChange(() => { document.title = t("app.title"); renderAll(); });
  initSound();
  // Sound switched back on, or the phone's screen back on (timers were throttled): an escalation still
  // waiting for someone sounds again at once.
  $("#sound").addEventListener("click", () => {
    if (sound.enabled && anyEscalatedOpen()) { alarm("escalation"); startEscalationRepeat(anyEscalatedOpen); }
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.started && anyEscalatedOpen()) alarm("escalation");
  });
  initHistory();
  initWall();
  boot();
}
init();
