"""Sign-in a guard can do: one-time codes (API and CLI), session tokens that expire and renew, failures
limited with 429, and user names with diacritics everywhere."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import httpx
import pytest

from cloud.auth import Authenticator, AuthError, SignInSettings
from cloud.signin import ALPHABET, FailureLimiter, RateLimited, normalise_code
from cloud.users import UserChangeError, add_user, load_users, revoke_user
from devtools.services import ServiceProcess
from tests.cloud.ops_harness import REPO, serve

LAN = "Nguyễn Văn Lan"
LAN_NFD = unicodedata.normalize("NFD", LAN)
CODE_RE = re.compile(f"^[{ALPHABET}]{{4}}-[{ALPHABET}]{{4}}$")


def test_user_names_with_diacritics_are_one_name_in_either_unicode_form(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    assert LAN != LAN_NFD
    issued = add_user(users, LAN_NFD, "guard", ["site-a"])
    assert issued.user.name == LAN  # stored precomposed (NFC)
    with pytest.raises(UserChangeError, match="exists"):
        add_user(users, LAN, "guard", ["site-a"])
    for bad in ("Lan\x1b[2J", "Lan\u202eabc", "", "x" * 65):
        with pytest.raises(UserChangeError):
            add_user(users, bad, "command", [])
    assert revoke_user(users, LAN_NFD).name == LAN
    assert load_users(users).get(LAN) is not None
    res = subprocess.run([sys.executable, "-m", "cloud.cli", "user", "add", "Trần Thị Mai", "--role", "command",
                          "--users", str(users)], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("qw."), res.stderr


def test_codes_and_the_failure_limiter_units() -> None:
    assert normalise_code(" 7kq4 mz2x ") == "7KQ4-MZ2X" and normalise_code("7KQ4-MZ20") is None  # 0 is not used
    lim = FailureLimiter(limit=3, window_s=60.0)
    for t in (0.0, 1.0, 2.0):
        lim.check("a", t)
        lim.fail("a", t)
    with pytest.raises(RateLimited) as exc:
        lim.check("a", 10.0)
    assert exc.value.retry_after == 50  # the oldest failure leaves the window at 60 s
    lim.check("b", 10.0)  # per client
    lim.check("a", 60.5)  # the window slid past the first failure


def test_renewals_stop_at_the_maximum_session_age(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    add_user(users, LAN, "guard", ["site-a"])
    now = [1000.0]
    auth = Authenticator(users, SignInSettings(session_ttl_s=100.0, session_max_s=150.0, clock=lambda: now[0]))
    code, _ = auth.issue_code(LAN_NFD)
    token, exp, user = auth.exchange(code, client="phone")
    assert user.name == LAN and exp == 1100.0
    now[0] = 1090.0
    token, exp, _ = auth.renew(auth.authenticate(token, client="phone"))
    assert exp == 1190.0
    now[0] = 1160.0  # still a valid session, but 160 s after the sign-in
    who = auth.authenticate(token, client="phone")
    assert who.signed_in_at == 1000.0 and who.sites == frozenset({"site-a"})
    with pytest.raises(AuthError, match="too old"):
        auth.renew(who)
    now[0] = 1190.0
    with pytest.raises(AuthError, match="session expired"):
        auth.authenticate(token, client="phone")


@pytest.mark.integration
def test_code_sign_in_sessions_renewal_and_rate_limit(
        tmp_path: Path, mosquitto: ServiceProcess, shared_victoria_metrics: ServiceProcess) -> None:
    users = tmp_path / "users.yaml"
    admin = add_user(users, "Quản trị viên", "admin", []).token
    guard_api = add_user(users, LAN, "guard", ["site-a"]).token
    with serve(tmp_path, mosquitto, shared_victoria_metrics, "--users", str(users), "--session-ttl-s", "4",
               "--code-ttl-s", "60", "--signin-fail-limit", "5", "--signin-window-s", "120") as s:
        a = {"Authorization": f"Bearer {admin}"}
        # An admin makes a code for the guard, naming them in the decomposed form.
        made = s.post("/api/v1/auth/codes", {"user": LAN_NFD}, headers=a)
        assert made.status_code == 200, made.text
        code = made.json()["code"]
        assert CODE_RE.match(code) and made.json()["url"] == f"/?code={code}"
        assert made.json()["expires_at"] == pytest.approx(time.time() + 60, abs=10)
        assert s.post("/api/v1/auth/codes", {"user": "nobody"}, headers=a).status_code == 404
        g_api = {"Authorization": f"Bearer {guard_api}"}
        assert s.post("/api/v1/auth/codes", {"user": LAN}, headers=g_api).status_code == 403
        assert s.post("/api/v1/auth/codes", {"user": LAN}, headers={}).status_code == 401

        # The phone types it (lower case, a space instead of the dash) and gets a session token.
        typed = code.lower().replace("-", " ")
        ex = s.post("/api/v1/auth/exchange", {"code": typed}, headers={})
        assert ex.status_code == 200, ex.text
        session = ex.json()
        assert session["user"] == LAN and session["role"] == "guard" and session["token"].startswith("qs.")
        h = {"Authorization": f"Bearer {session['token']}"}
        me = httpx.get(f"{s.url}/api/v1/me", headers=h).json()
        assert me["name"] == LAN and me["sites"] == ["site-a"]
        assert httpx.get(f"{s.url}/api/v1/alerts", params={"site": "site-b"}, headers=h).status_code == 403
        # Single use.
        again = s.post("/api/v1/auth/exchange", {"code": code}, headers={})
        assert again.status_code == 401 and again.json()["error"] == "unauthorized"

        # Renew before expiry; the old session then expires, the new one works.
        time.sleep(1.0)
        ren = s.post("/api/v1/auth/renew", headers=h)
        assert ren.status_code == 200 and ren.json()["expires_at"] > session["expires_at"]
        h2 = {"Authorization": f"Bearer {ren.json()['token']}"}
        time.sleep(max(0.0, session["expires_at"] - time.time()) + 0.3)
        expired = httpx.get(f"{s.url}/api/v1/me", headers=h)
        assert expired.status_code == 401 and expired.json()["detail"] == "session expired"
        assert s.post("/api/v1/auth/renew", headers=h).status_code == 401  # too late to renew
        assert httpx.get(f"{s.url}/api/v1/me", headers=h2).status_code == 200

        # A code from the CLI works on the running server (shared through the codes file).
        res = subprocess.run([sys.executable, "-m", "cloud.cli", "user", "code", LAN, "--users", str(users),
                              "--url", s.url], cwd=REPO, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        cli_code = res.stdout.strip()
        assert CODE_RE.match(cli_code) and f"{s.url}/?code={cli_code}" in res.stderr
        assert "▀" in res.stderr or "█" in res.stderr  # the terminal QR code
        cli_session = s.post("/api/v1/auth/exchange", {"code": cli_code}, headers={})
        assert cli_session.status_code == 200
        h3 = {"Authorization": f"Bearer {cli_session.json()['token']}"}
        assert httpx.get(f"{s.url}/api/v1/me", headers=h3).status_code == 200

        # Revoking the user ends their sessions at once.
        revoke_user(users, LAN)
        gone = httpx.get(f"{s.url}/api/v1/me", headers=h3)
        assert gone.status_code == 401 and gone.json()["detail"] == "session revoked"

        # Guessing: wrong codes from one client end in 429 with Retry-After; a valid session still works.
        statuses = [s.post("/api/v1/auth/exchange", {"code": "2222-2222"}, headers={}).status_code
                    for _ in range(5)]
        assert statuses[-1] == 429 and set(statuses) == {401, 429}, statuses
        limited = s.post("/api/v1/auth/exchange", {"code": "2222-2222"}, headers={})
        assert limited.status_code == 429 and 0 < int(limited.headers["Retry-After"]) <= 120
        fresh = s.post("/api/v1/auth/codes", {"user": "Quản trị viên"}, headers=a).json()["code"]
        assert s.post("/api/v1/auth/exchange", {"code": fresh}, headers={}).status_code == 429  # blocked
        bad_token = {"Authorization": "Bearer qw.0123456789abcdef.wrongwrongwrongwrongwrong"}
        assert httpx.get(f"{s.url}/api/v1/me", headers=bad_token).status_code == 429
        admin_session = s.post("/api/v1/auth/renew", headers=a)  # an already verified token still works
        assert admin_session.status_code == 200 and admin_session.json()["role"] == "admin"
        h4 = {"Authorization": f"Bearer {admin_session.json()['token']}"}
        assert httpx.get(f"{s.url}/api/v1/me", headers=h4).status_code == 200
        log = s.log.read_text()
        assert session["token"] not in log and code not in log and cli_code not in log
        assert "event=signin user=Nguyễn Văn Lan" in log and "event=rate_limited" in log
