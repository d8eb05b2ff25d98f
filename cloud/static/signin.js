// qwatch dashboard sign-in (loaded before dashboard.js). The API token lives in sessionStorage (this tab only,
// gone when it closes) and goes out as "Authorization: Bearer" on every fetch and as the
// "qwatch.bearer.<token>" WebSocket subprotocol: browsers cannot set headers on a WebSocket, and a query
// parameter would end up in access logs. When the cloud runs without --users, /api/v1/me says
// {"auth": "off"} and the dashboard works without sign-in, as before.
"use strict";

const TOKEN_KEY = "qwatch.token";
const auth = { token: sessionStorage.getItem(TOKEN_KEY), me: null };

function authHeaders(extra) {
  const h = { ...(extra || {}) };
  if (auth.token) h.Authorization = `Bearer ${auth.token}`;
  return h;
}

// fetch with the token; a 401 (token revoked, rotated or wrong) sends the user back to sign-in.
async function api(path, opts) {
  const o = opts || {};
  const r = await fetch(path, { ...o, headers: authHeaders(o.headers) });
  if (r.status === 401 && auth.me && auth.me.auth === "on") {
    const body = await r.clone().json().catch(() => ({}));
    signOut(`Signed out: ${body.detail || "token not accepted"}.`);
  }
  return r;
}

async function openSnapshot(alertId) {   // a plain link cannot carry the Authorization header
  const r = await api(`/api/v1/alerts/${alertId}/snapshot`);
  if (r.ok) window.open(URL.createObjectURL(await r.blob()), "_blank");
}

// Forget the token and everything this tab was shown (personal data), back to the sign-in form.
function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (message) sessionStorage.setItem("qwatch.signin_message", message);
  location.reload();
}

function showSignIn(message) {
  $("#app").hidden = true;
  $("#signin").hidden = false;
  $("#signin-error").textContent = message || "";
  $("#token").focus();
}

async function whoAmI(token) {
  const r = await fetch("/api/v1/me", { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  if (r.status === 401) return null;
  if (!r.ok) throw new Error(`the server answered ${r.status}`);
  return r.json();
}

function showWho(me) {
  const who = $("#who");
  who.hidden = false;
  if (me.auth === "off") {
    who.className = "who open-access";
    who.textContent = "open access: no sign-in";
    who.title = "This cloud runs without --users: anyone who can reach it sees every site.";
    $("#guard-label").hidden = false;
    return;
  }
  who.className = "who";
  who.replaceChildren("signed in as ", Object.assign(document.createElement("b"), { textContent: me.name }),
    ` (${me.role}${me.sites ? ": " + me.sites.join(", ") : ", every site"})`);
  who.dataset.name = me.name;
  who.dataset.role = me.role;
  $("#sign-out").hidden = false;
}

function start(me) {
  auth.me = me;
  $("#signin").hidden = true;
  $("#app").hidden = false;
  showWho(me);
  setInterval(refreshSites, 5000);
  connect();
}

function initSignIn() {
  $("#sign-out").addEventListener("click", () => signOut(""));
  // A sign-in link pasted into this same tab changes only the fragment (no page load): take it over too.
  window.addEventListener("hashchange", () => { if (/[#&]token=/.test(location.hash)) location.reload(); });
  $("#signin-form").addEventListener("submit", onSignIn);
}

async function onSignIn(ev) {
  ev.preventDefault();
  const token = $("#token").value.trim();
  $("#signin-error").textContent = "";
  try {
    const me = await whoAmI(token);
    if (!me) { $("#signin-error").textContent = "This token is not accepted (wrong, revoked or rotated)."; return; }
    auth.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("#token").value = "";
    start(me);
  } catch (e) { $("#signin-error").textContent = `Cannot reach the server: ${e.message}`; }
}

// Called last by dashboard.js, once every function of both scripts exists.
async function boot() {
  initSignIn();
  // A sign-in link (…/#token=…, printed by `make demo`) hands the token over once; the fragment never
  // reaches the server or its logs, and is wiped from the address bar at once.
  const m = location.hash.match(/[#&]token=([^&]+)/);
  if (m) {
    auth.token = decodeURIComponent(m[1]);
    sessionStorage.setItem(TOKEN_KEY, auth.token);
    history.replaceState(null, "", location.pathname + location.search);
  }
  const message = sessionStorage.getItem("qwatch.signin_message") || "";
  sessionStorage.removeItem("qwatch.signin_message");
  try {
    const me = await whoAmI(auth.token);
    if (me) { start(me); return; }
    if (auth.token) sessionStorage.removeItem(TOKEN_KEY);
    auth.token = null;
    showSignIn(message || (m ? "The token in the link is not accepted." : ""));
  } catch (e) {
    showSignIn(`Cannot reach the server: ${e.message}`);
  }
}

