// qwatch dashboard: the alert list (newest needing attention first), the banner, acknowledging, and a
// band's track. The alarm sound is sound.js; alerts come in through dashboard.js.
"use strict";

// ---------------------------------------------------------------- alert text
function isOpen(a) { return !a.acknowledged; }
// Active: the condition still holds and nobody has taken it on. These drive the banner.
function isActive(a) { return a.state === "raised" && !a.acknowledged; }
function isEscalatedOpen(a) { return a.escalated && isOpen(a) && a.state !== "cleared"; }
function alertTypeText(a) { return MESSAGES.vi[`type.${a.type}`] ? t(`type.${a.type}`) : a.type.replaceAll("_", " "); }
function subjectText(a) {
  const s = a.subject;
  if (s.band !== undefined) return t("subject.band", { band: String(s.band).slice(0, 16) });
  if (s.camera !== undefined) {
    return s.zone ? t("subject.cameraZone", { camera: String(s.camera), zone: String(s.zone) })
      : t("subject.camera", { camera: String(s.camera) });
  }
  if (s.node !== undefined) return t("subject.node", { node: String(s.node) });
  return JSON.stringify(s).slice(0, 80);
}
function whereText(a) {
  const parts = [];
  if (a.left_zone) parts.push(t("alert.leftZone", { zone: a.left_zone }));
  else if (a.zone) parts.push(t("alert.inZone", { zone: a.zone }));
  if (a.outside_m !== null && a.outside_m >= 0) parts.push(t("alert.outside", { m: fmtNumber(a.outside_m) }));
  return parts.join(" · ");
}
function ackSeconds(a) {
  if (a.ack_s !== null) return a.ack_s;
  return a.ack && finite(a.ack.at) && finite(a.raised_ts) ? Math.max(0, a.ack.at - a.raised_ts) : null;
}
// The escalation's notifications outside the browser (webhook, e-mail): the last try of each channel.
function deliveryText(a) {
  const last = new Map();
  for (const e of a.history) if (e.event === "escalation_delivery" && typeof e.channel === "string") last.set(e.channel, e);
  if (!last.size) return "";
  const parts = [...last.values()].map((e) => {
    const how = e.ok === true ? "✓" : `✗ ${t(e.state === "failed" ? "delivery.failed" : "delivery.retrying")}` +
      (finite(e.attempt) ? ` (${t("delivery.attempt", { n: e.attempt })})` : "");
    return `${e.channel.slice(0, 64)} ${how}`;
  });
  return t("delivery.list", { list: parts.join("; ") });
}
function visibleSite(site) { return !state.siteFilter || site === state.siteFilter; }

// ---------------------------------------------------------------- alerts
function anyEscalatedOpen() { return [...state.alerts.values()].some(isEscalatedOpen); }

function upsertAlert(a, quiet) {
  const before = state.alerts.get(a.alert_id);
  if (before && before.acknowledged && !a.acknowledged) a = { ...a, acknowledged: true, ack: before.ack };
  if (before && before.escalated && !a.escalated) a = { ...a, escalated: true, escalated_at: before.escalated_at };
  state.alerts.set(a.alert_id, a);
  if (a.severity === "critical" && isActive(a) && !state.seenCritical.has(a.alert_id)) {
    state.seenCritical.add(a.alert_id);
    if (!quiet) alarm("alert");
  }
  if (isEscalatedOpen(a) && !state.seenEscalated.has(a.alert_id)) {
    state.seenEscalated.add(a.alert_id);
    if (!quiet) alarm("escalation");
    startEscalationRepeat(anyEscalatedOpen);   // rises and repeats until someone takes it on
  }
}

function sevRank(a) {
  const open = isActive(a) ? 0 : isOpen(a) ? 10 : 20;
  return open + (SEVERITIES.indexOf(a.severity) + 1 || 4);
}

function renderAlerts() {
  const onlyOpen = $("#only-open").checked;
  const all = [...state.alerts.values()].filter((a) => visibleSite(a.site));
  const list = all.filter((a) => !onlyOpen || isOpen(a))
    .sort((a, b) => sevRank(a) - sevRank(b) || (b.raised_ts ?? b.received_at ?? 0) - (a.raised_ts ?? a.received_at ?? 0))
    .slice(0, 300);
  const ol = $("#alerts");
  const keep = new Set(list.map((a) => a.alert_id));
  for (const li of [...ol.children]) if (!keep.has(li.dataset.alertId)) li.remove();
  let prev = null;
  for (const a of list) {
    let li = ol.querySelector(`li[data-alert-id="${a.alert_id}"]`);
    if (!li) li = newAlertItem(a.alert_id);
    fillAlert(li, a);
    if (prev ? prev.nextSibling !== li : ol.firstChild !== li) {
      if (prev) prev.after(li); else ol.prepend(li);
    }
    prev = li;
  }
  $("#alerts-empty").hidden = list.some(isOpen);
  $("#alert-counts").textContent = t("alerts.counts", { open: all.filter(isOpen).length, shown: list.length });
  renderBanner(all);
  scheduleMaps();
}

