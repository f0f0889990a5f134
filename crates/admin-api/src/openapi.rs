//! The OpenAPI 3.0 description of the admin API, served unauthenticated at
//! `/_nuage/admin/v1/openapi.json`.
//!
//! Written by hand next to the router: the unit tests check that it lists
//! exactly the operations [`Endpoint`](crate::Endpoint) routes plus the
//! operator access approval operations ([`ACCESS_OPERATIONS`]: served by the
//! binary, which holds the audit logs they write ahead to; the binary's
//! tests probe each one on a running server), that every `$ref` resolves,
//! that every path parameter is declared, and that the document deserializes
//! as OpenAPI 3.0.

use serde_json::{Value, json};

/// Where the admin API is served (the document's server).
pub const ADMIN_SERVER: &str = "/_nuage/admin/v1";

/// Where the tenant's half of the access approval API is served (its paths
/// name it in their own `servers`).
pub const ACCESS_TENANT_SERVER: &str = "/_nuage/access/v1";

/// The operator access approval operations (`docs/access-approval.md`), as
/// `(method, path in this document, the prefix it is served under)`. The
/// `nuage` binary serves them, not [`Endpoint`](crate::Endpoint).
pub const ACCESS_OPERATIONS: &[(&str, &str, &str)] = &[
    ("GET", "/access-requests", ADMIN_SERVER),
    ("POST", "/access-requests", ADMIN_SERVER),
    ("GET", "/access-requests/{id}", ADMIN_SERVER),
    ("POST", "/access-requests/{id}/credentials", ADMIN_SERVER),
    ("GET", "/requests", ACCESS_TENANT_SERVER),
    ("GET", "/requests/{id}", ACCESS_TENANT_SERVER),
    ("POST", "/requests/{id}/approve", ACCESS_TENANT_SERVER),
    ("POST", "/requests/{id}/deny", ACCESS_TENANT_SERVER),
    ("POST", "/requests/{id}/revoke", ACCESS_TENANT_SERVER),
];

fn error_responses(codes: &[&str]) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for code in codes {
        let name = match *code {
            "400" => "BadRequest",
            "401" => "Unauthorized",
            "403" => "Forbidden",
            "404" => "NotFound",
            "409" => "Conflict",
            "413" => "TooLarge",
            "422" => "Unprocessable",
            _ => "InternalError",
        };
        out.insert(
            (*code).to_owned(),
            json!({ "$ref": format!("#/components/responses/{name}") }),
        );
    }
    out.insert(
        "500".into(),
        json!({ "$ref": "#/components/responses/InternalError" }),
    );
    out
}

