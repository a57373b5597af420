"""The OpenAPI 3.1 description of the REST API as configured (served at ``/openapi.json``).

One document for both schemas (or the configured one): the request and response shapes of
:mod:`shaken.adapters.http.atis` and :mod:`shaken.adapters.http.gpp`, every error of
:data:`~shaken.adapters.http.errors.ERRORS` with its status, and the operational endpoints.
Schemathesis runs against it in the tests, so it cannot drift from what the server answers.
"""

from __future__ import annotations

from typing import Any

from shaken.adapters.http.dashboard import OPENAPI_COMPONENTS as DASHBOARD_COMPONENTS
from shaken.adapters.http.dashboard import openapi_paths as dashboard_paths
from shaken.adapters.http.errors import ATIS, AUTO, ERRORS, THREE_GPP
from shaken.adapters.http.fields import MAX_IDENTITIES, MAX_IDENTITY, MAX_TEXT, MAX_TNS, TN_PATTERN
from shaken.core.passport import ATTESTATION_LEVELS
from shaken.core.reasons import Verstat

__all__ = ["openapi_document"]

_TN_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": f"^{TN_PATTERN}$",
    "description": "a telephone number; '+' and visual separators are removed (RFC 8224 8.3)",
    "examples": ["12025550100"],
}
_URI_SCHEMA: dict[str, Any] = {"type": "string", "pattern": r"^(sips?|tel):[!#-;=?-~]{1,250}$"}
_IDENTITY_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_IDENTITY,
    "pattern": r"^[ -~]+$",
    "description": "an Identity header value: <jws>;info=<x5u>;alg=ES256;ppt=shaken",
}
_TIME_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 2**33 - 1}
_TN_OBJECT: dict[str, Any] = {
    "type": "object",
    "required": ["tn"],
    "properties": {"tn": {"$ref": "#/components/schemas/TelephoneNumber"}},
}
_TN_LIST_OBJECT: dict[str, Any] = {
    "type": "object",
    "required": ["tn"],
    "properties": {
        "tn": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_TNS,
            "items": {"$ref": "#/components/schemas/TelephoneNumber"},
        }
    },
}
_GPP_PARTY: dict[str, Any] = {
    "oneOf": [
        {"$ref": "#/components/schemas/TelephoneNumber"},
        _TN_OBJECT,
        {
            "type": "object",
            "required": ["uri"],
            "properties": {"uri": {"$ref": "#/components/schemas/Uri"}},
        },
    ]
}
_GPP_PARTIES: dict[str, Any] = {
    "oneOf": [
        {"$ref": "#/components/schemas/TelephoneNumber"},
        _TN_LIST_OBJECT,
        {
            "type": "object",
            "required": ["uri"],
            "properties": {
                "uri": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_TNS,
                    "items": {"$ref": "#/components/schemas/Uri"},
                }
            },
        },
    ]
}
_REQUEST_ID: dict[str, Any] = {"type": "string", "pattern": "^[!-~]{1,128}$"}
_SHORT_TEXT: dict[str, Any] = {
    "type": "string",
    "maxLength": MAX_TEXT,
    "pattern": "^[^\\u0000-\\u001f\\u007f]*$",
}
_CLAIMS: dict[str, Any] = {
    "attest": {"type": "string", "enum": list(ATTESTATION_LEVELS)},
    "dest": _TN_LIST_OBJECT,
    "iat": _TIME_SCHEMA,
    "orig": _TN_OBJECT,
    "origid": {"type": "string", "format": "uuid"},
    "rcd": {
        "type": "object",
        "description": "Rich Call Data to sign (RFC 9795): must be the brand vetted for orig",
        "properties": {
            "nam": {"type": "string"},
            "apn": {"type": "string"},
            "icn": {"type": "string"},
            "jcl": {"type": "string"},
            "jcd": {"type": "array"},
        },
    },
    "crn": {"type": "string", "description": "call reason: one the brand vetted for orig"},
}
#: The branding verdict of a verified call (RFC 9795), separate from the SHAKEN verdict.
_RCD_VERDICT: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {
            "type": "string",
            "enum": [
                "verified",
                "integrity_failed",
                "constraint_violated",
                "invalid",
                "not_present",
            ],
        },
        "reason": {"type": "string"},
        "reasoncode": {"type": "integer"},
        "reasondesc": {"type": "string"},
        "nam": {"type": "string"},
        "apn": {"type": "string"},
        "crn": {"type": "string"},
        "icn": {"type": "string"},
        "jcl": {"type": "string"},
        "callInfo": {"type": "string"},
    },
}
_VERSTAT: dict[str, Any] = {"type": "string", "enum": [v.value for v in Verstat]}

