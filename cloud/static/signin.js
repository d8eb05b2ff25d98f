// qwatch dashboard sign-in (loaded after i18n.js, before dashboard.js).
// Two kinds of credential:
// - a short one-time sign-in code (typed, or in a QR code as /?code=ABCD-2345), exchanged at
//   POST /api/v1/auth/exchange for a session token that expires; it is kept in localStorage (a guard's phone
//   stays signed in across tab closes) and renewed before it expires (POST /api/v1/auth/renew);
// - a long-lived API token (pasted, or a #token= link from `make demo`), kept in sessionStorage: this tab only.
// The token goes out as "Authorization: Bearer" on every fetch and as the "qwatch.bearer.<token>" WebSocket
// subprotocol: browsers cannot set headers on a WebSocket, and a query parameter would end up in access logs.
// When the cloud runs without --users, /api/v1/me says {"auth": "off"} and no sign-in is needed.
"use strict";

const TOKEN_KEY = "qwatch.token";
const SESSION_KEY = "qwatch.session";
const MESSAGE_KEY = "qwatch.signin_message";
const CODE_RE = /^[A-Z0-9]{4}-?[A-Z0-9]{4}$/;
const MAX_TIMER_MS = 2 ** 31 - 1;
const TOKEN_PREFIXES = ["qw.", "qs."];   // an API token (users file) or a session token (from a code)
const auth = { token: null, expiresAt: null, me: null, renewTimer: null, renewAt: null };

class RateLimited extends Error {
  constructor(seconds) { super("429"); this.seconds = seconds; }
}
function isToken(text) { return TOKEN_PREFIXES.some((p) => text.startsWith(p)); }
// The server's reason for a 401 (or a 4401 close) as one of the catalogue's.
function whyKey(detail) {
  if (/revok|rotat/i.test(detail || "")) return "signin.why.revoked";
  if (/expir/i.test(detail || "")) return "signin.why.expired";
  return "signin.why.rejected";
}
const signinError = { key: "", params: null, text: "" };

function loadStoredToken() {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
    if (s && typeof s.token === "string" && finite(s.expires_at) && s.expires_at > Date.now() / 1000 + 5) {
      auth.token = s.token;
      auth.expiresAt = s.expires_at;
      return;
    }
  } catch (e) { /* a corrupt entry is dropped below */ }
  localStorage.removeItem(SESSION_KEY);
  auth.token = sessionStorage.getItem(TOKEN_KEY);
}

function storeToken(token, expiresAt) {
  auth.token = token;
  auth.expiresAt = finite(expiresAt) ? expiresAt : null;
  if (auth.expiresAt !== null) {
    localStorage.setItem(SESSION_KEY, JSON.stringify({ token, expires_at: expiresAt }));
    sessionStorage.removeItem(TOKEN_KEY);
  } else {
    sessionStorage.setItem(TOKEN_KEY, token);
    localStorage.removeItem(SESSION_KEY);
  }
}

function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(SESSION_KEY);
  auth.token = null;
  auth.expiresAt = null;
}

function authHeaders(extra) {
  const h = { ...(extra || {}) };
  if (auth.token) h.Authorization = `Bearer ${auth.token}`;
  return h;
}

// fetch with the token; a 401 (token revoked, rotated, expired or wrong) sends the user back to sign-in.
async function api(path, opts) {
  const o = opts || {};
  const r = await fetch(path, { ...o, headers: authHeaders(o.headers) });
  if (r.status === 401 && auth.me && auth.me.auth === "on") {
    const body = await r.clone().json().catch(() => ({}));
    const detail = typeof body.detail === "string" ? body.detail : "";
    signOut(whyKey(detail), detail);
  }
  return r;
}

// Fetch a file with the token and hand it to the browser (a plain link cannot carry the header).
async function openBlob(path, filename) {
  const r = await api(path);
  if (!r.ok) return r;
  const url = URL.createObjectURL(await r.blob());
  const a = Object.assign(document.createElement("a"), { href: url, target: "_blank" });
  if (filename) a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return r;
}
function openSnapshot(alertId) { return openBlob(`/api/v1/alerts/${alertId}/snapshot`); }

