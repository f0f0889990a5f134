//! Every limit Nuage enforces, as a named constant, with the unit last.
//!
//! The S3 limits match what AWS documents so that clients that respect AWS also
//! respect Nuage; the internal ones bound memory and work per request.

/// Largest object S3 accepts: 5 TiB.
pub const OBJECT_SIZE_BYTES_MAX: u64 = 5 * 1024 * 1024 * 1024 * 1024;
/// Largest single PutObject body (AWS: 5 GiB).
pub const PUT_OBJECT_SIZE_BYTES_MAX: u64 = 5 * 1024 * 1024 * 1024;
/// Largest multipart part (AWS: 5 GiB).
pub const PART_SIZE_BYTES_MAX: u64 = 5 * 1024 * 1024 * 1024;
/// Smallest part other than the last one (AWS: 5 MiB).
pub const PART_SIZE_BYTES_MIN: u64 = 5 * 1024 * 1024;
/// Highest part number (AWS: 10,000).
pub const MULTIPART_PARTS_MAX: u32 = 10_000;
/// Longest object key, in UTF-8 bytes (AWS: 1,024).
pub const KEY_LENGTH_BYTES_MAX: usize = 1024;
/// Total size of user metadata names and values (AWS: 2 KiB).
pub const USER_METADATA_BYTES_MAX: usize = 2 * 1024;
/// Most keys one list page returns (AWS: 1,000).
pub const LIST_KEYS_MAX: usize = 1000;
/// Most parts one ListParts page returns (AWS: 1,000).
pub const LIST_PARTS_MAX: usize = 1000;
/// Most uploads one ListMultipartUploads page returns (AWS: 1,000).
pub const LIST_UPLOADS_MAX: usize = 1000;
/// Most index entries one list request may examine before returning a truncated
/// page; bounds the work of a listing whatever the bucket holds (delete markers
/// and rolled-up prefixes are examined but not returned).
pub const LIST_SCAN_ENTRIES_MAX: usize = 100_000;
/// Most keys in one DeleteObjects request (AWS: 1,000).
pub const DELETE_OBJECTS_KEYS_MAX: usize = 1000;
/// Most tags on an object (AWS: 10).
pub const OBJECT_TAGS_MAX: usize = 10;
/// Most tags on a bucket (AWS: 50).
pub const BUCKET_TAGS_MAX: usize = 50;
/// Longest tag key, in characters (AWS: 128).
pub const TAG_KEY_CHARS_MAX: usize = 128;
/// Longest tag value, in characters (AWS: 256).
pub const TAG_VALUE_CHARS_MAX: usize = 256;
/// Most CORS rules on a bucket (AWS: 100).
pub const CORS_RULES_MAX: usize = 100;
/// Data bytes per checksummed block in the blob format. A range read touches at
/// most two partial blocks; a larger block means fewer checksums per byte.
pub const BLOB_BLOCK_BYTES: usize = 256 * 1024;
/// Largest request header section the HTTP server accepts.
pub const REQUEST_HEADER_BYTES_MAX: usize = 64 * 1024;
/// Largest XML request body (CompleteMultipartUpload with 10,000 parts fits).
pub const XML_BODY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Blocks a streaming read may have in flight between disk and socket.
pub const READ_AHEAD_BLOCKS_MAX: usize = 4;
/// Largest admin API request body: its requests are a few short JSON fields.
pub const ADMIN_REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;
/// Largest IAM/STS query API request body. The largest legitimate request is a
/// role policy (AWS: 10,240 characters) percent-encoded, about 30 KiB.
pub const QUERY_API_BODY_BYTES_MAX: usize = 64 * 1024;
/// Most parameters in one IAM/STS query API request (50 tags take 100).
pub const QUERY_API_PARAMETERS_MAX: usize = 200;
/// How far a signed request's `x-amz-date` may be from our clock (AWS: 15 minutes).
pub const SIGNATURE_CLOCK_SKEW_S_MAX: i64 = 15 * 60;
/// Most tags on an IAM user (AWS: 50).
pub const IAM_TAGS_MAX: usize = 50;
/// Most items one IAM list page returns, and the default page (AWS: 1,000 and 100).
pub const IAM_LIST_ITEMS_MAX: usize = 1000;
pub const IAM_LIST_ITEMS_DEFAULT: usize = 100;
/// Largest KMS JSON API request body. The largest legitimate request is a
/// key policy (Nuage: 20 KiB, as a bucket policy) JSON-escaped, or a 6 KiB
/// ciphertext base64-encoded with encryption contexts.
pub const KMS_REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;
/// Largest plaintext KMS Encrypt accepts (AWS: 4,096 bytes).
pub const KMS_PLAINTEXT_BYTES_MAX: usize = 4096;
/// Largest ciphertext blob KMS Decrypt accepts (AWS: 6,144 bytes).
pub const KMS_CIPHERTEXT_BYTES_MAX: usize = 6144;
/// Most bytes GenerateRandom and GenerateDataKey's NumberOfBytes return (AWS: 1,024).
pub const KMS_RANDOM_BYTES_MAX: usize = 1024;
/// Largest encryption context, keys and values together, in UTF-8 bytes
/// (AWS documents no exact figure; this bounds the AAD built from it).
pub const KMS_ENCRYPTION_CONTEXT_BYTES_MAX: usize = 8 * 1024;
/// Longest KMS key description (AWS: 8,192 characters).
pub const KMS_DESCRIPTION_CHARS_MAX: usize = 8192;
/// Longest alias name, `alias/` included (AWS: 256 characters).
pub const KMS_ALIAS_NAME_CHARS_MAX: usize = 256;
/// Most KMS keys of one tenant, pending deletion included (AWS: 100,000 per account and region).
pub const KMS_KEYS_PER_TENANT_MAX: u32 = 100_000;
/// Most aliases naming one KMS key (AWS: 50).
pub const KMS_ALIASES_PER_KEY_MAX: usize = 50;
/// Most on-demand rotations of one KMS key (AWS: 25, not adjustable).
pub const KMS_ON_DEMAND_ROTATIONS_MAX: usize = 25;
/// Most items one KMS list page returns (AWS: 1,000), and the default pages of
/// ListKeys and ListKeyRotations (AWS: 100) and of ListAliases (AWS: 50).
pub const KMS_LIST_ITEMS_MAX: usize = 1000;
pub const KMS_LIST_ITEMS_DEFAULT: usize = 100;
pub const KMS_LIST_ALIASES_DEFAULT: usize = 50;
/// Most tags on a KMS key (AWS: 50).
pub const KMS_TAGS_MAX: usize = 50;
/// Times a KMS key update is retried when a concurrent write changed the key
/// first (optimistic concurrency); more means sustained contention: refused.
pub const KMS_UPDATE_ATTEMPTS_MAX: usize = 8;
/// Waiting period before a KMS key scheduled for deletion is deleted, in days
/// (AWS: 7 to 30, default 30).
pub const KMS_PENDING_WINDOW_DAYS_MIN: u32 = 7;
pub const KMS_PENDING_WINDOW_DAYS_MAX: u32 = 30;
pub const KMS_PENDING_WINDOW_DAYS_DEFAULT: u32 = 30;
/// Automatic rotation period of a KMS key, in days (AWS: 90 to 2,560, default 365).
pub const KMS_ROTATION_PERIOD_DAYS_MIN: u32 = 90;
pub const KMS_ROTATION_PERIOD_DAYS_MAX: u32 = 2560;
pub const KMS_ROTATION_PERIOD_DAYS_DEFAULT: u32 = 365;
/// Records of deleted (crypto-shredded) KMS keys kept per tenant for
/// `ListShreddedKeys`; past this, recording a deletion drops the oldest
/// record. Each record is small (no key material: ids, dates, counts and the
/// key's description), so this bounds a tenant's records to a few MiB.
pub const KMS_SHREDDED_KEYS_PER_TENANT_MAX: u32 = 10_000;
/// Documents deleted per transaction when a deleted tenant's keys are
/// shredded: bounds each commit, while every commit stays all-or-nothing.
pub const KMS_SHRED_DOCUMENTS_PER_COMMIT_MAX: usize = 256;
/// Most custom key stores (external key stores) of one tenant (AWS: 10 per
/// account and Region).
pub const KMS_CUSTOM_KEY_STORES_PER_TENANT_MAX: usize = 10;
/// Longest custom key store name (AWS: 256 characters).
pub const KMS_CUSTOM_KEY_STORE_NAME_CHARS_MAX: usize = 256;
/// Longest `XksProxyUriEndpoint` (AWS: 128 characters).
pub const XKS_URI_ENDPOINT_CHARS_MAX: usize = 128;
/// Length of an XKS proxy authentication credential's access key id (AWS:
/// 20 to 30 characters of `[A-Z2-7]`).
pub const XKS_ACCESS_KEY_ID_CHARS_MIN: usize = 20;
pub const XKS_ACCESS_KEY_ID_CHARS_MAX: usize = 30;
/// Length of its raw secret access key (AWS: 43 to 64 characters of
/// `[a-zA-Z0-9/+=]`).
pub const XKS_SECRET_ACCESS_KEY_CHARS_MIN: usize = 43;
pub const XKS_SECRET_ACCESS_KEY_CHARS_MAX: usize = 64;
/// Longest wait for one call to an external key store (XKS) proxy, connection,
/// TLS handshake, request and response together. AWS KMS gives a proxy
/// 250 ms; Nuage allows more for a proxy across a WAN, but a read blocked on a
/// dead proxy must fail fast rather than hold the client's request.
pub const XKS_CALL_TIMEOUT_MS_MAX: u64 = 3000;
/// Longest wait for the TCP connection to an XKS proxy, within the call's
/// timeout.
pub const XKS_CONNECT_TIMEOUT_MS_MAX: u64 = 1000;
/// Largest response body Nuage reads from an XKS proxy. The largest legitimate
/// answer is an Encrypt response for 4,300 bytes of plaintext, under 8 KiB
/// base64-encoded.
pub const XKS_RESPONSE_BODY_BYTES_MAX: usize = 64 * 1024;
/// Largest request body the reference XKS proxy (`nuage xks-proxy`) reads.
/// The largest legitimate request is an Encrypt of 4,300 bytes with 8,192
/// bytes of AAD (about 16 KiB base64-encoded) plus request metadata holding
/// ARNs of up to 2,048 characters each.
pub const XKS_REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;
/// Largest plaintext the XKS proxy encrypts (the spec's required minimum,
/// 4,300 bytes; Nuage wraps 32-byte keys).
pub const XKS_PLAINTEXT_BYTES_MAX: usize = 4300;
/// Largest additional authenticated data an XKS call carries (the spec's
/// required minimum, 8,192 bytes).
pub const XKS_AAD_BYTES_MAX: usize = 8192;
/// Largest `ciphertextMetadata` (XKS spec: 20 bytes).
pub const XKS_CIPHERTEXT_METADATA_BYTES_MAX: usize = 20;
/// Longest external key id (XKS spec: 128 characters).
pub const XKS_KEY_ID_CHARS_MAX: usize = 128;
/// Longest `XksProxyUriPath` (XKS spec: 128 characters).
pub const XKS_URI_PATH_CHARS_MAX: usize = 128;
/// Longest ARN in XKS request metadata (XKS spec: 2,048 characters).
pub const XKS_ARN_CHARS_MAX: usize = 2048;
/// Longest `errorMessage` in an XKS error body (XKS spec: under 512).
pub const XKS_ERROR_MESSAGE_CHARS_MAX: usize = 511;
/// How far a request's `x-amz-date` may be from the XKS proxy's clock (XKS
/// spec: requests more than 5 minutes off should fail authentication).
pub const XKS_SIGNATURE_CLOCK_SKEW_S_MAX: i64 = 5 * 60;
/// Largest key state file (`keys.json`) the XKS proxy reads: a few hundred
/// bytes per key.
pub const XKS_STATE_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Most keys the XKS proxy's state file may list (bounds its size and every
/// reread of it).
pub const XKS_KEYS_MAX: usize = 10_000;
/// Most SigV4 credentials the XKS proxy accepts at once (XKS spec: at least
/// two, for rotation).
pub const XKS_CREDENTIALS_MAX: usize = 16;
/// Connections the XKS proxy serves at once; more wait in the accept queue.
pub const XKS_PROXY_CONNECTIONS_MAX: usize = 256;
/// Largest canonical audit log entry, in bytes. C2SP tlog-tiles entry bundles
/// prefix each entry with a big-endian u16 length, so 65,535 is the ceiling.
pub const AUDIT_ENTRY_BYTES_MAX: usize = 65_535;
/// Appends waiting for the audit log's group commit; past this, callers wait
/// (back-pressure) instead of growing memory.
pub const AUDIT_APPEND_QUEUE_MAX: usize = 4096;
/// Most audit entries written and fsynced together in one group commit; with
/// `AUDIT_ENTRY_BYTES_MAX` this bounds one commit's buffer to 16 MiB.
pub const AUDIT_COMMIT_BATCH_MAX: usize = 256;
/// Most entries one audit store read returns: one full C2SP entry bundle.
pub const AUDIT_READ_ENTRIES_MAX: u64 = 256;
/// Largest signed checkpoint (a C2SP signed note) the audit log reads from
/// disk; Nuage's own are about 200 bytes.
pub const AUDIT_CHECKPOINT_BYTES_MAX: usize = 16 * 1024;
/// Record offsets an audit store rebuilds in memory before writing them out,
/// while recovering its index after a crash.
pub const AUDIT_RECOVERY_OFFSETS_MAX: usize = 64 * 1024;
/// Default retention of audit entries: 190 days, a little over the six months
/// SecNumCloud asks logs to be kept.
pub const AUDIT_RETENTION_DAYS_DEFAULT: u32 = 190;
/// Tenant audit logs the server keeps open at once (three files and a writer
/// task each); past this, the least recently used idle log is closed first.
pub const AUDIT_OPEN_LOGS_MAX: usize = 1024;
/// An audit log unused this long is closed (after signing a checkpoint of what
/// it holds) and reopened on its tenant's next request.
pub const AUDIT_LOG_IDLE_S_MAX: u64 = 600;
/// Default interval between signed checkpoints of a log that grew.
pub const AUDIT_CHECKPOINT_INTERVAL_S_DEFAULT: u64 = 60;
/// Longest configurable interval between signed checkpoints (one day).
pub const AUDIT_CHECKPOINT_INTERVAL_S_MAX: u64 = 86_400;
/// How often retention pruning runs over every tenant's log.
pub const AUDIT_PRUNE_INTERVAL_S: u64 = 3600;
/// Most characters of a client-supplied name (an unknown action) copied into
/// an audit entry: the log records what was asked without storing a payload.
pub const AUDIT_CLIENT_TEXT_CHARS_MAX: usize = 128;
/// Largest tile or entry bundle `nuage audit pull` accepts: 256 entries of at
/// most `AUDIT_ENTRY_BYTES_MAX` bytes, each with its 2-byte length.
pub const AUDIT_TILE_BYTES_MAX: usize = 256 * (AUDIT_ENTRY_BYTES_MAX + 2);
/// Longest the XKS proxy waits for one operation of its token before
/// answering `DependencyTimeoutException` (a hung HSM must not hold Nuage's
/// requests until its own timeout, `XKS_CALL_TIMEOUT_MS_MAX`).
pub const XKS_PROXY_HSM_CALL_TIMEOUT_MS_MAX: u64 = 2000;
/// Documents one page of a root-of-trust migration reads at once (`nuage-kms`
/// `rewrap`): memory stays bounded however many tenants and keys there are.
pub const ROOT_REWRAP_PAGE_DOCUMENTS_MAX: usize = 64;
/// Attempts to rewrap one document that keeps changing under the migration
/// (a revision-checked write that fails and is re-read); offline, one suffices.
pub const ROOT_REWRAP_ATTEMPTS_MAX: usize = 8;