fn json_content(schema: &str) -> Value {
    json!({ "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } })
}

/// One operation: `success` is `(status, description, schema or None)`.
fn operation(
    id: &str,
    summary: &str,
    tag: &str,
    request: Option<&str>,
    success: (&str, &str, Option<&str>),
    errors: &[&str],
) -> Value {
    let mut responses = error_responses(errors);
    let mut ok = json!({ "description": success.1 });
    if let Some(schema) = success.2 {
        ok["content"] = json_content(schema);
    }
    responses.insert(success.0.to_owned(), ok);
    let mut op = json!({
        "operationId": id,
        "summary": summary,
        "tags": [tag],
        "responses": responses,
    });
    if let Some(schema) = request {
        op["requestBody"] = json!({ "required": true, "content": json_content(schema) });
    }
    op
}

fn param(name: &str) -> Value {
    json!({ "$ref": format!("#/components/parameters/{name}") })
}

/// A tenant's answer to an access request (`verb`: approve, deny, revoke).
fn tenant_answer(id: &str, action: &str, summary: &str) -> Value {
    let mut op = operation(
        id,
        &format!(
            "{summary} Needs `{action}` on `arn:nuage:access::<tenant>:request/<id>`. The answer is \
             in the tenant's audit log before it takes effect; one that cannot take effect (the \
             request is in another state) gets a second entry with the error's status."
        ),
        "access approvals (tenant)",
        None,
        (
            "200",
            "The request after the answer.",
            Some("AccessRequest"),
        ),
        &["400", "403", "404", "409"],
    );
    op["security"] = json!([{ "sigv4": [] }]);
    op
}

/// One of the tenant's read operations.
fn tenant_read(id: &str, summary: &str, schema: &str, errors: &[&str]) -> Value {
    let mut op = operation(
        id,
        summary,
        "access approvals (tenant)",
        None,
        ("200", "The answer.", Some(schema)),
        errors,
    );
    op["security"] = json!([{ "sigv4": [] }]);
    op
}

/// The access approval paths ([`ACCESS_OPERATIONS`]).
fn access_paths() -> Value {
    let string = json!({ "type": "string" });
    json!({
    "/access-requests": {
        "get": {
            "parameters": [{
                "name": "tenant", "in": "query", "required": true,
                "description": "The tenant's twelve-digit id or its name.",
                "schema": string
            }],
            "operationId": "listAccessRequests",
            "summary": "Lists a tenant's access requests, newest first, with their states as of now.",
            "tags": ["access approvals (operator)"],
            "responses": {
                "200": { "description": "The requests.", "content": json_content("AccessRequestList") },
                "400": { "$ref": "#/components/responses/BadRequest" },
                "401": { "$ref": "#/components/responses/Unauthorized" },
                "404": { "$ref": "#/components/responses/NotFound" },
                "500": { "$ref": "#/components/responses/InternalError" }
            }
        },
        "post": operation("createAccessRequest",
            "Asks a tenant for time-boxed access to named S3 and KMS resources. The request is \
             in the tenant's audit log (`nuage:RequestAccess`) before it exists; if the log \
             cannot take it, there is no request (500 `AuditLogUnavailable`). At most 100 \
             wait on one tenant (409 `LimitExceeded`).",
            "access approvals (operator)", Some("CreateAccessRequest"),
            ("201", "The new request, PENDING.", Some("AccessRequest")),
            &["400", "401", "404", "409", "413"])
    },
    "/access-requests/{id}": {
        "parameters": [param("AccessRequestId")],
        "get": operation("getAccessRequest", "Shows one access request.",
            "access approvals (operator)", None,
            ("200", "The request.", Some("AccessRequest")), &["401", "404"])
    },
    "/access-requests/{id}/credentials": {
        "parameters": [param("AccessRequestId")],
        "post": operation("getAccessCredentials",
            "Issues temporary credentials for an APPROVED request: a session ending with the \
             approval whose only policy is the approval's. Refused (403 `AccessDenied`) in any \
             other state. Each issuance and refusal is in the tenant's audit log.",
            "access approvals (operator)", None,
            ("200", "The session's credentials.", Some("AccessCredentials")),
            &["401", "403", "404"])
    },
    "/requests": {
        "servers": [{ "url": ACCESS_TENANT_SERVER }],
        "get": tenant_read("tenantListAccessRequests",
            "Lists the caller's tenant's access requests (`nuage:ListAccessRequests` on \
             `arn:nuage:access::<tenant>:request/*`).",
            "AccessRequestList", &["400", "403"])
    },
    "/requests/{id}": {
        "servers": [{ "url": ACCESS_TENANT_SERVER }],
        "parameters": [param("AccessRequestId")],
        "get": tenant_read("tenantGetAccessRequest",
            "Shows one of the tenant's access requests (`nuage:ListAccessRequests`).",
            "AccessRequest", &["400", "403", "404"])
    },
    "/requests/{id}/approve": {
        "servers": [{ "url": ACCESS_TENANT_SERVER }],
        "parameters": [param("AccessRequestId")],
        "post": tenant_answer("approveAccessRequest", "nuage:ApproveAccessRequest",
            "Approves a PENDING request: it is APPROVED for its duration from now.")
    },
    "/requests/{id}/deny": {
        "servers": [{ "url": ACCESS_TENANT_SERVER }],
        "parameters": [param("AccessRequestId")],
        "post": tenant_answer("denyAccessRequest", "nuage:DenyAccessRequest",
            "Denies a PENDING request.")
    },
    "/requests/{id}/revoke": {
        "servers": [{ "url": ACCESS_TENANT_SERVER }],
        "parameters": [param("AccessRequestId")],
        "post": tenant_answer("revokeAccessRequest", "nuage:RevokeAccessRequest",
            "Ends an APPROVED request early: every request with its sessions is refused from now on.")
    }
    })
}

/// The access approval schemas.
fn access_schemas() -> Value {
    let string = json!({ "type": "string" });
    let strings = json!({ "type": "array", "items": { "type": "string" } });
    json!({
    "AccessRequestState": {
        "type": "string",
        "enum": ["PENDING", "APPROVED", "DENIED", "REVOKED", "EXPIRED"]
    },
    "AccessRequest": {
        "type": "object",
        "required": ["id", "arn", "tenant", "state", "resources", "actions", "justification",
            "reason_text", "duration_seconds", "requested_by", "requested_unix_ns"],
        "properties": {
            "id": string,
            "arn": { "type": "string", "example": "arn:nuage:access::123456789012:request/123456789012-ABCDEFGHIJKLMNOP" },
            "tenant": { "type": "string", "pattern": "^[0-9]{12}$" },
            "state": { "$ref": "#/components/schemas/AccessRequestState" },
            "resources": strings,
            "actions": strings,
            "justification": { "type": "string", "example": "CUSTOMER_INITIATED_SUPPORT" },
            "reason_text": string,
            "duration_seconds": { "type": "integer", "minimum": 1 },
            "requested_by": string,
            "requested_unix_ns": { "type": "integer", "format": "int64" },
            "decided_by": { "type": "string", "nullable": true },
            "decided_unix_ns": { "type": "integer", "format": "int64", "nullable": true },
            "expires_unix_ns": {
                "type": "integer", "format": "int64", "nullable": true,
                "description": "When an approval ends."
            },
            "revoked_by": { "type": "string", "nullable": true },
            "revoked_unix_ns": { "type": "integer", "format": "int64", "nullable": true }
        }
    },
    "AccessRequestList": {
        "type": "object",
        "required": ["access_requests"],
        "properties": {
            "access_requests": { "type": "array", "items": { "$ref": "#/components/schemas/AccessRequest" } }
        }
    },
    "CreateAccessRequest": {
        "type": "object",
        "additionalProperties": false,
        "required": ["tenant", "resources", "actions", "justification", "duration_seconds"],
        "properties": {
            "tenant": { "type": "string", "description": "The tenant's id or name." },
            "resources": {
                "type": "array", "minItems": 1, "maxItems": 20, "items": string,
                "description": "S3 bucket or object ARNs and KMS key ARNs of the tenant."
            },
            "actions": {
                "type": "array", "minItems": 1, "maxItems": 20,
                "items": { "type": "string", "example": "s3:GetObject" },
                "description": "`s3:` and `kms:` actions only."
            },
            "justification": {
                "type": "string",
                "enum": ["CUSTOMER_INITIATED_SUPPORT", "OPERATOR_INITIATED_SERVICE",
                    "OPERATOR_INITIATED_REVIEW", "OPERATOR_INITIATED_SYSTEM_OPERATION",
                    "THIRD_PARTY_DATA_REQUEST", "REASON_NOT_EXPECTED"]
            },
            "reason_text": { "type": "string", "maxLength": 1024, "default": "" },
            "duration_seconds": {
                "type": "integer", "minimum": 900, "maximum": 28800,
                "description": "How long an approval lasts, from the moment of approval."
            },
            "requested_by": { "type": "string", "maxLength": 1024, "default": "operator" }
        }
    },
    "AccessCredentials": {
        "type": "object",
        "required": ["approval_id", "tenant", "access_key_id", "secret_access_key",
            "session_token", "expires_unix_ns"],
        "properties": {
            "approval_id": string,
            "tenant": string,
            "access_key_id": string,
            "secret_access_key": string,
            "session_token": string,
            "expires_unix_ns": { "type": "integer", "format": "int64" }
        }
    }
    })
}

/// Adds the members of the object `more` to the object `into`.
fn extend(into: &mut Value, more: Value) {
    if let (Some(into), Value::Object(more)) = (into.as_object_mut(), more) {
        into.extend(more);
    }
}

/// The document.
#[must_use]
#[allow(clippy::too_many_lines)] // One literal document reads best in one place.
pub fn document() -> Value {
    let string = json!({ "type": "string" });
    let timestamp = json!({ "type": "string", "format": "date-time" });
    let strings = json!({ "type": "array", "items": { "type": "string" } });
    let count = json!({ "type": "integer", "minimum": 0 });
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Nuage admin API",
            "version": "1",
            "description": "The platform operator's API: tenants, their users and access keys. \
                Every operation but this document needs `Authorization: Bearer <operator token>`; \
                the token is in the server's `operator-credentials.toml`. The operator manages \
                identities and can delete a tenant's data, but cannot read it."
        },
        "servers": [{ "url": ADMIN_SERVER }],
        "security": [{ "operatorToken": [] }],
        "tags": [
            { "name": "tenants" }, { "name": "users" }, { "name": "access keys" }, { "name": "meta" },
            { "name": "residency" }, { "name": "cluster", "description": "Storage nodes, drains, repair and scrub passes (docs/storage-nodes.md)." },
            {
                "name": "access approvals (operator)",
                "description": "The operator asks a tenant for access to named data (docs/access-approval.md)."
            },
            {
                "name": "access approvals (tenant)",
                "description": "The tenant answers, signing with SigV4 as one of its principals; \
                    served under /_nuage/access/v1."
            }
        ],
        "paths": {
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This document (no token needed).",
                    "tags": ["meta"],
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The OpenAPI 3.0 document.",
                            "content": { "application/json": { "schema": { "type": "object" } } }
                        }
                    }
                }
            },
            "/tenants": {
                "get": operation("listTenants", "Lists every tenant.", "tenants", None,
                    ("200", "The tenants.", Some("TenantList")), &["401"]),
                "post": operation("createTenant", "Creates a tenant.", "tenants",
                    Some("CreateTenantRequest"), ("201", "The new tenant.", Some("Tenant")),
                    &["400", "401", "409", "413"])
            },
            "/tenants/{tenant}": {
                "parameters": [param("Tenant")],
                "get": operation("getTenant", "Shows a tenant.", "tenants", None,
                    ("200", "The tenant.", Some("Tenant")), &["401", "404"]),
                "delete": {
                    "parameters": [param("Purge")],
                    "operationId": "deleteTenant",
                    "summary": "Deletes a tenant and all its identities. Refused (409) while it owns \
                        buckets, unless `purge=true`, which deletes every object version, delete \
                        marker, in-progress upload and bucket it owns. The tenant is suspended \
                        first; after the purge, its keys are crypto-shredded (its tenant key, every \
                        KMS key with all its material versions, its external key stores), so no \
                        copy of its blobs anywhere can be decrypted; then it is deleted. A failure \
                        leaves it suspended, and the same request finishes the job.",
                    "tags": ["tenants"],
                    "responses": {
                        "200": { "description": "The tenant is gone.", "content": json_content("TenantDeletion") },
                        "400": { "$ref": "#/components/responses/BadRequest" },
                        "401": { "$ref": "#/components/responses/Unauthorized" },
                        "404": { "$ref": "#/components/responses/NotFound" },
                        "409": { "$ref": "#/components/responses/Conflict" },
                        "500": { "$ref": "#/components/responses/InternalError" }
                    }
                }
            },
            "/tenants/{tenant}/suspend": {
                "parameters": [param("Tenant")],
                "post": operation("suspendTenant",
                    "Suspends a tenant: every credential of the tenant is refused from the next request on.",
                    "tenants", None, ("200", "The tenant, now Suspended.", Some("Tenant")), &["401", "404"])
            },
            "/tenants/{tenant}/resume": {
                "parameters": [param("Tenant")],
                "post": operation("resumeTenant", "Resumes a suspended tenant.", "tenants", None,
                    ("200", "The tenant, now Active.", Some("Tenant")), &["401", "404"])
            },
            "/tenants/{tenant}/public-access-block": {
                "parameters": [param("Tenant")],
                "get": operation("getTenantPublicAccessBlock",
                    "Shows the tenant-wide Block Public Access settings.", "tenants", None,
                    ("200", "The settings.", Some("PublicAccessBlock")), &["401", "404"]),
                "put": operation("putTenantPublicAccessBlock",
                    "Sets the tenant-wide Block Public Access settings, which apply to every bucket of \
                     the tenant on top of the bucket's own: `block_public_policy` refuses bucket policies \
                     that grant access to everyone (AccessDenied); `restrict_public_buckets` makes such \
                     policies grant nothing to anonymous callers and other tenants. Both fields are required.",
                    "tenants", Some("PublicAccessBlock"), ("200", "The settings now in force.",
                    Some("PublicAccessBlock")), &["400", "401", "404", "413"])
            },
            "/tenants/{tenant}/users": {
                "parameters": [param("Tenant")],
                "get": operation("listUsers", "Lists the tenant's users.", "users", None,
                    ("200", "The users.", Some("UserList")), &["401", "404"]),
                "post": operation("createUser",
                    "Creates a user; `administrator: true` attaches the inline policy AdministratorAccess \
                     (everything, within the tenant).",
                    "users", Some("CreateUserRequest"), ("201", "The new user.", Some("User")),
                    &["400", "401", "404", "409", "413"])
            },
            "/tenants/{tenant}/users/{user}": {
                "parameters": [param("Tenant"), param("User")],
                "get": operation("getUser", "Shows a user.", "users", None,
                    ("200", "The user.", Some("User")), &["401", "404"]),
                "delete": operation("deleteUser",
                    "Deletes a user with its access keys and policies, after removing it from its groups.",
                    "users", None, ("204", "The user is gone.", None), &["401", "404", "409"])
            },
            "/tenants/{tenant}/users/{user}/keys": {
                "parameters": [param("Tenant"), param("User")],
                "get": operation("listAccessKeys", "Lists a user's access keys (without secrets).",
                    "access keys", None, ("200", "The keys.", Some("AccessKeyList")), &["401", "404"]),
                "post": operation("createAccessKey",
                    "Creates an access key (at most two per user). The secret is in this response only.",
                    "access keys", None, ("201", "The new key with its secret.", Some("NewAccessKey")),
                    &["401", "404", "409"])
            },
            "/tenants/{tenant}/users/{user}/keys/{access_key_id}": {
                "parameters": [param("Tenant"), param("User"), param("AccessKeyId")],
                "patch": operation("updateAccessKey",
                    "Activates or deactivates a key, from the next request on.", "access keys",
                    Some("UpdateAccessKeyRequest"), ("200", "The key.", Some("AccessKey")),
                    &["400", "401", "404", "413"]),
                "delete": operation("deleteAccessKey", "Deletes a key.", "access keys", None,
                    ("204", "The key is gone.", None), &["401", "404"])
            }
        },
        "components": {
            "securitySchemes": {
                "operatorToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The token in the server's operator-credentials.toml."
                },
                "sigv4": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "AWS Signature Version 4 (credential scope service `access`, or \
                        `s3`) by a principal of the tenant, over an empty body; with \
                        `x-amz-security-token` for temporary credentials."
                }
            },
            "parameters": {
                "Tenant": {
                    "name": "tenant", "in": "path", "required": true,
                    "description": "The tenant's twelve-digit id or its name.",
                    "schema": string
                },
                "User": {
                    "name": "user", "in": "path", "required": true,
                    "description": "The user's name.", "schema": string
                },
                "AccessKeyId": {
                    "name": "access_key_id", "in": "path", "required": true, "schema": string
                },
                "AccessRequestId": {
                    "name": "id", "in": "path", "required": true,
                    "description": "The access request's id (`<tenant id>-<16 characters>`).",
                    "schema": string
                },
                "Purge": {
                    "name": "purge", "in": "query", "required": false,
                    "description": "Delete all the tenant's data first.",
                    "schema": { "type": "boolean", "default": false }
                }
            },
            "responses": {
                "BadRequest": { "description": "Malformed request.", "content": json_content("Error") },
                "Unauthorized": { "description": "Missing or wrong operator token.", "content": json_content("Error") },
                "Forbidden": {
                    "description": "Refused: not authorized (`AccessDenied`), a bad signature or session \
                        token (`SignatureDoesNotMatch`, `InvalidAccessKeyId`, `InvalidToken`, \
                        `ExpiredToken`, `RequestExpired`), or a request not in a state that allows it.",
                    "content": json_content("Error")
                },
                "NotFound": { "description": "No such tenant, user, key or endpoint.", "content": json_content("Error") },
                "Conflict": {
                    "description": "Already exists, limit reached, still in use (a tenant owning buckets), \
                        or an access request not in a state the answer applies to (`InvalidState`).",
                    "content": json_content("Error")
                },
                "TooLarge": { "description": "Request body too large.", "content": json_content("Error") },
                "Unprocessable": {
                    "description": "A residency policy that does not narrow its tenant's \
                        (`PolicyNotNarrower`) or that the topology cannot satisfy \
                        (`ResidencyUnsatisfiable`); the error object adds `rule` and `reason`.",
                    "content": json_content("Error")
                },
                "InternalError": { "description": "Server failure; details in the server log.", "content": json_content("Error") }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {
                                    "type": "string",
                                    "example": "NoSuchEntity",
                                    "description": "InvalidInput, Unauthorized, NoSuchEntity, NotFound, \
                                        MethodNotAllowed, EntityAlreadyExists, DeleteConflict, LimitExceeded, \
                                        RequestTooLarge, InternalError, ..."
                                },
                                "message": string,
                                "rule": {
                                    "type": "string",
                                    "description": "Residency refusals: the rule (location, qualifications, \
                                        operator_control, durability, min_sites)."
                                },
                                "reason": { "type": "string" },
                                "buckets": {
                                    "type": "array", "items": { "type": "string" },
                                    "description": "ResidencyConflict: the buckets that would not comply."
                                }
                            }
                        }
                    }
                },
                "TenantStatus": { "type": "string", "enum": ["Active", "Suspended"] },
                "Tenant": {
                    "type": "object",
                    "required": ["id", "name", "legal_country", "billing_contact", "status", "created_at", "bucket_count", "public_access_block"],
                    "properties": {
                        "id": { "type": "string", "pattern": "^[0-9]{12}$" },
                        "name": string,
                        "legal_country": { "type": "string", "pattern": "^[A-Z]{2}$" },
                        "billing_contact": string,
                        "status": { "$ref": "#/components/schemas/TenantStatus" },
                        "created_at": timestamp,
                        "bucket_count": count,
                        "public_access_block": { "$ref": "#/components/schemas/PublicAccessBlock" }
                    }
                },
                "PublicAccessBlock": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["block_public_policy", "restrict_public_buckets"],
                    "properties": {
                        "block_public_policy": {
                            "type": "boolean",
                            "description": "Refuse bucket policies that grant access to everyone."
                        },
                        "restrict_public_buckets": {
                            "type": "boolean",
                            "description": "Public bucket policies grant nothing to anonymous callers or other tenants."
                        }
                    }
                },
                "TenantList": {
                    "type": "object",
                    "required": ["tenants"],
                    "properties": {
                        "tenants": { "type": "array", "items": { "$ref": "#/components/schemas/Tenant" } }
                    }
                },
                "CreateTenantRequest": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["name", "legal_country"],
                    "properties": {
                        "name": { "type": "string", "pattern": "^[A-Za-z0-9+=,.@_-]{1,64}$" },
                        "legal_country": { "type": "string", "pattern": "^[A-Z]{2}$", "example": "FR" },
                        "billing_contact": { "type": "string", "default": "" }
                    }
                },
                "PurgeReport": {
                    "type": "object",
                    "required": ["buckets", "object_versions", "uploads"],
                    "properties": { "buckets": count, "object_versions": count, "uploads": count }
                },
                "ShredReport": {
                    "type": "object",
                    "description": "What crypto-shredding the tenant destroyed. Counts are of this \
                        request: a rerun after a failure counts what was left.",
                    "required": ["tenant_key", "kms_keys", "kms_material_versions", "external_key_stores"],
                    "properties": {
                        "tenant_key": {
                            "type": "boolean",
                            "description": "The tenant key (which wraps its SSE-S3 data keys) existed and was destroyed."
                        },
                        "kms_keys": count,
                        "kms_material_versions": count,
                        "external_key_stores": count
                    }
                },
                "TenantDeletion": {
                    "type": "object",
                    "required": ["tenant", "shredded"],
                    "properties": {
                        "tenant": { "$ref": "#/components/schemas/Tenant" },
                        "purged": {
                            "nullable": true,
                            "allOf": [{ "$ref": "#/components/schemas/PurgeReport" }]
                        },
                        "shredded": { "$ref": "#/components/schemas/ShredReport" }
                    }
                },
                "User": {
                    "type": "object",
                    "required": ["name", "id", "arn", "path", "created_at", "inline_policies", "attached_policies", "groups"],
                    "properties": {
                        "name": string,
                        "id": string,
                        "arn": string,
                        "path": string,
                        "created_at": timestamp,
                        "inline_policies": strings,
                        "attached_policies": strings,
                        "groups": strings
                    }
                },
                "UserList": {
                    "type": "object",
                    "required": ["users"],
                    "properties": {
                        "users": { "type": "array", "items": { "$ref": "#/components/schemas/User" } }
                    }
                },
                "CreateUserRequest": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["name"],
                    "properties": {
                        "name": { "type": "string", "pattern": "^[A-Za-z0-9+=,.@_-]{1,64}$" },
                        "administrator": { "type": "boolean", "default": false }
                    }
                },
                "AccessKeyStatus": { "type": "string", "enum": ["Active", "Inactive"] },
                "AccessKey": {
                    "type": "object",
                    "required": ["access_key_id", "tenant_id", "user_name", "status", "created_at"],
                    "properties": {
                        "access_key_id": string,
                        "tenant_id": string,
                        "user_name": string,
                        "status": { "$ref": "#/components/schemas/AccessKeyStatus" },
                        "created_at": timestamp,
                        "last_used_at": { "type": "string", "format": "date-time", "nullable": true }
                    }
                },
                "NewAccessKey": {
                    "allOf": [
                        { "$ref": "#/components/schemas/AccessKey" },
                        {
                            "type": "object",
                            "required": ["secret_access_key"],
                            "properties": { "secret_access_key": string }
                        }
                    ]
                },
                "AccessKeyList": {
                    "type": "object",
                    "required": ["access_keys"],
                    "properties": {
                        "access_keys": { "type": "array", "items": { "$ref": "#/components/schemas/AccessKey" } }
                    }
                },
                "UpdateAccessKeyRequest": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["status"],
                    "properties": { "status": { "$ref": "#/components/schemas/AccessKeyStatus" } }
                }
            }
        }
    });
    extend(&mut doc["paths"], access_paths());
    extend(&mut doc["components"]["schemas"], access_schemas());
    extend(&mut doc["paths"], residency_paths());
    extend(&mut doc["components"]["schemas"], residency_schemas());
    extend(&mut doc["paths"], cluster_paths());
    extend(&mut doc["components"]["schemas"], cluster_schemas());
    extend(
        &mut doc["components"]["parameters"],
        json!({ "Node": {
            "name": "node", "in": "path", "required": true,
            "description": "A storage node's id, as in the topology.",
            "schema": { "type": "string" }
        }}),
    );
    extend(
        &mut doc["components"]["parameters"],
        json!({ "Bucket": {
            "name": "bucket", "in": "path", "required": true,
            "description": "The bucket's name; the tenant must own it.",
            "schema": { "type": "string" }
        }}),
    );
    doc
}

