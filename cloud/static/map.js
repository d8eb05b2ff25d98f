// qwatch dashboard: one site's map on a canvas (zones, receivers, beacons, bands, trails, a track).
// Defensive by design (issue #9): every coordinate drawn is finite and clamped to the visible extent, the
// extent ignores positions absurdly far from the site, and the grid loop is bounded whatever the scale.
"use strict";

const COORD_LIMIT = 1e6;          // metres: anything farther from the site origin is not a position
const MAX_GRID_LINES = 120;       // per axis
const MAX_STALE_LABELS = 8;       // beyond this, stale bands are marked but not labelled one by one
const GRID_MIN_PX = 28;

function saneCoord(v) { return typeof v === "number" && Number.isFinite(v) && Math.abs(v) <= COORD_LIMIT; }
function hasPos(b) { return saneCoord(b.x) && saneCoord(b.y); }   // may set the map's scale
function drawable(b) { return finite(b.x) && finite(b.y); }          // drawn, clamped to the canvas

function emptyBounds() { return { minX: Infinity, maxX: -Infinity, minY: Infinity, maxY: -Infinity }; }
function grow(b, x, y) {
  b.minX = Math.min(b.minX, x); b.maxX = Math.max(b.maxX, x);
  b.minY = Math.min(b.minY, y); b.maxY = Math.max(b.maxY, y);
}

// The map's extent in site metres. With geometry: the site plus the bands near it, so an escapee stays on
// the map and the scale recovers once it is back; a band far beyond (a bad fix, a hostile 1e12) is drawn
// clamped at the edge instead of shrinking the site to a dot. Without geometry: `fallback`, every sane
// position seen so far (a steady scale).
function mapBounds(geometry, bands, fallback) {
  if (!geometry) return fallback && isFinite(fallback.minX) ? fallback : emptyBounds();
  const b = emptyBounds();
  const pts = [...geometry.zones.flatMap((z) => z.polygon), ...geometry.receivers.map((r) => r.position),
    ...geometry.beacons.map((r) => r.position)];
  for (const [x, y] of pts) if (saneCoord(x) && saneCoord(y)) grow(b, x, y);
  if (!isFinite(b.minX)) return b;
  const reach = Math.max(200, b.maxX - b.minX, b.maxY - b.minY);
  const site = { ...b };
  for (const band of bands) {
    if (!hasPos(band)) continue;
    if (band.x >= site.minX - reach && band.x <= site.maxX + reach &&
        band.y >= site.minY - reach && band.y <= site.maxY + reach) grow(b, band.x, band.y);
  }
  return b;
}

// A 1-2-5 grid step (metres) that keeps lines at least GRID_MIN_PX apart at `s` px per metre.
function gridStep(s) {
  const want = GRID_MIN_PX / Math.max(s, 1e-9);
  const p = 10 ** Math.floor(Math.log10(want));
  for (const k of [1, 2, 5, 10]) if (k * p >= want) return k * p;
  return 10 * p;
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

function pathOf(ctx, pts, P) {
  ctx.beginPath();
  pts.forEach(([x, y], i) => {
    const [X, Y] = P(x, y);
    if (i) ctx.lineTo(X, Y); else ctx.moveTo(X, Y);
  });
}

// Zones first (under everything), then receivers (triangles) and beacons (diamonds). Returns counts drawn.
function drawGeometry(ctx, g, P, labels) {
  const drawn = { zones: 0, receivers: 0, beacons: 0 };
  if (!g) return drawn;
  const zones = [...g.zones].sort((a, b) => (a.kind === "restricted") - (b.kind === "restricted"));
  for (const z of zones) {
    pathOf(ctx, z.polygon, P);
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
      const [X, Y] = P(x0, y1);
      ctx.fillStyle = z.kind === "restricted" ? "#ff8a8a" : "rgba(46,204,113,.8)";
      ctx.font = "10px sans-serif";
      ctx.fillText(z.id, X + 3, Y + 11);
    }
    drawn.zones++;
  }
  ctx.fillStyle = "#c9d3dd"; ctx.strokeStyle = "#0b0e11"; ctx.lineWidth = 1;
  for (const r of g.receivers) {
    const [x, y] = P(r.position[0], r.position[1]);
    ctx.beginPath(); ctx.moveTo(x, y - 6); ctx.lineTo(x + 5, y + 4); ctx.lineTo(x - 5, y + 4); ctx.closePath();
    ctx.fill(); ctx.stroke();
    drawn.receivers++;
  }
  ctx.fillStyle = "#ffd23f";
  for (const bc of g.beacons) {
    const [x, y] = P(bc.position[0], bc.position[1]);
    ctx.beginPath(); ctx.moveTo(x, y - 4); ctx.lineTo(x + 4, y); ctx.lineTo(x, y + 4); ctx.lineTo(x - 4, y);
    ctx.closePath(); ctx.fill();
    drawn.beacons++;
  }
  return drawn;
}