/// Longest operator access a tenant can approve, in seconds: 8 hours, Google
/// Access Approval's default window. An approval ends by itself then.
pub const ACCESS_APPROVAL_DURATION_S_MAX: u32 = 8 * 3600;
/// Shortest operator access that can be requested, in seconds. Release
/// builds: 15 minutes, as STS sessions. Debug builds allow 5 seconds so the
/// integration tests can watch an approval expire without waiting long.
pub const ACCESS_APPROVAL_DURATION_S_MIN: u32 = if cfg!(debug_assertions) { 5 } else { 900 };
/// How long a request waits for the tenant's answer before it expires
/// (silence is denial), in seconds: one day.
pub const ACCESS_REQUEST_PENDING_S_MAX: u32 = 24 * 3600;
/// Resources (ARNs) and actions one access request may name.
pub const ACCESS_REQUEST_RESOURCES_MAX: usize = 20;
pub const ACCESS_REQUEST_ACTIONS_MAX: usize = 20;
/// Longest ARN or action one access request may name, in characters.
pub const ACCESS_REQUEST_ITEM_CHARS_MAX: usize = 2048;
/// Longest free-text justification (support ticket, explanation), in characters.
pub const ACCESS_REQUEST_TEXT_CHARS_MAX: usize = 1024;
/// Access requests one tenant may have waiting at once: an operator cannot
/// flood a tenant's approvers.
pub const ACCESS_REQUESTS_PENDING_PER_TENANT_MAX: usize = 100;
/// Most access requests one listing returns (newest first).
pub const ACCESS_REQUESTS_LIST_MAX: usize = 1000;

