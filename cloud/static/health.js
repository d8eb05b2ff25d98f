// qwatch dashboard: node health (one card per node) and the province overview (one tile per site, for the
// command centre's wall screen). Both read the site summaries of GET /api/v1/sites (state.sites).
"use strict";

const RECEIVER_SILENT_S = 30;     // a receiver with no advert for this long counts as not heard
const HEALTH_STALE_S = 90;        // node telemetry older than this is shown as old

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function siteName(site) {
  const s = state.sites.get(site);
  const g = s && s.geometry;
  return g && typeof g.name === "string" && g.name ? g.name : site;
}

// What one node's last telemetry says, in display terms. h is NodeTelemetry (docs/protocol.md) or null.
function nodeFacts(n, now) {
  const h = n.health && typeof n.health === "object" ? n.health : null;
  const wd = h && h.watchdogs && typeof h.watchdogs === "object" ? h.watchdogs : {};
  const sources = Object.entries(wd).filter(([k, v]) => k.startsWith("source:") && v && typeof v === "object");
  const heard = sources.filter(([, v]) => finite(v.last_advert_age_s) && v.last_advert_age_s >= 0 &&
    v.last_advert_age_s <= RECEIVER_SILENT_S);
  const silent = sources.filter((s) => !heard.includes(s)).map(([k]) => k.slice("source:".length));
  const cams = h && h.cameras && typeof h.cameras === "object" ? Object.entries(h.cameras) : [];
  const camsDown = cams.filter(([, c]) => !(c && c.online === true)).map(([k]) => k);
  const mqtt = wd.mqtt && typeof wd.mqtt === "object" ? wd.mqtt : null;
  const outbox = wd.outbox && typeof wd.outbox === "object" ? wd.outbox : {};
  // What the wristband pipeline learned (docs/protocol.md §5): receivers to check and whether its model fits.
  const rxs = h && h.receivers && typeof h.receivers === "object" ? Object.entries(h.receivers) : [];
  const rxBad = rxs.filter(([, r]) => r && (r.state === "gain_off" || r.state === "deaf"))
    .map(([k, r]) => `${k} (${t(`health.rx.${r.state}`)})`);
  const bnull = wd.breach_null && typeof wd.breach_null === "object" ? wd.breach_null : null;
  return {
    h, online: n.online === true, mqttDown: mqtt !== null && mqtt.connected === 0,
    telemetryAge: h && finite(h.ts) ? now - h.ts : null,
    sources: sources.length, heard: heard.length, silent,
    cams: cams.length, camsDown,
    outbox: h && finite(h.outbox_depth) ? h.outbox_depth : null,
    outboxOldest: finite(outbox.oldest_age_s) ? outbox.oldest_age_s : null,
    errors: h && Array.isArray(h.health_errors) ? h.health_errors.filter((e) => typeof e === "string") : [],
    breachKnown: rxs.length > 0 || bnull !== null, rxBad, misfit: bnull !== null && bnull.misfit === 1,
  };
}

function fact(dl, labelKey, value, warn) {
  dl.append(el("dt", "", t(labelKey)));
  const dd = el("dd", warn ? "warn" : "", value);
  dl.append(dd);
  return dd;
}

function nodeCard(n, now) {
  const f = nodeFacts(n, now);
  const card = el("article", `node ${f.online ? "ok" : "down"}`);
  card.dataset.node = String(n.node);
  card.dataset.online = String(f.online);
  const head = el("header");
  head.append(el("b", "", String(n.node)),
    el("span", `badge ${f.online ? "ok" : "down"}`, t(f.online ? "health.online" : "health.offline")));
  card.append(head);
  const dl = el("dl");
  fact(dl, "health.lastSeen", `${fmtAgo(n.last_seen, now)} · ${fmtDateTime(n.last_seen)}`, !f.online);
  fact(dl, "health.link", f.online ? (f.mqttDown ? t("health.mqttDown") : t("health.online")) : t("health.offline"),
    !f.online || f.mqttDown);
  if (!f.h) {
    fact(dl, "health.cpu", t("health.noTelemetry"));
  } else {
    const outbox = f.outbox === null ? t("common.none") : f.outboxOldest && f.outbox > 0
      ? t("health.outboxOldest", { n: f.outbox, dur: fmtDuration(f.outboxOldest) }) : String(f.outbox);
    fact(dl, "health.outbox", outbox, f.outbox > 0).dataset.k = "outbox";
    fact(dl, "health.cpuTemp", finite(f.h.temp_c) ? `${fmtNumber(f.h.temp_c)} °C` : t("common.none"),
      finite(f.h.temp_c) && f.h.temp_c >= 75).dataset.k = "temp";
    fact(dl, "health.cpu", finite(f.h.cpu_pct) ? `${fmtNumber(f.h.cpu_pct)} %` : t("common.none"));
    fact(dl, "health.receivers", f.silent.length
      ? t("health.receiversSilent", { heard: f.heard, n: f.sources, names: f.silent.join(", ") })
      : t("health.receiversHeard", { heard: f.heard, n: f.sources }), f.silent.length > 0).dataset.k = "receivers";
    fact(dl, "health.cameras", f.camsDown.length
      ? t("health.camerasDown", { on: f.cams - f.camsDown.length, n: f.cams, names: f.camsDown.join(", ") })
      : t("health.camerasOk", { on: f.cams, n: f.cams }), f.camsDown.length > 0).dataset.k = "cameras";
    if (f.breachKnown) {
      const parts = [];
      if (f.rxBad.length) parts.push(t("health.breachRx", { names: f.rxBad.join(", ") }));
      if (f.misfit) parts.push(t("health.breachMisfit"));
      fact(dl, "health.breach", parts.length ? parts.join("; ") : t("health.breachOk"), parts.length > 0)
        .dataset.k = "breach";
    }
    if (f.errors.length) fact(dl, "health.errors", f.errors.slice(0, 5).join("; "), true);
  }
  if (n.version) fact(dl, "health.version", String(n.version));
  const latest = state.sites.get(n.site)?.config_latest;
  if (finite(n.config_version)) {
    const old = finite(latest) && n.config_version < latest;
    fact(dl, "health.config", t(old ? "health.configOld" : "health.configOk", { v: n.config_version, latest }), old)
      .dataset.k = "config";
  }
  card.append(dl);
  return card;
}