/// `/tenants/{tenant}/residency` and `/tenants/{tenant}/buckets/{bucket}/residency`
/// (`docs/residency.md`).
fn residency_paths() -> Value {
    json!({
        "/tenants/{tenant}/residency": {
            "parameters": [param("Tenant")],
            "get": operation("getTenantResidency",
                "Shows the tenant's residency policy (null: none) and, per region of the topology, \
                 whether its sites can satisfy it.",
                "residency", None, ("200", "The policy.", Some("TenantResidency")), &["401", "404"]),
            "put": operation("putTenantResidency",
                "Sets the tenant's residency policy. Refused (409 `ResidencyConflict`, listing them) \
                 when a bucket's own policy would no longer narrow it or a bucket following it sits in \
                 a region that cannot satisfy it; 422 `ResidencyUnsatisfiable` when no region can.",
                "residency", Some("ResidencyPolicy"), ("200", "The policy now in force.",
                Some("TenantResidency")), &["400", "401", "404", "409", "413", "422"]),
            "delete": operation("deleteTenantResidency",
                "Removes the tenant's residency policy: its buckets are bounded by their own policies \
                 and regions only.",
                "residency", None, ("204", "Removed.", None), &["401", "404"])
        },
        "/tenants/{tenant}/buckets/{bucket}/residency": {
            "parameters": [param("Tenant"), param("Bucket")],
            "get": operation("getBucketResidency",
                "Shows the bucket's own residency policy, the effective one (its own, else its \
                 tenant's) and whether the bucket's region can satisfy it.",
                "residency", None, ("200", "The policies.", Some("BucketResidency")), &["401", "404"]),
            "put": operation("putBucketResidency",
                "Sets the bucket's own residency policy, which must narrow its tenant's (422 \
                 `PolicyNotNarrower` with the rule) and be satisfiable in the bucket's region (422 \
                 `ResidencyUnsatisfiable`).",
                "residency", Some("ResidencyPolicy"), ("200", "The policies now in force.",
                Some("BucketResidency")), &["400", "401", "404", "413", "422"]),
            "delete": operation("deleteBucketResidency",
                "Removes the bucket's own policy: its tenant's applies.",
                "residency", None, ("204", "Removed.", None), &["401", "404"])
        }
    })
}