function drawGrid(ctx, b, m, s, P, w, h) {
  const step = gridStep(s);
  ctx.strokeStyle = "#1f262e"; ctx.lineWidth = 1;
  let n = 0;
  for (let gx = Math.ceil((b.minX - m) / step) * step; gx <= b.maxX + m && n < MAX_GRID_LINES; gx += step, n++) {
    const [X] = P(gx, 0);
    ctx.beginPath(); ctx.moveTo(X, 0); ctx.lineTo(X, h); ctx.stroke();
  }
  n = 0;
  for (let gy = Math.ceil((b.minY - m) / step) * step; gy <= b.maxY + m && n < MAX_GRID_LINES; gy += step, n++) {
    const [, Y] = P(0, gy);
    ctx.beginPath(); ctx.moveTo(0, Y); ctx.lineTo(w, Y); ctx.stroke();
  }
  ctx.fillStyle = "#5d6874"; ctx.font = "10px sans-serif";
  ctx.fillText(t("map.grid", { m: fmtNumber(step) }), 4, h - 4);
}

function label(ctx, text, x, y, w, colour, font) {
  ctx.font = font;
  const right = x + 8 + ctx.measureText(text).width > w - 2 && x > w / 2;
  ctx.textAlign = right ? "right" : "left";
  ctx.lineWidth = 3; ctx.strokeStyle = "#0b0e11"; ctx.strokeText(text, x + (right ? -8 : 8), y);
  ctx.fillStyle = colour; ctx.fillText(text, x + (right ? -8 : 8), y);
  ctx.textAlign = "left";
}

// One band: trail, uncertainty, dot, and its label when alarmed (who, how far out) or stale (last fix).
function drawBand(ctx, band, v, P, s, w, h, staleLabel) {
  const alarm = v.alarmed.get(band.band);
  const [X, Y, clamped] = P(band.x, band.y, true);
  if (!band.stale) {
    const trail = (v.trails.get(band.band) || []).filter(([x, y]) => finite(x) && finite(y));
    ctx.strokeStyle = alarm ? "rgba(255,45,45,.6)" : "rgba(77,163,255,.25)"; ctx.lineWidth = 1;
    pathOf(ctx, trail, P); ctx.stroke();
    if (finite(band.err_m) && band.err_m > 0 && !clamped) {
      const r = Math.min(Math.max(2, band.err_m * s), Math.max(w, h));
      ctx.beginPath(); ctx.arc(X, Y, r, 0, 2 * Math.PI);
      if (r < Math.min(w, h) / 4) {
        ctx.fillStyle = alarm ? "rgba(255,45,45,.12)" : "rgba(77,163,255,.08)"; ctx.fill();
      } else {   // a huge uncertainty would tint the whole site: outline it instead
        ctx.save(); ctx.setLineDash([4, 4]); ctx.strokeStyle = alarm ? "rgba(255,45,45,.5)" : "rgba(77,163,255,.4)";
        ctx.stroke(); ctx.restore();
      }
    }
  }
  ctx.beginPath(); ctx.arc(X, Y, alarm ? 6 : 3.5, 0, 2 * Math.PI);
  if (alarm) {   // an alarm stays red even when its position is old; a dashed ring says it is old
    ctx.fillStyle = "#ff2d2d"; ctx.fill();
    if (band.stale) {
      ctx.save(); ctx.setLineDash([3, 3]); ctx.strokeStyle = "#c9d3dd"; ctx.lineWidth = 1.5;
      ctx.beginPath(); ctx.arc(X, Y, 10, 0, 2 * Math.PI); ctx.stroke(); ctx.restore();
    }
  } else if (band.stale) {
    ctx.fillStyle = "#59626c"; ctx.fill();
    ctx.strokeStyle = "#9aa4ae"; ctx.lineWidth = 1; ctx.stroke();
  } else {
    ctx.fillStyle = "#4da3ff"; ctx.fill();
  }
  if (clamped) {   // off the drawn extent: an outlined marker at the edge, never a coordinate out of range
    ctx.strokeStyle = "#ffd23f"; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(X, Y, 8, 0, 2 * Math.PI); ctx.stroke();
  }
  if (alarm) {
    const who = alarm.person || String(band.band);
    const out = finite(alarm.outside_m) ? ` · ${t("alert.outside", { m: fmtNumber(alarm.outside_m) })}` : "";
    const old = band.stale ? ` · ${t("map.lastFix", { time: fmtTime(band.ts) })}` : "";
    label(ctx, who + out + old, X, Y - 6, w, "#fff", "bold 12px sans-serif");
  } else if (band.stale && staleLabel) {
    label(ctx, t("map.lastFix", { time: fmtTime(band.ts) }), X, Y - 5, w, "#aeb7c0", "10px sans-serif");
  } else if (clamped) {
    label(ctx, t("map.offMap"), X, Y - 6, w, "#ffd23f", "10px sans-serif");
  }
}