#: Present only when the level signed differs from the one requested (see ``signing_body``).
_APPLIED_ATTEST: dict[str, Any] = {
    "attest": {
        "type": "string",
        "enum": list(ATTESTATION_LEVELS),
        "description": "the attestation signed, when it is not the one requested",
    },
    "attestReason": {
        "type": "string",
        "description": "why the number or the profile allowed no more than that level",
    },
}

_COMPONENTS: dict[str, Any] = {
    "TelephoneNumber": _TN_SCHEMA,
    "Uri": _URI_SCHEMA,
    "AtisSigningRequest": {
        "type": "object",
        "required": ["signingRequest"],
        "properties": {
            "signingRequest": {
                "type": "object",
                "required": ["attest", "dest", "iat", "orig"],
                "additionalProperties": False,
                "properties": _CLAIMS,
            }
        },
    },
    "GppSigningRequest": {
        "type": "object",
        "required": ["signingRequest"],
        "properties": {
            "signingRequest": {
                "type": "object",
                "required": ["attest", "dest", "iat", "orig", "ppt"],
                "additionalProperties": False,
                "properties": {
                    **_CLAIMS,
                    "ppt": {"type": "string", "enum": ["shaken"]},
                    "profileId": _SHORT_TEXT,
                    "requestId": _REQUEST_ID,
                },
            }
        },
    },
    "AtisVerificationRequest": {
        "type": "object",
        "required": ["verificationRequest"],
        "properties": {
            "verificationRequest": {
                "type": "object",
                "required": ["from", "to", "time", "identity"],
                "properties": {
                    "from": _TN_OBJECT,
                    "to": _TN_LIST_OBJECT,
                    "time": _TIME_SCHEMA,
                    "identity": _IDENTITY_SCHEMA,
                },
            }
        },
    },
    "GppVerificationRequest": {
        "type": "object",
        "required": ["verificationRequest"],
        "properties": {
            "verificationRequest": {
                "type": "object",
                "required": ["identityHeader", "from", "to", "time"],
                "properties": {
                    "identityHeader": _IDENTITY_SCHEMA,
                    "identityHeaders": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_IDENTITIES,
                        "items": _IDENTITY_SCHEMA,
                    },
                    "from": _GPP_PARTY,
                    "to": _GPP_PARTIES,
                    "dest": _GPP_PARTIES,
                    "time": _TIME_SCHEMA,
                    "protectedHeaders": {"description": "accepted and not interpreted"},
                    "profileId": _SHORT_TEXT,
                    "requestId": _REQUEST_ID,
                    "displayName": _SHORT_TEXT,
                },
            }
        },
    },
    "AtisSigningResponse": {
        "type": "object",
        "required": ["signingResponse"],
        "properties": {
            "signingResponse": {
                "type": "object",
                "required": ["identity"],
                "properties": {
                    "identity": {"type": "string"},
                    "rcdIdentity": {"type": "string"},
                    **_APPLIED_ATTEST,
                },
            }
        },
    },
    "GppSigningResponse": {
        "type": "object",
        "required": ["signingResponse"],
        "properties": {
            "signingResponse": {
                "type": "object",
                "required": ["identityHeader"],
                "properties": {
                    "identityHeader": {"type": "string"},
                    "rcdIdentity": {"type": "string"},
                    "requestId": _REQUEST_ID,
                    **_APPLIED_ATTEST,
                },
            }
        },
    },
    "AtisVerificationResponse": {
        "type": "object",
        "required": ["verificationResponse"],
        "properties": {
            "verificationResponse": {
                "type": "object",
                "required": ["verstat"],
                "properties": {
                    "verstat": _VERSTAT,
                    "reasoncode": {"type": "integer"},
                    "reasontext": {"type": "string"},
                    "reasondesc": {"type": "string"},
                    "rcd": _RCD_VERDICT,
                },
            }
        },
    },
    "GppVerificationResponse": {
        "type": "object",
        "required": ["verificationResponse"],
        "properties": {
            "verificationResponse": {
                "type": "object",
                "required": ["verstatValue", "verifyResults"],
                "properties": {
                    "verstatValue": _VERSTAT,
                    "rcd": _RCD_VERDICT,
                    "verifyResults": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["verifyResult"],
                            "properties": {
                                "verifyResult": {
                                    "type": "object",
                                    "required": ["ppt", "status"],
                                    "properties": {
                                        "ppt": {"type": "string"},
                                        "status": {"type": "string", "enum": ["pass", "fail"]},
                                        "reasonCode": {"type": "integer"},
                                        "reasonText": {"type": "string"},
                                        "reasonDescription": {"type": "string"},
                                        "validClaims": {"type": "object"},
                                    },
                                }
                            },
                        },
                    },
                    "divResult": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["div", "verstatValue"],
                            "properties": {"div": {"type": "string"}, "verstatValue": _VERSTAT},
                        },
                    },
                    "requestId": _REQUEST_ID,
                    "displayName": {"type": "string"},
                },
            }
        },
    },
    "AtisError": {
        "type": "object",
        "required": ["requestError"],
        "properties": {
            "requestError": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "properties": {
                    "serviceException": {"$ref": "#/components/schemas/Exception"},
                    "policyException": {"$ref": "#/components/schemas/Exception"},
                },
            }
        },
    },
    "Exception": {
        "type": "object",
        "required": ["messageId", "text"],
        "properties": {
            "messageId": {"type": "string", "enum": list(ERRORS)},
            "text": {"type": "string"},
            "variables": {"type": "array", "items": {"type": "string"}},
        },
    },
    "GppError": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string"},
            "checks": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["ok", "detail"],
                    "properties": {"ok": {"type": "boolean"}, "detail": {"type": "string"}},
                },
            },
        },
    },
}