/// The cluster's operations and a bucket's compliance (docs/storage-nodes.md,
/// "Operating a cluster"). On a server without `[cluster]`: 409 `NotACluster`.
fn cluster_paths() -> Value {
    json!({
        "/tenants/{tenant}/buckets/{bucket}/residency/compliance": {
            "parameters": [param("Tenant"), param("Bucket")],
            "get": operation("getBucketCompliance",
                "Checks every blob of the bucket against its effective residency policy now (its own, \
                 else its tenant's, else the cluster's default) and the nodes' states: `compliant` is \
                 false while a narrowing's migration or a repair is unfinished, with the replicas left \
                 to move or restore. A walk of the whole location index.",
                "cluster", None, ("200", "The bucket's compliance.", Some("BucketCompliance")),
                &["401", "404", "409"])
        },
        "/cluster/nodes": {
            "get": operation("listClusterNodes",
                "The topology's storage nodes as this gateway last polled them: up, down (with why) \
                 or draining, and their space.",
                "cluster", None, ("200", "The nodes.", Some("ClusterNodes")), &["401", "409"])
        },
        "/cluster/nodes/{node}": {
            "parameters": [param("Node")],
            "get": operation("getClusterNode",
                "One node, with the replicas the location index still places on it (a drain is \
                 finished when there are none).",
                "cluster", None, ("200", "The node.", Some("ClusterNode")), &["401", "404", "409"])
        },
        "/cluster/nodes/{node}/drain": {
            "parameters": [param("Node")],
            "put": operation("drainClusterNode",
                "Drains the node, for every gateway of the cluster: nothing new is placed on it, its \
                 replicas stay readable, and repair passes move them to compliant nodes.",
                "cluster", None, ("200", "The node.", Some("ClusterNode")), &["401", "404", "409"]),
            "delete": operation("undrainClusterNode",
                "Ends the node's drain: it takes new replicas again.",
                "cluster", None, ("200", "The node.", Some("ClusterNode")), &["401", "404", "409"])
        },
        "/cluster/repair": {
            "post": operation("runRepair",
                "Runs one repair pass now on this gateway (409 when `cluster.repair` is off here: \
                 another gateway repairs). Each copy and removal is in its tenant's audit log first.",
                "cluster", None, ("200", "What the pass did.", Some("RepairReport")), &["401", "409"])
        },
        "/cluster/scrub": {
            "post": operation("runScrub",
                "Runs one scrub pass now on this gateway: every replica is verified by its node \
                 against the recorded length and SHA-256, bad ones are replaced from good ones on \
                 compliant nodes, and files no index entry accounts for are removed after a grace.",
                "cluster", None, ("200", "What the pass did.", Some("ScrubReport")), &["401", "409"])
        }
    })
}