// Forget the token and everything this tab was shown (personal data), back to the sign-in form.
// The first reason wins: when the live socket's 4401 and a fetch's 401 race, the page is already
// reloading, the second response's body can be cut off, and its empty detail would hide the real reason.
let signingOut = false;
function signOut(whyKey, detail) {
  if (signingOut) return;
  signingOut = true;
  forgetToken();
  if (whyKey) {
    const why = t(whyKey) + (detail ? ` (${detail})` : "");
    sessionStorage.setItem(MESSAGE_KEY, t("signin.signedOut", { why }));
  }
  location.reload();
}

function setSigninError(key, params, text) {
  Object.assign(signinError, { key: key || "", params: params || null, text: text || "" });
  $("#signin-error").textContent = key ? t(key, params) : signinError.text;
}

function showSignIn() {
  $("#app").hidden = true;
  $("#signin").hidden = false;
  $("#token").focus();
}

async function whoAmI(token) {
  const r = await fetch("/api/v1/me", { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  if (r.status === 401) return null;
  if (r.status === 429) throw new RateLimited(retryAfter(r, await r.json().catch(() => ({}))));
  if (!r.ok) throw new Error(`HTTP ${r.status}`);
  return r.json();
}

function showWho(me) {
  const who = $("#who");
  who.hidden = false;
  if (me.auth === "off") {
    who.className = "who open-access";
    who.textContent = t("who.openAccess");
    who.title = t("who.openAccessTitle");
    $("#guard-label").hidden = false;
    return;
  }
  who.className = "who";
  const role = t(`role.${me.role}`);
  const scope = Array.isArray(me.sites) ? me.sites.join(", ") : t("who.scopeAll");
  who.replaceChildren(t("who.signedIn"), Object.assign(document.createElement("b"), { textContent: me.name }),
    ` (${role}: ${scope})`);
  who.dataset.name = me.name;
  who.dataset.role = me.role;
  $("#sign-out").hidden = false;
}

function start(me) {
  auth.me = me;
  $("#signin").hidden = true;
  $("#app").hidden = false;
  showWho(me);
  scheduleRenew();
  startDashboard();
}

// ---------------------------------------------------------------- one-time codes and renewal
function normaliseCode(text) {
  const c = text.replace(/[\s\u2010-\u2015]+/g, "").replace(/[\u2010-\u2015]/g, "-").toUpperCase();
  if (!CODE_RE.test(c)) return null;
  return c.includes("-") ? c : `${c.slice(0, 4)}-${c.slice(4)}`;
}

function retryAfter(r, body) {
  const h = Number(r.headers.get("Retry-After"));
  if (Number.isFinite(h) && h > 0) return Math.ceil(h);
  return finite(body.retry_after) ? Math.ceil(body.retry_after) : 60;
}

// Returns {token, expires_at} or {errorKey, params}.
async function exchangeCode(code) {
  const r = await fetch("/api/v1/auth/exchange", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ code }),
  });
  const body = await r.json().catch(() => ({}));
  if (r.ok && typeof body.token === "string") return body;
  if (r.status === 429) return { errorKey: "signin.rateLimited", params: { s: retryAfter(r, body) } };
  // FastAPI's own 404/405 for a route that is not there: this server predates sign-in codes.
  if ((r.status === 404 && body.detail === "Not Found" && !body.error) || r.status === 405) {
    return { errorKey: "signin.noCodes" };
  }
  return { errorKey: "signin.badCode" };
}

function scheduleRenew() {
  clearTimeout(auth.renewTimer);
  if (!finite(auth.expiresAt)) return;
  const left = auth.expiresAt - Date.now() / 1000;
  const lead = Math.min(300, Math.max(10, left * 0.2));   // at 80 % of what is left, at most 5 min early
  const delay = Math.max(1, left - lead);
  auth.renewAt = Date.now() / 1000 + delay;
  auth.renewTimer = setTimeout(renewToken, Math.min(MAX_TIMER_MS, delay * 1000));
}