function renderHealth() {
  const box = $("#health");
  if (state.view !== "health") return;
  const now = Date.now() / 1000;
  const groups = [];
  for (const [site, s] of [...state.sites].sort()) {
    if (!visibleSite(site) || !Array.isArray(s.nodes) || s.nodes.length === 0) continue;
    const g = el("section", "health-site");
    g.dataset.site = site;
    g.append(el("h3", "", siteName(site)));
    const cards = el("div", "nodes");
    for (const n of [...s.nodes].sort((a, b) => (a.online === true) - (b.online === true))) cards.append(nodeCard(n, now));
    g.append(cards);
    groups.push(g);
  }
  box.replaceChildren(...groups);
  $("#health-empty").hidden = groups.length > 0;
}

// ---------------------------------------------------------------- province overview
function siteWorst(s, offline, nodes, bands) {
  if (s.escalated > 0) return "esc";
  if (s.critical_open > 0) return "crit";
  if (s.unacknowledged > 0 || offline > 0) return "warn";
  if (nodes === 0 && bands === 0 && !s.last_alert_at) return "idle";
  return "ok";
}

function wallNumber(key, value, hot) {
  const d = el("div", `num${hot ? " hot" : ""}`);
  d.dataset.k = key;
  d.append(el("span", "n", String(value)), el("span", "l", t(`wall.${key}`)));
  return d;
}

function renderWall() {
  if (state.view !== "wall") return;
  const tiles = [];
  const total = { crit: 0, unack: 0, offline: 0 };
  for (const [site, s] of [...state.sites].sort()) {
    const nodes = Array.isArray(s.nodes) ? s.nodes : [];
    const offline = nodes.filter((n) => n.online !== true).length;
    const n = (k) => (finite(s[k]) ? s[k] : 0);
    const bands = n("bands");
    const worst = siteWorst({ escalated: n("escalated"), critical_open: n("critical_open"),
      unacknowledged: n("unacknowledged"), last_alert_at: s.last_alert_at }, offline, nodes.length, bands);
    total.crit += n("critical_open"); total.unack += n("unacknowledged"); total.offline += offline;
    const tile = el("button", `tile ${worst}`);
    tile.type = "button";
    tile.dataset.site = site;
    tile.dataset.worst = worst;
    tile.title = t("wall.openSite");
    const head = el("div", "tile-head");
    head.append(el("b", "", siteName(site)), el("span", "worst", t(`wall.worst.${worst}`)));
    const nums = el("div", "nums");
    nums.append(wallNumber("critical", n("critical_open"), n("critical_open") > 0),
      wallNumber("unack", n("unacknowledged"), n("unacknowledged") > 0),
      wallNumber("escalated", n("escalated"), n("escalated") > 0),
      wallNumber("bands", bands, false),
      wallNumber("nodes", `${nodes.length - offline}/${nodes.length}`, offline > 0));
    tile.append(head, nums, el("div", "last muted", t("wall.lastAlert", { time: fmtDateTime(s.last_alert_at) })));
    const d = s.escalation_deliveries && typeof s.escalation_deliveries === "object" ? s.escalation_deliveries : null;
    if (d && (finite(d.ok) || finite(d.pending) || finite(d.failed))) {
      const line = el("div", `deliveries${d.failed > 0 ? " warn" : ""}`, t("wall.deliveries",
        { ok: finite(d.ok) ? d.ok : 0, pending: finite(d.pending) ? d.pending : 0, failed: finite(d.failed) ? d.failed : 0 }));
      line.dataset.k = "deliveries";
      tile.append(line);
    }
    tile.addEventListener("click", () => { setSiteFilter(site); setView("live"); });
    tiles.push(tile);
  }
  $("#wall").replaceChildren(...tiles);
  $("#wall-summary").textContent = t("wall.summary", { sites: tiles.length, crit: total.crit, unack: total.unack,
    offline: total.offline });
}

// The command centre's wall screen: the whole page full screen (the browser's own Esc leaves it).
function initWall() {
  const b = $("#wall-fullscreen");
  b.hidden = typeof document.documentElement.requestFullscreen !== "function";
  b.addEventListener("click", () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else document.documentElement.requestFullscreen().catch(() => { /* refused: stay as is */ });
  });
}
