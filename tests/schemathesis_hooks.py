"""Schemathesis hooks for tests/tests/e2e_schemathesis.rs (loaded via SCHEMATHESIS_HOOKS).

The local stack is `cargo lambda watch`: an emulator of API Gateway that turns
each HTTP request into a Lambda event before our function sees it. A request
it cannot put into an event — a body that is not UTF-8 under a content type it
treats as text (application/json, text/plain, ...), or a header value whose
bytes are not UTF-8 (requests sends str header values as Latin-1) — is answered
by the emulator itself, without invoking any function:

    HTTP 500, content-type: text/plain; charset=utf-8,
    {"type":"https://httpstatuses.com/500","status":500,"title":"Internal Server Error"}

Such an answer is not ours (ours are `urn:analytics-api:problem:*` problem
details; a function that failed would show up as the emulator's
`{"errorType": ..., "errorMessage": ...}` instead), and API Gateway delivers
such input to Lambda base64-encoded, which the in-process property tests
(tests/tests/hostile_input.rs) cover. So exactly those failures are dropped,
and only when both hold: the response is that emulator answer, byte for byte
in its JSON, and the request carried a non-UTF-8 body or header value. Every
other failure, including any other 500, still fails the run.
"""

import json

import schemathesis

EMULATOR_REFUSAL = {
    "type": "https://httpstatuses.com/500",
    "status": 500,
    "title": "Internal Server Error",
}


def _wire_bytes(value):
    """The bytes requests/http.client put on the wire for a header value or body."""
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _is_utf8(data):
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _untransportable(request):
    """True when the emulator cannot put this request into a Lambda event."""
    if not _is_utf8(_wire_bytes(request.body)):
        return True
    return any(not _is_utf8(_wire_bytes(v)) for v in request.headers.values())


def _is_emulator_refusal(response):
    if response.status_code != 500:
        return False
    try:
        return json.loads(response.content) == EMULATOR_REFUSAL
    except ValueError:
        return False


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keep every failure except the emulator's own refusal of untransportable input."""
    if response is None:
        return True
    return not (_is_emulator_refusal(response) and _untransportable(response.request))
