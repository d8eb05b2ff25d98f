// qwatch dashboard: reading what the server sends. Every live message and API answer is parsed and
// checked here before the page uses it; one that is unusable is skipped and counted (state.bad, shown in
// the footer), never allowed to empty the page (issue #9). Bare NaN/Infinity are read as null, counted.
"use strict";

const MAX_BANDS_PER_MSG = 5000;
const ULID_RE = /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/;
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const SEVERITIES = ["critical", "major", "minor"];
const STATES = ["raised", "acknowledged", "cleared"];

class Bad extends Error { constructor(reason) { super(reason); this.reason = reason; } }

function countBad(reason) {
  state.bad.count++;
  state.bad.reasons.set(reason, (state.bad.reasons.get(reason) || 0) + 1);
  const b = $("#bad-count");
  b.hidden = false;
  $("#status").hidden = false;
  renderBadCount();
}
function renderBadCount() {
  if (!state.bad.count) return;
  const b = $("#bad-count");
  b.textContent = t("status.bad", { n: state.bad.count });
  b.title = t("status.badTitle", { reasons: [...state.bad.reasons].map(([k, n]) => `${k} ×${n}`).join(", ") });
  b.dataset.count = String(state.bad.count);
}

// JSON.parse, then once more with bare NaN/Infinity (which a lax server may emit) read as null; counted.
function parseLenient(text) {
  try { return JSON.parse(text); } catch (e) { /* try the repair below */ }
  const fixed = text.replace(/([:[,]\s*)-?(?:NaN|Infinity)(?=\s*[,\]}])/g, "$1null");
  const out = JSON.parse(fixed);   // still bad: the caller counts and skips it
  countBad("json:non_finite");
  return out;
}

const num = (v) => (finite(v) ? v : null);
const str = (v, max) => (typeof v === "string" ? v.slice(0, max || 256) : null);
const obj = (v) => (v && typeof v === "object" && !Array.isArray(v) ? v : {});

// An alert view (docs/cloud.md) reduced to what is drawn, every field checked; throws Bad when unusable.
function cleanAlert(a) {
  if (!a || typeof a !== "object") throw new Bad("alert:shape");
  if (typeof a.alert_id !== "string" || !ULID_RE.test(a.alert_id)) throw new Bad("alert:id");
  if (typeof a.site !== "string" || !ID_RE.test(a.site)) throw new Bad("alert:site");
  if (typeof a.type !== "string" || !STATES.includes(a.state)) throw new Bad("alert:shape");
  const detail = obj(a.detail);
  const ack = a.ack && typeof a.ack === "object"
    ? { by: str(a.ack.by, 128) || "?", note: str(a.ack.note, 2000) || "", at: num(a.ack.at) } : null;
  const history = Array.isArray(a.history)
    ? a.history.slice(0, 100).filter((e) => e && typeof e.event === "string" && finite(e.ts)) : [];
  return {
    alert_id: a.alert_id, site: a.site, node: str(a.node, 64) || "", type: a.type.slice(0, 64),
    severity: SEVERITIES.includes(a.severity) ? a.severity : "minor", state: a.state,
    subject: obj(a.subject), detail,
    ts: num(a.ts), raised_ts: num(a.raised_ts), cleared_ts: num(a.cleared_ts), received_at: num(a.received_at),
    acknowledged: a.acknowledged === true || ack !== null, ack,
    escalated: a.escalated === true || finite(a.escalated_at), escalated_at: num(a.escalated_at),
    person: str(a.person, 128) || str(detail.person, 128),
    outside_m: num(a.outside_m) ?? num(detail.outside_m),
    left_zone: str(detail.left_zone, 64), zone: str(detail.zone, 64),
    ack_s: num(a.ack_s), history,
  };
}

function cleanPositions(p) {
  if (!p || typeof p !== "object" || !ID_RE.test(p.site) || !ID_RE.test(p.node) || !Array.isArray(p.bands)) {
    throw new Bad("bands:shape");
  }
  const bands = [];
  for (const b of p.bands.slice(0, MAX_BANDS_PER_MSG)) {
    if (!b || !Number.isInteger(b.band) || b.band < 1 || b.band > 0xFFFFFFFF) { countBad("bands:item"); continue; }
    // A position beyond COORD_LIMIT is kept (the band exists) but drawn clamped, never used for the scale.
    bands.push({ band: b.band, x: num(b.x), y: num(b.y), err_m: num(b.err_m), ts: num(b.ts) ?? num(p.ts),
      zone: str(b.zone, 64) });
  }
  return { site: p.site, node: p.node, ts: num(p.ts), bands };
}