async function renewToken() {
  try {
    const r = await fetch("/api/v1/auth/renew", { method: "POST", headers: authHeaders() });
    if (r.ok) {
      const b = await r.json();
      if (typeof b.token === "string" && finite(b.expires_at)) {
        const changed = b.token !== auth.token;
        storeToken(b.token, b.expires_at);
        scheduleRenew();
        if (changed) onTokenRenewed();
        return;
      }
    } else if (r.status === 401) {
      signOut("signin.why.expired");
      return;
    }
  } catch (e) { /* the network is down: try again below */ }
  if (auth.expiresAt - Date.now() / 1000 > 0) auth.renewTimer = setTimeout(renewToken, 15_000);
  else signOut("signin.why.expired");
}

// ---------------------------------------------------------------- the form
function initSignIn() {
  $("#sign-out").addEventListener("click", () => signOut(""));
  // A sign-in link pasted into this same tab changes only the fragment (no page load): take it over too.
  window.addEventListener("hashchange", () => { if (/[#&]token=/.test(location.hash)) location.reload(); });
  // A phone wakes with timers late: check the session's renewal at once.
  document.addEventListener("visibilitychange", () => { if (!document.hidden && auth.me) scheduleRenew(); });
  $("#signin-form").addEventListener("submit", onSignIn);
  onLangChange(() => {
    if (auth.me) showWho(auth.me);
    if (signinError.key) setSigninError(signinError.key, signinError.params);
  });
}

// Sign in with a code (exchanged for a session token) or a pasted token; returns true when signed in.
async function signInWith(text) {
  const value = text.trim();
  const button = $("#signin-form button");
  button.disabled = true;
  setSigninError("signin.busy");
  try {
    let token = value, expiresAt = null;
    if (!isToken(value)) {
      const code = normaliseCode(value);
      if (!code) { setSigninError("signin.format"); return false; }
      const got = await exchangeCode(code);
      if (got.errorKey) { setSigninError(got.errorKey, got.params); return false; }
      token = got.token;
      expiresAt = got.expires_at;
    }
    const me = await whoAmI(token);
    if (!me) { setSigninError(isToken(value) ? "signin.badToken" : "signin.badCode"); return false; }
    storeToken(token, expiresAt);
    $("#token").value = "";
    setSigninError("");
    start(me);
    return true;
  } catch (e) {
    if (e instanceof RateLimited) setSigninError("signin.rateLimited", { s: e.seconds });
    else setSigninError("signin.unreachable", { err: e.message });
    return false;
  } finally {
    button.disabled = false;
  }
}

async function onSignIn(ev) {
  ev.preventDefault();
  await signInWith($("#token").value);
}

// Called last by dashboard.js, once every function of every script exists.
async function boot() {
  initSignIn();
  loadStoredToken();
  // A sign-in link (…/#token=…, printed by `make demo`) hands the token over once; the fragment never
  // reaches the server or its logs, and is wiped from the address bar at once.
  const m = location.hash.match(/[#&]token=([^&]+)/);
  if (m) {
    storeToken(decodeURIComponent(m[1]), null);
    history.replaceState(null, "", location.pathname + location.search);
  }
  // A QR code's /?code=ABCD-2345: exchanged once, then wiped from the address bar (it is single-use anyway).
  const params = new URLSearchParams(location.search);
  const code = params.get("code");
  if (code !== null) {
    params.delete("code");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : ""));
  }
  const message = sessionStorage.getItem(MESSAGE_KEY) || "";
  sessionStorage.removeItem(MESSAGE_KEY);
  try {
    const me = code === null ? await whoAmI(auth.token) : null;
    if (me) { start(me); return; }
    if (code !== null) {
      const open = await whoAmI(null).catch(() => null);
      if (open && open.auth === "off") { start(open); return; }
      showSignIn();
      $("#token").value = code;
      await signInWith(code);
      return;
    }
    if (auth.token) forgetToken();
    showSignIn();
    if (m) setSigninError("signin.badLink");
    else if (message) setSigninError("", null, message);
  } catch (e) {
    showSignIn();
    if (e instanceof RateLimited) setSigninError("signin.rateLimited", { s: e.seconds });
    else setSigninError("signin.unreachable", { err: e.message });
  }
}