fn cluster_schemas() -> Value {
    let string = json!({ "type": "string" });
    let count = json!({ "type": "integer", "minimum": 0 });
    let failures = json!({ "type": "array", "description": "`[blob_id, why]` pairs, the first few.",
        "items": { "type": "array", "items": { "type": "string" } } });
    json!({
        "ClusterNode": {
            "type": "object",
            "required": ["node", "site", "country", "status", "draining"],
            "properties": {
                "node": string, "site": string, "country": string,
                "status": { "type": "string", "enum": ["up", "down", "draining"] },
                "draining": { "type": "boolean" },
                "down_reason": string,
                "writable_bytes": count, "used_bytes": count, "blob_count": count,
                "polled_ms": count,
                "replicas": { "type": "object", "description": "On GET /cluster/nodes/{node}: what the \
                    location index still places there.", "properties": {
                    "replicas": count, "bytes": count } }
            }
        },
        "ClusterNodes": {
            "type": "object",
            "required": ["nodes"],
            "properties": { "nodes": { "type": "array", "items": { "$ref": "#/components/schemas/ClusterNode" } } }
        },
        "RepairReport": {
            "type": "object",
            "properties": {
                "scanned": count, "repaired": count, "copied": count, "removed": count,
                "failures": failures, "failed_count": count
            }
        },
        "ScrubReport": {
            "type": "object",
            "properties": {
                "scanned": count, "verified": count, "bytes_verified": count, "bad": count,
                "replaced": count, "orphans_removed": count, "failures": failures,
                "failed_count": count
            }
        },
        "BucketCompliance": {
            "type": "object",
            "required": ["bucket", "compliant", "blobs"],
            "properties": {
                "tenant": string, "bucket": string,
                "policy": { "allOf": [{ "$ref": "#/components/schemas/ResidencyPolicy" }], "nullable": true },
                "policy_source": { "type": "string", "enum": ["bucket", "tenant", "default"] },
                "compliant": { "type": "boolean" },
                "blobs": count, "bytes": count, "compliant_blobs": count,
                "non_compliant_blobs": count, "replicas_to_move": count, "replicas_missing": count,
                "issues": { "type": "array", "items": { "type": "object", "properties": {
                    "blob_id": string, "reason": string } } },
                "scanned": count
            }
        }
    })
}

