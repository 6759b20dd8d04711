"""The hand-written OpenAPI document (committed as ``schemas/openapi.json``): the plain
Starlette routes parse their own bodies, so their operations, schemas and CAMARA error
responses are written out here rather than derived from the route signatures.

Regenerate the committed document after changing an endpoint::

    .venv/bin/python -m pipelines.server.app --openapi > schemas/openapi.json
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from number_recycling_client.events import EVENT_TYPES, SUBSCRIPTION_ENDS

from pipelines.compliance.notifications import CSV_HEADER, JSON_FIELDS, MAX_ACK_ITEMS, STATUSES
from pipelines.server.bulk import MAX_BULK_PAIRS
from pipelines.server.camara import API
from pipelines.server.platforms import PHONE_PATTERN

DESCRIPTION = (
    "Carrier-side service for platforms. `POST /number-recycling/v0.2/check` implements CAMARA "
    "NumberRecycling v0.2 (two-legged tokens: phoneNumber is required). `POST "
    "/number-recycling/v0.2/bulk-check` answers up to 250,000 (number, date) pairs with FCC "
    "Reassigned Numbers Database semantics and a signed query receipt. `POST "
    "/number-recycling/v0.2/acknowledgements` takes platforms' reports of what they did per "
    "number (unbound, no_account, step_up_enabled). `/feeds/...` serves the "
    "signed daily recycled-number feed (see docs/feeds.md), `/ledger/...` the public "
    "transparency log (C2SP tlog-tiles). `/number-recycling/v0.2/subscriptions` manages CAMARA "
    "event subscriptions: events (pending, withdrawn, released, reissued) are POSTed to the "
    "sink as CloudEvents 1.0 signed with Standard Webhooks v1a (Ed25519, the feed's online key; "
    "docs/events.md). `/` is a JSON index, `/docs` this page. Every call needs `Authorization: Bearer <platform "
    "token>` except `/ledger/...`, `/status`, `/` and `/docs`."
)


def _error_response(status: int, codes: list[str], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"x-correlator": {"$ref": "#/components/headers/x-correlator"}},
        "content": {
            "application/json": {
                "schema": {
                    "allOf": [
                        {"$ref": "#/components/schemas/ErrorInfo"},
                        {
                            "type": "object",
                            "properties": {"status": {"enum": [status]}, "code": {"enum": codes}},
                        },
                    ]
                }
            }
        },
    }


_RESPONSES: dict[str, Any] = {
    "Generic400": _error_response(
        400, ["INVALID_ARGUMENT", "OUT_OF_RANGE"], "Problem with the client request"
    ),
    "Generic401": _error_response(401, ["UNAUTHENTICATED"], "Authentication problem with the client request"),
    "Generic403": _error_response(403, ["PERMISSION_DENIED"], "Client does not have sufficient permission"),
    # CAMARA lists only IDENTIFIER_NOT_FOUND for the check's 404; files answer NOT_FOUND.
    "Generic404": _error_response(
        404,
        ["IDENTIFIER_NOT_FOUND"],
        "Resource Not Found (a number that is not ours: never was, or ported away)",
    ),
    "FileNotFound404": _error_response(404, ["NOT_FOUND"], "No such feed file, tile or checkpoint"),
    "Generic422": _error_response(422, ["MISSING_IDENTIFIER"], "Unprocessable Content"),
    "Generic429": _error_response(429, ["TOO_MANY_REQUESTS"], "Rate limit exceeded; see Retry-After"),
    "Generic503": _error_response(503, ["UNAVAILABLE"], "No snapshot or feed keys published yet"),
    "Timeout408": _error_response(
        408, ["REQUEST_TIMEOUT"], "The request body took longer than 60 s to arrive"
    ),
    "Generic500": _error_response(500, ["INTERNAL"], "Server error (logged by the carrier; no details sent)"),
    "Subscription400": _error_response(
        400, ["INVALID_ARGUMENT", "INVALID_PROTOCOL", "INVALID_SINK"], "Problem with the subscription request"
    ),
    "Subscription404": _error_response(404, ["NOT_FOUND"], "No such subscription of this platform"),
    "Subscription422": _error_response(422, ["SUBSCRIPTION_LIMIT"], "Too many active subscriptions"),
}

_SCHEMAS: dict[str, Any] = {
    "XCorrelator": {
        "type": "string",
        "pattern": "^[a-zA-Z0-9-_:;.\\/<>{}]{0,256}$",
        "example": "b4333c46-49c0-4f62-80d7-f0ef930f1c46",
    },
    "PhoneNumber": {
        "description": "E.164 number with a leading '+'.",
        "type": "string",
        "pattern": PHONE_PATTERN,
        "example": "+8613812345678",
    },
    "CreateCheckNumRecycling": {
        "type": "object",
        "required": ["specifiedDate"],
        "properties": {
            "phoneNumber": {"$ref": "#/components/schemas/PhoneNumber"},
            "specifiedDate": {
                "type": "string",
                "format": "date",
                "example": "2024-10-31",
                "description": "RFC 3339 full-date YYYY-MM-DD; not in the future and "
                "not before the earliest date the service holds data for.",
            },
        },
    },
    "CheckNumRecyclingInfo": {
        "type": "object",
        "required": ["phoneNumberRecycled"],
        "properties": {
            "phoneNumberRecycled": {
                "type": "boolean",
                "description": "true when the subscriber of the number changed after specifiedDate: "
                "their tenure ended by cancel, permanent suspension or reissue on or after that day, "
                "a reissue came after it, or nobody held the number that day (a freeze gap). A port "
                "alone is never a change (docs/answers.md).",
            }
        },
    },
    "ErrorInfo": {
        "type": "object",
        "required": ["status", "code", "message"],
        "properties": {
            "status": {"type": "integer"},
            "code": {"type": "string"},
            "message": {"type": "string"},
        },
    },
    "BulkCheckRequest": {
        "type": "object",
        "required": ["queries"],
        "additionalProperties": False,
        "properties": {
            "queries": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BULK_PAIRS,
                "items": {
                    "type": "object",
                    "required": ["phoneNumber", "specifiedDate"],
                    "properties": {
                        "phoneNumber": {"$ref": "#/components/schemas/PhoneNumber"},
                        "specifiedDate": {"type": "string", "format": "date"},
                    },
                },
            }
        },
    },
    "BulkCheckResponse": {
        "type": "object",
        "required": ["results", "counts", "receipt"],
        "properties": {
            "results": {
                "type": "array",
                "items": {"type": "string", "enum": ["yes", "no", "no_data"]},
                "description": "One answer per query, in request order, by the same rule as the "
                "CAMARA check: yes = phoneNumberRecycled true; no = false; no_data = the check "
                "would answer 404 (not our number) or OUT_OF_RANGE (before the first date this "
                "service can answer for the number, or after today).",
            },
            "risk": {
                "type": "array",
                "items": {"anyOf": [{"$ref": "#/components/schemas/RiskGrade"}, {"type": "null"}]},
                "description": "Aligned with results: for a yes, the risk grade of the number's "
                "latest release or reissue (null when it has none yet: still pending); null for "
                "no and no_data. Not covered by the receipt's response_sha256.",
            },
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "receipt": {"$ref": "#/components/schemas/SignedQueryReceipt"},
        },
    },
    "RiskGrade": {
        "type": "object",
        "required": ["level", "remindersReached", "releaseException", "violation", "priorPort"],
        "properties": {
            "level": {"type": "string", "enum": ["low", "medium", "high"]},
            "remindersReached": {"type": "integer", "enum": [0, 1, 2], "description": "2 = two or more"},
            "releaseException": {"type": "boolean"},
            "violation": {"type": "boolean"},
            "priorPort": {"type": "boolean"},
        },
    },
    "AcknowledgementsRequest": {
        "type": "object",
        "required": ["acknowledgements"],
        "additionalProperties": False,
        "properties": {
            "acknowledgements": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_ACK_ITEMS,
                "items": {
                    "type": "object",
                    "required": ["phoneNumber", "status"],
                    "additionalProperties": False,
                    "properties": {
                        "phoneNumber": {"$ref": "#/components/schemas/PhoneNumber"},
                        "status": {
                            "type": "string",
                            "enum": list(STATUSES),
                            "description": "unbound: accounts bound to the number were unbound; "
                            "no_account: none was bound; step_up_enabled: stronger verification "
                            "now guards them.",
                        },
                        "feedDate": {
                            "type": ["string", "null"],
                            "format": "date",
                            "description": "The published feed day that told the platform.",
                        },
                        "observedAt": {
                            "type": ["string", "null"],
                            "format": "date-time",
                            "description": "RFC 3339 with a zone offset: when the platform "
                            "acted; not in the future.",
                        },
                    },
                },
            }
        },
    },
    "AcknowledgementReceipt": {
        "type": "object",
        "required": ["accepted", "alreadyStored", "receivedAt"],
        "properties": {
            "accepted": {"type": "integer", "description": "Items in the request, all valid."},
            "alreadyStored": {
                "type": "integer",
                "description": "Items already stored by an "
                "earlier request (same platform, number, status and feed day).",
            },
            "receivedAt": {"type": "string", "format": "date-time", "description": "Server time (UTC)."},
        },
    },
    "SignedQueryReceipt": {
        "type": "object",
        "required": ["signed", "signatures"],
        "description": "Ed25519 over the canonical JSON of `signed` by the root's receipt role. "
        "request_sha256 = SHA-256 of 'phoneNumber,specifiedDate\\n' per query; response_sha256 "
        "= SHA-256 of 'answer\\n' per query (docs/feeds.md).",
        "properties": {
            "signed": {
                "type": "object",
                "required": [
                    "_type",
                    "answered_at",
                    "checkpoint",
                    "feed_seq",
                    "pairs",
                    "platform",
                    "request_sha256",
                    "response_sha256",
                    "snapshot_date",
                    "spec_version",
                ],
            },
            "signatures": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["keyid", "sig"],
                    "properties": {"keyid": {"type": "string"}, "sig": {"type": "string"}},
                },
            },
        },
    },
}


def _std(responses: dict[str, str]) -> dict[str, Any]:
    return {code: {"$ref": f"#/components/responses/{name}"} for code, name in responses.items()}


_CORR_PARAM = {"$ref": "#/components/parameters/x-correlator"}
_UPLOAD_ERRORS = {
    "400": "Generic400",
    "401": "Generic401",
    "403": "Generic403",
    "408": "Timeout408",
    "429": "Generic429",
    "500": "Generic500",
    "503": "Generic503",
}


def _api_post(
    *,
    tag: str,
    summary: str,
    description: str,
    operation_id: str,
    request_schema: str,
    csv: bool,
    ok: str,
    ok_schema: str,
    errors: dict[str, str],
) -> dict[str, Any]:
    """A POST under the API: bearer token, x-correlator, a JSON body (or CSV), a JSON answer."""
    content: dict[str, Any] = {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{request_schema}"}}
    }
    if csv:
        content["text/csv"] = {"schema": {"type": "string"}}
    return {
        "tags": [tag],
        "summary": summary,
        "description": description,
        "operationId": operation_id,
        "security": [{"bearer": []}],
        "parameters": [_CORR_PARAM],
        "requestBody": {"required": True, "content": content},
        "responses": {
            "200": {
                "description": ok,
                "headers": {"x-correlator": {"$ref": "#/components/headers/x-correlator"}},
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ok_schema}"}}},
            },
            **_std(errors),
        },
    }


_FILE_PARAMETERS = [
    {"name": "rel", "in": "path", "required": True, "schema": {"type": "string"}},
    {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
]


def _file_responses(errors: dict[str, str]) -> dict[str, Any]:
    return {
        "200": {"description": "The file", "content": {"application/octet-stream": {}}},
        "304": {"description": "Not modified"},
        **_std(errors),
    }


_SUBSCRIPTION_SCHEMAS: dict[str, Any] = {
    "Protocol": {"type": "string", "enum": ["HTTP"], "description": "Only HTTP is supported"},
    "SubscriptionEventType": {"type": "string", "enum": list(EVENT_TYPES)},
    "SubscriptionStatus": {"type": "string", "enum": ["ACTIVE", "EXPIRED", "INACTIVE", "DELETED"]},
    "SinkCredential": {
        "type": "object",
        "description": "Accepted and ignored: events are signed (Standard Webhooks v1a, docs/events.md)",
        "properties": {"credentialType": {"type": "string"}},
    },
    "Config": {
        "type": "object",
        "properties": {
            "subscriptionExpireTime": {"type": "string", "format": "date-time"},
            "subscriptionMaxEvents": {"type": "integer", "minimum": 1},
            "initialEvent": {"type": "boolean", "description": "Accepted; no initial event is sent"},
        },
    },
    "SubscriptionRequest": {
        "type": "object",
        "required": ["protocol", "sink", "types"],
        "properties": {
            "protocol": {"$ref": "#/components/schemas/Protocol"},
            "sink": {"type": "string", "format": "uri", "pattern": "^https://.+$"},
            "sinkCredential": {"$ref": "#/components/schemas/SinkCredential"},
            "types": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/components/schemas/SubscriptionEventType"},
            },
            "config": {"$ref": "#/components/schemas/Config"},
        },
    },
    "Subscription": {
        "type": "object",
        "required": ["id", "protocol", "sink", "types", "config", "startsAt", "status"],
        "properties": {
            "id": {"type": "string"},
            "protocol": {"$ref": "#/components/schemas/Protocol"},
            "sink": {"type": "string", "format": "uri"},
            "types": {"type": "array", "items": {"$ref": "#/components/schemas/SubscriptionEventType"}},
            "config": {"$ref": "#/components/schemas/Config"},
            "startsAt": {"type": "string", "format": "date-time"},
            "expiresAt": {"type": "string", "format": "date-time"},
            "status": {"$ref": "#/components/schemas/SubscriptionStatus"},
        },
    },
    "CloudEvent": {
        "type": "object",
        "description": "What a sink receives (POST, application/cloudevents+json, headers webhook-id, "
        "webhook-timestamp, webhook-signature: v1a,<base64 Ed25519 of id.timestamp.body>)",
        "required": ["id", "source", "specversion", "type", "time"],
        "properties": {
            "id": {"type": "string"},
            "source": {"type": "string", "format": "uri-reference"},
            "specversion": {"type": "string", "enum": ["1.0"]},
            "type": {"type": "string", "enum": [*EVENT_TYPES, SUBSCRIPTION_ENDS]},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"type": "string", "enum": ["application/json"]},
            "data": {"type": "object"},
        },
    },
}

_SUB_ID = {"name": "subscriptionId", "in": "path", "required": True, "schema": {"type": "string"}}
_SUB_ERRORS = {"401": "Generic401", "403": "Generic403", "429": "Generic429", "500": "Generic500"}


def _sub_op(summary: str, operation_id: str, ok: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "tags": ["Subscriptions"],
        "summary": summary,
        "description": "Scope `subscriptions`; a platform sees only its own subscriptions (docs/events.md).",
        "operationId": operation_id,
        "security": [{"bearer": []}],
        "parameters": [_CORR_PARAM, *extra.pop("parameters", [])],
        **extra,
        "responses": {**ok, **_std({**_SUB_ERRORS, **extra.pop("errors", {})})},
    }


def _json_ok(code: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        code: {
            "description": description,
            "headers": {"x-correlator": {"$ref": "#/components/headers/x-correlator"}},
            "content": {"application/json": {"schema": schema}},
        }
    }


_SUBSCRIPTION = {"$ref": "#/components/schemas/Subscription"}
_SUBSCRIPTION_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    (f"{API}/subscriptions", "post"): {
        **_sub_op(
            "Create a subscription: events are POSTed to the sink, signed",
            "createSubscription",
            _json_ok("201", "Created", _SUBSCRIPTION),
            errors={"400": "Subscription400", "408": "Timeout408", "422": "Subscription422"},
        ),
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SubscriptionRequest"}}},
        },
        "callbacks": {
            "notifications": {
                "{$request.body#/sink}": {
                    "post": {
                        "summary": "An event (CloudEvents 1.0), signed as Standard Webhooks v1a",
                        "requestBody": {
                            "required": True,
                            "content": {
                                "application/cloudevents+json": {
                                    "schema": {"$ref": "#/components/schemas/CloudEvent"}
                                }
                            },
                        },
                        "responses": {"204": {"description": "Received (any 2xx); anything else is retried"}},
                    }
                }
            }
        },
    },
    (f"{API}/subscriptions", "get"): _sub_op(
        "The caller's subscriptions",
        "retrieveSubscriptionList",
        _json_ok("200", "The list", {"type": "array", "items": _SUBSCRIPTION}),
    ),
    (f"{API}/subscriptions/{{subscriptionId}}", "get"): _sub_op(
        "One subscription",
        "retrieveSubscription",
        _json_ok("200", "The subscription", _SUBSCRIPTION),
        parameters=[_SUB_ID],
        errors={"404": "Subscription404"},
    ),
    (f"{API}/subscriptions/{{subscriptionId}}", "delete"): _sub_op(
        "Delete a subscription (its sink gets a last subscription-ends event)",
        "deleteSubscription",
        {"204": {"description": "Deleted"}},
        parameters=[_SUB_ID],
        errors={"404": "Subscription404"},
    ),
}

_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    (f"{API}/check", "post"): _api_post(
        tag="Check Number Recycling",
        summary="Check whether the subscriber of the phone number has changed.",
        description="CAMARA NumberRecycling v0.2. Scope `check`.",
        operation_id="checkNumberRecycling",
        request_schema="CreateCheckNumRecycling",
        csv=False,
        ok="OK",
        ok_schema="CheckNumRecyclingInfo",
        errors={
            "400": "Generic400",
            "401": "Generic401",
            "403": "Generic403",
            "404": "Generic404",
            "408": "Timeout408",
            "422": "Generic422",
            "429": "Generic429",
            "500": "Generic500",
            "503": "Generic503",
        },
    ),
    (f"{API}/bulk-check", "post"): _api_post(
        tag="Bulk Check",
        summary="Answer up to 250,000 (phoneNumber, specifiedDate) pairs, with a signed receipt.",
        description="Scope `bulk`. Upload JSON, or CSV with the header "
        "`phoneNumber,specifiedDate`. A malformed pair fails the request with 400 naming it.",
        operation_id="bulkCheckNumberRecycling",
        request_schema="BulkCheckRequest",
        csv=True,
        ok="One answer per query and a signed receipt",
        ok_schema="BulkCheckResponse",
        errors=_UPLOAD_ERRORS,
    ),
    (f"{API}/acknowledgements", "post"): _api_post(
        tag="Acknowledgements",
        summary="Report what the platform did per number: unbound, no_account or step_up_enabled.",
        description=f"Scope `ack`. Up to {MAX_ACK_ITEMS:,} items as JSON, or CSV with the header "
        f"`{','.join(CSV_HEADER)}` (JSON names: {', '.join(JSON_FIELDS)}). Every item is checked; "
        "one bad item fails the request with 400 naming it (`item N`, or `line N` of the CSV) and "
        "nothing is stored. Resending the same (number, status, feed day) is harmless: it is "
        "stored once.",
        operation_id="acknowledgeNumbers",
        request_schema="AcknowledgementsRequest",
        csv=True,
        ok="Stored; a receipt",
        ok_schema="AcknowledgementReceipt",
        errors=_UPLOAD_ERRORS,
    ),
    ("/feeds/{rel}", "get"): {
        "tags": ["Feeds"],
        "summary": "Signed feed files: root.json, timestamp.json, roots/N.root.json, manifests/N.json, "
        "daily/<D>/{recycled.parquet,recycled.csv,notices.parquet,notices.csv,manifest.json}, "
        "snapshot/recycled.{parquet,csv}.",
        "description": "Scope `feeds`. Strong ETag; If-None-Match answers 304.",
        "operationId": "getFeedFile",
        "security": [{"bearer": []}],
        "parameters": _FILE_PARAMETERS,
        "responses": _file_responses(
            {"401": "Generic401", "403": "Generic403", "404": "FileNotFound404", "429": "Generic429"}
        ),
    },
    ("/ledger/{rel}", "get"): {
        "tags": ["Ledger"],
        "summary": "The public transparency log: checkpoint, vkey, tile/<L>/<N>[.p/<W>], tile/entries/<N>[.p/<W>].",
        "description": "No token. Full tiles are immutable; checkpoint and partial tiles are short-lived.",
        "operationId": "getLedgerFile",
        "parameters": _FILE_PARAMETERS,
        "responses": _file_responses({"404": "FileNotFound404"}),
    },
    ("/status", "get"): {
        "tags": ["Status"],
        "summary": "Which query snapshot is loaded (no token; no counts).",
        "operationId": "getStatus",
        "responses": {
            "200": {
                "description": "Snapshot status: `loaded` is null until the first snapshot",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "snapshot": {
                                    "type": "object",
                                    "properties": {
                                        "loaded": {"type": ["string", "null"]},
                                        "as_of": {"type": "string", "format": "date"},
                                        "data_from": {"type": "string", "format": "date"},
                                        "feed_seq": {"type": "integer"},
                                    },
                                    "required": ["loaded"],
                                }
                            },
                        }
                    }
                },
            }
        },
    },
}


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document for ``app`` with the paths and components written out here; built once."""
    if app.openapi_schema is None:
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        paths: dict[str, Any] = {}
        for (path, method), op in {**_OPERATIONS, **_SUBSCRIPTION_OPERATIONS}.items():
            paths.setdefault(path, {})[method] = op
        doc["paths"] = paths
        doc["servers"] = [{"url": "/"}]
        doc["components"] = {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Per-platform token from `recycle platform add`",
                }
            },
            "parameters": {
                "x-correlator": {
                    "name": "x-correlator",
                    "in": "header",
                    "description": "Correlation id for the different services",
                    "schema": {"$ref": "#/components/schemas/XCorrelator"},
                }
            },
            "headers": {
                "x-correlator": {
                    "description": "Correlation id for the different services",
                    "schema": {"$ref": "#/components/schemas/XCorrelator"},
                }
            },
            "schemas": {**_SCHEMAS, **_SUBSCRIPTION_SCHEMAS},
            "responses": _RESPONSES,
        }
        app.openapi_schema = doc
    return app.openapi_schema


def openapi_bytes(app: FastAPI) -> bytes:
    """The OpenAPI document as committed in ``schemas/openapi.json``."""
    return (json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