_REQUEST_ID_HEADER: dict[str, Any] = {
    "description": "the request's X-RequestID, or one generated for it",
    "required": True,
    "schema": {"type": "string"},
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ref(*names: str) -> dict[str, Any]:
    refs = [{"$ref": f"#/components/schemas/{name}"} for name in names]
    return refs[0] if len(refs) == 1 else {"anyOf": refs}


def _error_responses(errors: list[str], schema: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for message_id in errors:
        status = str(ERRORS[message_id].status)
        text = ERRORS[message_id].text
        if status in out:
            out[status]["description"] += f"; {message_id}"
            continue
        out[status] = {
            "description": f"{message_id} ({text})",
            "headers": {"X-RequestID": _REQUEST_ID_HEADER},
            "content": _json(schema),
        }
        if message_id in ("POL4290", "POL5030"):
            out[status]["headers"]["Retry-After"] = {
                "required": True,
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
    return out


def openapi_document(*, schema: str = AUTO, verification_open: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 description of this server as configured (served at /openapi.json)."""
    names = {ATIS: ("Atis",), THREE_GPP: ("Gpp",), AUTO: ("Atis", "Gpp")}[schema]
    errors = _ref(*(f"{n}Error" for n in names))
    common = ["SVC4000", "SVC4001", "SVC4002", "SVC4004", "SVC4005", "SVC4006", "SVC4007"]
    common += ["POL4010", "POL4030", "POL4130", "POL4290", "POL5030", "POL5000"]
    keyed: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
    request_id = {
        "name": "X-RequestID",
        "in": "header",
        "required": False,
        "description": "echoed in the response; one is generated when absent or unusable",
        "schema": {"type": "string"},
    }

    def operation(kind: str, summary: str, security: list[dict[str, list[str]]]) -> dict[str, Any]:
        return {
            "summary": summary,
            "operationId": kind,
            "parameters": [request_id],
            "security": security,
            "requestBody": {
                "required": True,
                "content": _json(_ref(*(f"{n}{kind.title()}Request" for n in names))),
            },
            "responses": {
                "200": {
                    "description": "the result (a verification failure is a result, not an error)",
                    "headers": {"X-RequestID": _REQUEST_ID_HEADER},
                    "content": _json(_ref(*(f"{n}{kind.title()}Response" for n in names))),
                },
                **_error_responses(common, errors),
            },
        }

    health = {"content": _json(_ref("Health"))}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "shaken STI-AS / STI-VS",
            "version": "1",
            "description": (
                "ATIS-1000082 signing and verification (and the 3GPP TS 24.229 Ms variant). "
                "Errors SVC4000-SVC4007, POL4050 and POL5000 are ATIS-1000082's; POL4010, "
                "POL4030, POL4130, POL4290 and POL5030 are this server's, in the same shape."
            ),
        },
        "paths": {
            "/stir/v1/signing": {
                "post": operation("signing", "Sign a call (STI-AS)", keyed),
            },
            "/stir/v1/verification": {
                "post": operation(
                    "verification",
                    "Verify a call (STI-VS)",
                    [*keyed, {}] if verification_open else keyed,
                ),
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness: the process answers",
                    "operationId": "healthz",
                    "responses": {"200": {"description": "alive", **health}},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: trust anchors, signing keys, cache and call log",
                    "operationId": "readyz",
                    "responses": {
                        "200": {"description": "ready", **health},
                        "503": {"description": "not ready", **health},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "operationId": "metrics",
                    "responses": {
                        "200": {
                            "description": "text exposition format 0.0.4",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            **dashboard_paths(),
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": _json({"type": "object"}),
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {**_COMPONENTS, **DASHBOARD_COMPONENTS},
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "basicAuth": {"type": "http", "scheme": "basic"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
