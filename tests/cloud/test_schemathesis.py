"""schemathesis over every route of the API at run time, with each role's token and none (issue 9, item F).

The schema is read from the running app, so routes other modules add later are covered without
touching this file. Checks: no 5xx, every status code and body as the OpenAPI schema documents.
Examples are bounded per operation and role to keep `make test` fast.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err, Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cloud.alert_store import AlertStore
from cloud.api import CloudContext, create_app
from cloud.auth import Authenticator, SignInSettings
from cloud.band_registry import BandRegistry
from cloud.live import LiveHub
from cloud.users import add_user
from devtools.services import ServiceProcess
from protocols.payloads import new_alert

pytestmark = pytest.mark.integration  # VictoriaMetrics behind the track route
ROLES = ("admin", "command", "guard", "anonymous")
MAX_EXAMPLES = 8
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
_TOKENS: dict[str, str] = {}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory,
               shared_victoria_metrics: ServiceProcess) -> schemathesis.BaseSchema:
    tmp = tmp_path_factory.mktemp("schemathesis")
    users = tmp / "users.yaml"
    _TOKENS.update({"admin": add_user(users, "adm", "admin", []).token,
                    "command": add_user(users, "cc", "command", []).token,
                    "guard": add_user(users, "gd", "guard", ["site-a"]).token})
    store = AlertStore(tmp / "api.db")
    for site in ("site-a", "site-b"):
        store.upsert(new_alert(site=site, node="edge-01", type="sos", subject={"band": 1001}, ts=1000.0,
                               detail={"x": 1.0}))
    ctx = CloudContext(store=store, hub=LiveHub(), bands=BandRegistry(tmp / "api.db"),
                       vm_url=shared_victoria_metrics.url,
                       auth=Authenticator(users, SignInSettings(fail_limit=1_000_000)))
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(ctx))


def _run_operation(op: schemathesis.APIOperation, headers: dict[str, str]) -> None:
    @given(case=op.as_strategy())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        # No 5xx, no undocumented status code, content type or body shape. Not checked: whether the
        # server accepts every schema-valid request (some rules are semantic, e.g. since <= until).
        case.call_and_validate(headers=headers, checks=CHECKS)

    check()


@pytest.mark.parametrize("role", ROLES)
def test_api_conforms_for_every_role(api_schema: schemathesis.BaseSchema, role: str) -> None:
    headers = {} if role == "anonymous" else {"Authorization": f"Bearer {_TOKENS[role]}"}
    results = list(api_schema.get_all_operations())
    bad_schema = [str(r.err()) for r in results if isinstance(r, Err)]
    assert not bad_schema, bad_schema
    ops = [r.ok() for r in results if isinstance(r, Ok)]
    assert len(ops) >= 8, [o.label for o in ops]
    failed: list[str] = []
    for op in ops:
        try:
            _run_operation(op, headers)
        except Exception as exc:  # collect them all: one run shows every route that misbehaves
            failed.append(f"{op.label} as {role}: {str(exc)[:1500]}")
    assert not failed, "\n\n".join(failed)
