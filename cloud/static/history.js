// qwatch dashboard: alert history (filters by date range, site, type, state and person; CSV export; time to
// acknowledge) and the daily report download. Dates are the user's local calendar days.
"use strict";

const ALERT_TYPES = ["geofence_breach", "band_missing", "band_tamper", "sos", "fever", "advert_forgery",
  "advert_replay", "camera_motion", "camera_offline", "camera_tamper", "node_offline", "low_battery", "no_motion"];
const HISTORY_LIMIT = 1000;
const history_ = { rows: [], status: null };

// Fold case and Vietnamese diacritics, so "nguyen van lan" finds "Nguyễn Văn Lan".
function fold(s) {
  return String(s).normalize("NFD").replace(/[\u0300-\u036f]/g, "").replace(/đ/g, "d").replace(/Đ/g, "D")
    .toLowerCase();
}

function localDayStart(dateStr) {
  const d = new Date(`${dateStr}T00:00:00`);
  return Number.isFinite(d.getTime()) ? d.getTime() / 1000 : null;
}
function isoDate(d) {
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

function option(value, text) { return Object.assign(document.createElement("option"), { value, textContent: text }); }

function fillHistorySelects() {
  const f = $("#history-form");
  const keep = (sel) => sel.value;
  const site = keep(f.site), type = keep(f.type), st = keep(f.state);
  f.site.replaceChildren(option("", t("history.any")),
    ...[...state.sites.keys()].sort().map((s) => option(s, siteName(s))));
  f.type.replaceChildren(option("", t("history.any")), ...ALERT_TYPES.map((k) => option(k, t(`type.${k}`))));
  f.state.replaceChildren(option("", t("history.any")),
    ...["raised", "acknowledged", "cleared"].map((k) => option(k, t(`state.${k}`))));
  f.site.value = site; f.type.value = type; f.state.value = st;
}

// The filters as query parameters (the server's), and the same filters as a predicate applied here too, so
// an older server that ignores a parameter still shows what was asked for.
function historyFilters() {
  const f = $("#history-form");
  const p = new URLSearchParams();
  const since = f.from.value ? localDayStart(f.from.value) : null;
  const until = f.to.value ? localDayStart(f.to.value) + 86400 : null;
  if (since !== null) p.set("since", String(since));
  if (until !== null) p.set("until", String(until));
  for (const k of ["site", "type", "state"]) if (f[k].value) p.set(k, f[k].value);
  const person = f.person.value.trim();
  if (person) p.set("person", person);
  // The server selects every alert whose life overlaps [since, until): raised before until, changed after since.
  const keep = (a) => {
    const at = a.raised_ts ?? a.ts;
    if (until !== null && finite(at) && at >= until) return false;
    if (person && !fold(a.person || "").includes(fold(person))) return false;
    return true;
  };
  return { params: p, keep };
}

function setHistoryStatus(key, params) {
  history_.status = key ? { key, params } : null;
  $("#history-status").textContent = key ? t(key, params) : "";
}

async function searchHistory(ev) {
  if (ev) ev.preventDefault();
  const { params, keep } = historyFilters();
  params.set("limit", String(HISTORY_LIMIT));
  setHistoryStatus("history.loading");
  try {
    const r = await api(`/api/v1/alerts?${params}`);
    if (!r.ok) { setHistoryStatus("history.failed", { status: r.status }); return; }
    const rows = [];
    for (const raw of parseLenient(await r.text()) || []) {
      try { rows.push(cleanAlert(raw)); } catch (e) { countBad("history:alert"); }
    }
    history_.rows = rows.filter(keep);
    renderHistory();
    setHistoryStatus("history.count", { n: history_.rows.length });
  } catch (e) {
    setHistoryStatus("history.failed", { status: e.message });
  }
}

function cell(tr, labelKey, content) {
  const td = document.createElement("td");
  td.dataset.label = t(labelKey);
  if (content instanceof Node) td.append(content); else td.textContent = content;
  tr.append(td);
  return td;
}

function eventsList(a) {
  const d = document.createElement("details");
  d.append(el("summary", "", t("history.events")));
  const ul = el("ul", "events");
  for (const e of a.history) {
    const kind = ["raised", "cleared", "acknowledged", "escalated", "escalation_delivery"].includes(e.event)
      ? t(`event.${e.event}`) : String(e.event);
    const extra = typeof e.by === "string" ? ` · ${e.by}` : typeof e.channel === "string" ? ` · ${e.channel}` : "";
    const ok = e.ok === false ? ` ✗${typeof e.error === "string" ? ` ${e.error.slice(0, 200)}` : ""}`
      : e.ok === true ? " ✓" : "";
    ul.append(el("li", "", `${fmtDateTime(e.ts)} ${kind}${extra}${ok}`));
  }
  d.append(ul);
  return d;
}

function renderHistory() {
  const tbody = $("#history tbody");
  const rows = history_.rows.map((a) => {
    const tr = document.createElement("tr");
    tr.dataset.alertId = a.alert_id;
    tr.className = `sev-${a.severity}`;
    cell(tr, "history.col.raised", fmtDateTime(a.raised_ts ?? a.ts));
    cell(tr, "history.col.site", siteName(a.site));
    const type = cell(tr, "history.col.type", alertTypeText(a));
    if (a.history.length) type.append(eventsList(a));
    cell(tr, "history.col.who", [a.person, subjectText(a), whereText(a)].filter(Boolean).join(" · "));
    cell(tr, "history.col.state", t(`state.${a.state}`));
    cell(tr, "history.col.ack", a.ack ? `${a.ack.by} · ${fmtDateTime(a.ack.at)}` : t("common.none"));
    cell(tr, "history.col.ackTime", fmtDuration(ackSeconds(a))).dataset.k = "ack_s";
    cell(tr, "history.col.escalated", a.escalated_at ? fmtDateTime(a.escalated_at) : t("common.none"));
    return tr;
  });
  tbody.replaceChildren(...rows);
}

async function downloadCsv() {
  const { params } = historyFilters();
  setHistoryStatus("history.loading");
  try {
    const r = await openBlob(`/api/v1/alerts.csv?${params}`, "qwatch-alerts.csv");
    if (r.status === 404) setHistoryStatus("history.unsupported");
    else if (!r.ok) setHistoryStatus("history.failed", { status: r.status });
    else setHistoryStatus("");
  } catch (e) { setHistoryStatus("history.failed", { status: e.message }); }
}

async function downloadReport(ev) {
  ev.preventDefault();
  const f = $("#report-form");
  const p = new URLSearchParams({ date: f.date.value, format: "csv" });
  if (state.siteFilter) p.set("site", state.siteFilter);
  const out = $("#report-status");
  try {
    const r = await openBlob(`/api/v1/reports/daily?${p}`, `qwatch-report-${f.date.value}.csv`);
    out.textContent = r.ok ? "" : r.status === 404 ? t("history.unsupported") : t("history.failed", { status: r.status });
  } catch (e) { out.textContent = t("history.failed", { status: e.message }); }
}

function initHistory() {
  const f = $("#history-form");
  const today = new Date();
  f.to.value = isoDate(today);
  f.from.value = isoDate(new Date(today.getTime() - 6 * 86400_000));
  $("#report-form").date.value = isoDate(new Date(today.getTime() - 86400_000));
  fillHistorySelects();
  f.addEventListener("submit", searchHistory);
  $("#history-csv").addEventListener("click", downloadCsv);
  $("#report-form").addEventListener("submit", downloadReport);
  onLangChange(() => {
    fillHistorySelects();
    renderHistory();
    if (history_.status) setHistoryStatus(history_.status.key, history_.status.params);
  });
}