// Draw one site. v = {geometry, fallback (bounds), bands [{band, x, y, err_m, ts, stale}], trails
// (Map band -> [[x, y]]), alarmed (Map band -> {person, outside_m}), track ({points} or null)}.
// What was drawn is exposed on the canvas as data-zones/-receivers/-beacons/-bands/-stale/-clamped.
function drawSite(canvas, v) {
  const w = canvas.clientWidth, h = canvas.clientHeight, dpr = window.devicePixelRatio || 1;
  if (w === 0 || h === 0) return;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = "#0b0e11"; ctx.fillRect(0, 0, w, h);
  const b = mapBounds(v.geometry, v.bands, v.fallback);
  const ds = canvas.dataset;
  ds.zones = ds.receivers = ds.beacons = ds.bands = ds.stale = ds.clamped = ds.alertFixes = "0";
  if (!isFinite(b.minX)) {
    ctx.fillStyle = "#8a96a3"; ctx.font = "12px sans-serif"; ctx.fillText(t("map.noPositions"), 8, 18);
    return;
  }
  const m = 5, spanX = b.maxX - b.minX + 2 * m, spanY = b.maxY - b.minY + 2 * m;
  const s = Math.min(w / spanX, h / spanY);   // one scale for both axes: metres stay square
  const ox = (w - spanX * s) / 2, oy = (h - spanY * s) / 2;
  // Site metres to canvas pixels (north up), clamped to the canvas with a 6 px margin.
  const P = (x, y, report) => {
    const X = (x - b.minX + m) * s + ox, Y = h - ((y - b.minY + m) * s + oy);
    const cx = Math.min(w - 6, Math.max(6, Number.isFinite(X) ? X : 6));
    const cy = Math.min(h - 6, Math.max(6, Number.isFinite(Y) ? Y : 6));
    return report ? [cx, cy, cx !== X || cy !== Y] : [cx, cy];
  };
  drawGrid(ctx, b, m, s, P, w, h);
  const drawn = drawGeometry(ctx, v.geometry, P, w >= 300);
  ds.zones = String(drawn.zones); ds.receivers = String(drawn.receivers); ds.beacons = String(drawn.beacons);
  const bands = v.bands.filter(drawable);
  const stale = bands.filter((x) => x.stale);
  let clamped = 0;
  // Stale (grey) first, live over them, alarmed last so they are never hidden.
  const order = [...stale, ...bands.filter((x) => !x.stale && !v.alarmed.has(x.band)),
    ...bands.filter((x) => !x.stale && v.alarmed.has(x.band))];
  for (const band of order) {
    drawBand(ctx, band, v, P, s, w, h, stale.length <= MAX_STALE_LABELS);
    if (P(band.x, band.y, true)[2]) clamped++;
  }
  ds.bands = String(bands.filter((x) => !x.fromAlert).length);
  ds.stale = String(stale.filter((x) => !x.fromAlert).length);
  ds.clamped = String(clamped);
  ds.alertFixes = String(bands.filter((x) => x.fromAlert).length);   // drawn where their alert put them
  if (v.track && v.track.points.length) {
    ctx.save();
    ctx.strokeStyle = "#ffd23f"; ctx.lineWidth = 2; ctx.setLineDash([5, 3]);
    pathOf(ctx, v.track.points.filter(drawable).map((p) => [p.x, p.y]), P);
    ctx.stroke();
    ctx.restore();
  }
}