function renderBanner(all) {
  const escalated = all.filter(isEscalatedOpen);
  const critical = all.filter((a) => a.severity === "critical" && isActive(a));
  const banner = $("#banner");
  const shown = escalated.length ? escalated : critical;
  banner.hidden = shown.length === 0;
  banner.classList.toggle("escalated", escalated.length > 0);
  const items = shown.slice(0, 3).map((a) => [alertTypeText(a), siteName(a.site), a.person || subjectText(a),
    a.escalated_at ? t("escalated.at", { time: fmtTime(a.escalated_at) }) : ""].filter(Boolean).join(" · "));
  const head = escalated.length ? t("banner.escalated", { n: escalated.length }) : t("banner.critical", { n: critical.length });
  banner.replaceChildren(el("span", "count", shown.length ? head : ""), el("span", "items", items.join("; ")));
  document.title = critical.length || escalated.length
    ? t("title.critical", { n: Math.max(critical.length, escalated.length) }) : t("app.title");
}

function newAlertItem(alertId) {
  const li = $("#alert-tpl").content.firstElementChild.cloneNode(true);
  li.dataset.alertId = alertId;
  applyI18n(li);
  li.querySelector("form").addEventListener("submit", (ev) => { ev.preventDefault(); ack(alertId, li); });
  li.querySelector(".what").addEventListener("click", () => showTrack(state.alerts.get(alertId)));
  li.querySelector(".snap").addEventListener("click", (ev) => { ev.preventDefault(); openSnapshot(alertId); });
  return li;
}

function fillAlert(li, a) {
  li.className = `alert ${a.severity} ${a.state}` + (isOpen(a) ? " open" : "") +
    (isActive(a) ? " active" : "") + (a.escalated ? " escalated" : "");
  li.dataset.state = a.state;
  li.dataset.severity = a.severity;
  li.dataset.site = a.site;
  li.querySelector(".sev").textContent = t(`sev.${a.severity}`);
  li.querySelector(".type").textContent = alertTypeText(a);
  li.querySelector(".esc-tag").textContent = a.escalated ? t("escalated.tag") : "";
  li.querySelector(".state").textContent = t(`state.${a.state}`);
  li.querySelector(".person").textContent = a.person || "";
  li.querySelector(".subject").textContent =
    [subjectText(a), siteName(a.site), a.node && String(a.subject.node) !== a.node ? t("subject.node", { node: a.node })
      : ""].filter(Boolean).join(" · ");
  li.querySelector(".where").textContent = whereText(a);
  li.querySelector(".esc-at").textContent = a.escalated_at
    ? [t("escalated.at", { time: fmtDateTime(a.escalated_at) }), deliveryText(a)].filter(Boolean).join(" · ") : "";
  li.querySelector(".when").textContent = t("alert.raised", { time: fmtDateTime(a.raised_ts ?? a.ts) }) +
    (a.cleared_ts ? ` · ${t("alert.cleared", { time: fmtDateTime(a.cleared_ts) })}` : "");
  li.querySelector(".snap").hidden = a.subject.camera === undefined;
  li.querySelector(".snap").href = `/api/v1/alerts/${a.alert_id}/snapshot`;
  const acked = li.querySelector(".acked");
  if (a.ack) {
    acked.textContent = t("alert.acked", { by: a.ack.by, time: fmtDateTime(a.ack.at), dur: fmtDuration(ackSeconds(a)) }) +
      (a.ack.note ? ` — ${t("alert.ackNote", { note: a.ack.note })}` : "");
    acked.dataset.by = a.ack.by;
  } else if (!acked.dataset.error) {
    acked.textContent = "";
  }
}

async function ack(alertId, li) {
  const note = li.querySelector(".note").value;
  const body = { note };
  const guardInput = $("#guard-name");
  if (auth.me && auth.me.auth === "off") {   // no sign-in: the typed name is the only one there is
    const person = guardInput.value.trim();
    if (!person) { guardInput.focus(); guardInput.placeholder = t("guard.needName"); return; }
    localStorage.setItem("qwatch.guard", person);
    body.person = person;
  }   // signed in: the server records the signed-in user
  const button = li.querySelector(".ack-btn");
  button.disabled = true;
  try {
    const resp = await api(`/api/v1/alerts/${alertId}/ack`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (resp.ok || resp.status === 409) {
      delete li.querySelector(".acked").dataset.error;
      const r = await api(`/api/v1/alerts/${alertId}`);
      if (r.ok) { upsertAlert(cleanAlert(parseLenient(await r.text())), true); renderAlerts(); }
    } else {
      li.querySelector(".acked").dataset.error = "1";
      li.querySelector(".acked").textContent = t("alert.ackFailed", { status: resp.status });
    }
  } catch (e) {
    li.querySelector(".acked").dataset.error = "1";
    li.querySelector(".acked").textContent = t("alert.ackFailed", { status: e.message });
  } finally {
    button.disabled = false;
  }
}

async function showTrack(a) {
  if (!a || a.subject.band === undefined) return;
  const since = (a.raised_ts ?? a.ts ?? Date.now() / 1000) - 300;
  const r = await api(`/api/v1/bands/${encodeURIComponent(a.subject.band)}/track?since=${since}`);
  if (!r.ok) return;
  const body = parseLenient(await r.text());
  const points = Array.isArray(body.points) ? body.points.filter((p) => p && p.site === a.site) : [];
  state.track = { site: a.site, band: a.subject.band, points };
  scheduleMaps(a.site);
}

// An escalated alert's notifications are tried after it was pushed: re-read the few open ones.
async function refreshEscalated() {
  for (const a of [...state.alerts.values()].filter(isEscalatedOpen).slice(0, 20)) {
    try {
      const r = await api(`/api/v1/alerts/${a.alert_id}`);
      if (r.ok) upsertAlert(cleanAlert(parseLenient(await r.text())), true);
    } catch (e) { /* next round */ }
  }
  renderAlerts();
}