/// Entries one transaction copies when the metadata store is rewritten to
/// forget deleted documents (`nuage-meta`, `EmbeddedMetaStore::rewrite`):
/// redb keeps a transaction's dirty pages in memory until it commits, so a
/// store of millions of records is copied in bounded steps.
pub const META_REWRITE_TRANSACTION_ENTRIES_MAX: usize = 50_000;
/// redb's page cache for the embedded metadata store. redb's own default
/// is 1 GiB, which a store of a million objects fills: the server's memory
/// then grew with the object count (1.2 GiB resident after writing a
/// million, docs/performance.md). Pages beyond it are read again from the
/// operating system's page cache, which is shared and reclaimable.
pub const META_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Largest C2SP tlog-witness `add-checkpoint` request body a witness reads:
/// `old <size>`, at most `WITNESS_PROOF_HASHES_MAX` base64 hashes (45 bytes
/// each), a blank line and a signed checkpoint of at most
/// `AUDIT_CHECKPOINT_BYTES_MAX` bytes.
pub const WITNESS_REQUEST_BYTES_MAX: usize =
    64 + WITNESS_PROOF_HASHES_MAX * 45 + AUDIT_CHECKPOINT_BYTES_MAX;
/// Most consistency proof lines in an `add-checkpoint` request (the spec's
/// limit: a proof between two trees of at most 2^63 entries).
pub const WITNESS_PROOF_HASHES_MAX: usize = 63;
/// Most logs one witness watches (`[[logs]]` in `witness.toml`).
pub const WITNESS_LOGS_MAX: usize = 10_000;
/// Largest answer (cosignature lines, or a 409's size) Nuage reads from a witness.
pub const WITNESS_RESPONSE_BYTES_MAX: usize = 4096;
/// Most witnesses one Nuage server submits its checkpoints to (`[audit] witnesses`).
pub const WITNESSES_MAX: usize = 16;
/// Longest Nuage waits for one witness to answer one checkpoint: a witness
/// that is down delays a checkpoint this much at most, never blocks the log.
pub const WITNESS_REQUEST_S_MAX: u64 = 5;
/// Connections a `nuage witness` serves at once; more wait in the accept queue.
pub const WITNESS_CONNECTIONS_MAX: usize = 256;