fn residency_schemas() -> Value {
    let string = json!({ "type": "string" });
    let strings = json!({ "type": "array", "items": { "type": "string" } });
    json!({
        "ResidencyPolicy": {
            "type": "object",
            "additionalProperties": false,
            "required": ["durability"],
            "description": "nuage-placement's policy (docs/residency.md). At least one allowed \
                country or jurisdiction.",
            "properties": {
                "allowed_countries": strings,
                "allowed_jurisdictions": strings,
                "required_qualifications": strings,
                "allowed_operator_countries": strings,
                "durability": {
                    "type": "object",
                    "description": "`{\"replicas\": n}` or `{\"erasure_coding\": {\"data\": k, \"parity\": m}}`."
                },
                "min_sites": { "type": "integer", "minimum": 1, "default": 1 }
            }
        },
        "RegionFeasibility": {
            "type": "object",
            "required": ["region", "satisfiable"],
            "properties": {
                "region": string,
                "satisfiable": { "type": "boolean" },
                "rule": string,
                "reason": string
            }
        },
        "TenantResidency": {
            "type": "object",
            "required": ["tenant", "policy"],
            "properties": {
                "tenant": string,
                "policy": { "allOf": [{ "$ref": "#/components/schemas/ResidencyPolicy" }], "nullable": true },
                "regions": { "type": "array", "items": { "$ref": "#/components/schemas/RegionFeasibility" } }
            }
        },
        "BucketResidency": {
            "type": "object",
            "required": ["tenant", "bucket", "region", "policy", "effective", "effective_source"],
            "properties": {
                "tenant": string,
                "bucket": string,
                "region": string,
                "policy": { "allOf": [{ "$ref": "#/components/schemas/ResidencyPolicy" }], "nullable": true },
                "effective": { "allOf": [{ "$ref": "#/components/schemas/ResidencyPolicy" }], "nullable": true },
                "effective_source": { "type": "string", "enum": ["bucket", "tenant", "none"] },
                "feasibility": { "$ref": "#/components/schemas/RegionFeasibility" }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Endpoint;
    use std::collections::BTreeSet;

    /// One instance of every endpoint; the match in `Endpoint::operation`
    /// makes a new variant impossible to forget there, and this list is
    /// checked against it by counting the document's operations.
    fn every_endpoint() -> Vec<Endpoint> {
        let t = || "acme".to_owned();
        let u = || "alice".to_owned();
        let k = || "NUAKEXAMPLE".to_owned();
        vec![
            Endpoint::OpenApi,
            Endpoint::ListTenants,
            Endpoint::CreateTenant,
            Endpoint::GetTenant { tenant: t() },
            Endpoint::SuspendTenant { tenant: t() },
            Endpoint::ResumeTenant { tenant: t() },
            Endpoint::GetTenantPublicAccessBlock { tenant: t() },
            Endpoint::PutTenantPublicAccessBlock { tenant: t() },
            Endpoint::DeleteTenant {
                tenant: t(),
                purge: false,
            },
            Endpoint::GetTenantResidency { tenant: t() },
            Endpoint::PutTenantResidency { tenant: t() },
            Endpoint::DeleteTenantResidency { tenant: t() },
            Endpoint::GetBucketResidency {
                tenant: t(),
                bucket: "photos".into(),
            },
            Endpoint::PutBucketResidency {
                tenant: t(),
                bucket: "photos".into(),
            },
            Endpoint::DeleteBucketResidency {
                tenant: t(),
                bucket: "photos".into(),
            },
            Endpoint::GetBucketCompliance {
                tenant: t(),
                bucket: "photos".into(),
            },
            Endpoint::ListClusterNodes,
            Endpoint::GetClusterNode {
                node: "fr-1".into(),
            },
            Endpoint::DrainClusterNode {
                node: "fr-1".into(),
            },
            Endpoint::UndrainClusterNode {
                node: "fr-1".into(),
            },
            Endpoint::RunRepair,
            Endpoint::RunScrub,
            Endpoint::ListUsers { tenant: t() },
            Endpoint::CreateUser { tenant: t() },
            Endpoint::GetUser {
                tenant: t(),
                user: u(),
            },
            Endpoint::DeleteUser {
                tenant: t(),
                user: u(),
            },
            Endpoint::ListKeys {
                tenant: t(),
                user: u(),
            },
            Endpoint::CreateKey {
                tenant: t(),
                user: u(),
            },
            Endpoint::UpdateKey {
                tenant: t(),
                user: u(),
                key: k(),
            },
            Endpoint::DeleteKey {
                tenant: t(),
                user: u(),
                key: k(),
            },
        ]
    }

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, _) in item.as_object().expect("path item") {
                if METHODS.contains(&method.as_str()) {
                    out.insert((method.to_ascii_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn the_document_lists_exactly_the_routed_operations() {
        let doc = document();
        let documented = documented_operations(&doc);
        let routed: BTreeSet<(String, String)> = every_endpoint()
            .iter()
            .map(|e| {
                let (method, template) = e.operation();
                (method.to_string(), template.to_owned())
            })
            .collect();
        let access: BTreeSet<(String, String)> = ACCESS_OPERATIONS
            .iter()
            .map(|(method, path, _)| ((*method).to_owned(), (*path).to_owned()))
            .collect();
        assert!(routed.is_disjoint(&access));
        assert_eq!(documented, routed.union(&access).cloned().collect());
        // The tenant's half says where it is served; the rest is under the
        // document's own server.
        for (_, path, prefix) in ACCESS_OPERATIONS {
            let servers = &doc["paths"][*path]["servers"];
            if *prefix == ACCESS_TENANT_SERVER {
                assert_eq!(servers[0]["url"], *prefix, "{path}");
            } else {
                assert!(servers.is_null(), "{path}");
                assert_eq!(doc["servers"][0]["url"], *prefix);
            }
        }
        // And each template, filled in, routes back to an endpoint of that shape.
        for endpoint in every_endpoint() {
            let (method, template) = endpoint.operation();
            let path = format!(
                "/_nuage/admin/v1{}",
                template
                    .replace("{tenant}", "acme")
                    .replace("{user}", "alice")
                    .replace("{access_key_id}", "NUAKEXAMPLE")
                    .replace("{bucket}", "photos")
                    .replace("{node}", "fr-1")
            );
            let parsed = Endpoint::parse(&method, &path, None).expect("documented path routes");
            assert_eq!(parsed, endpoint, "{method} {path}");
        }
    }

    fn collect_refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == "$ref" {
                        out.push(v.as_str().expect("$ref is a string").to_owned());
                    } else {
                        collect_refs(v, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }

    fn resolve<'d>(doc: &'d Value, reference: &str) -> Option<&'d Value> {
        doc.pointer(reference.strip_prefix('#')?)
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(refs.len() > 20, "the document uses its components");
        for r in refs {
            assert!(r.starts_with("#/components/"), "{r}");
            assert!(resolve(&doc, &r).is_some(), "dangling reference {r}");
        }
    }

    #[test]
    fn every_path_parameter_is_declared() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            let declared: BTreeSet<String> = item
                .get("parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| match p.get("$ref").and_then(Value::as_str) {
                    Some(r) => resolve(&doc, r).expect("parameter ref"),
                    None => p,
                })
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().expect("name").to_owned())
                .collect();
            let used: BTreeSet<String> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .map(str::to_owned)
                .collect();
            assert_eq!(declared, used, "{path}");
        }
    }

    #[test]
    fn the_document_is_openapi_3_0() {
        let text = serde_json::to_string(&document()).expect("serializes");
        let parsed: openapiv3::OpenAPI = serde_json::from_str(&text).expect("valid OpenAPI 3.0");
        assert!(parsed.openapi.starts_with("3.0."));
        let components = parsed.components.expect("components");
        assert!(components.schemas.contains_key("Tenant"));
        assert!(components.security_schemes.contains_key("operatorToken"));
        for (path, item) in &parsed.paths.paths {
            let item = item.as_item().expect("inline path item");
            for (method, op) in item.iter() {
                assert!(
                    op.operation_id.is_some(),
                    "{method} {path} has an operationId"
                );
                assert!(
                    !op.responses.responses.is_empty(),
                    "{method} {path} has responses"
                );
            }
        }
    }
}
