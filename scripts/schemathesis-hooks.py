"""Schemathesis hooks for scripts/schemathesis.

`POST /api/v1/tickets` takes an optional Idempotency-Key in the spec, as
phones may omit it, but kiosks must send one (400 idempotency_key_required)
and a key reused with another body is 422 idempotency_key_mismatch. A
valid generated case that has no key, or a well-formed one, gets a fresh
key, so those documented, caller- and history-dependent refusals do not
pass for valid requests refused.
"""

import re
import uuid

import schemathesis

WELL_FORMED_KEY = re.compile(r"[!-~]{1,255}")


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.method.upper() != "POST" or case.operation.path != "/api/v1/tickets":
        return
    # Negative cases go as generated (one may be missing a required header
    # on purpose; editing it would make it positive).
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    headers = dict(case.headers or {})
    name = next((k for k in headers if k.lower() == "idempotency-key"), "Idempotency-Key")
    value = headers.get(name)
    if value is None or (isinstance(value, str) and WELL_FORMED_KEY.fullmatch(value)):
        headers[name] = str(uuid.uuid4())
        case.headers = headers
