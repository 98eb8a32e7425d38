//! Limits on untrusted input, shared by the broker and the adapter.

/// Deepest nesting of `all` / `any` / `not` in a filter.
pub const MAX_FILTER_DEPTH: usize = 16;
/// Most predicates in one filter.
pub const MAX_FILTER_PREDICATES: usize = 256;
/// Deepest nesting of a filter the broker forwards to an adapter: the
/// agreement's row filter and the consumer's filter, each within
/// `MAX_FILTER_DEPTH`, side by side under one `all`.
pub const MAX_FORWARDED_FILTER_DEPTH: usize = MAX_FILTER_DEPTH + 1;
/// Most predicates in a filter the broker forwards to an adapter: the
/// agreement's row filter, the consumer's filter and a lookup key.
pub const MAX_FORWARDED_FILTER_PREDICATES: usize = 2 * MAX_FILTER_PREDICATES + 1;
/// Most values in one `IN` predicate.
pub const MAX_IN_VALUES: usize = 1_000;
/// Longest string value in a filter or lookup key, in bytes.
pub const MAX_STRING_BYTES: usize = 4_096;
/// Longest identifier (agency, dataset, field name), in bytes.
pub const MAX_IDENT_BYTES: usize = 128;
/// Most fields named in one request.
pub const MAX_FIELDS: usize = 256;
/// Longest purpose named in a request, in bytes.
pub const MAX_PURPOSE_BYTES: usize = 256;
/// Most bytes of one request message the broker decodes (gRPC) or reads
/// (an HTTP/JSON body); a larger one is refused naming the limit
/// `max_request_bytes`.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;
/// Most keys one batch verification may hold.
pub const MAX_VERIFY_BATCH_KEYS: usize = 10_000;
/// Most provider records one mapping test checks.
pub const MAX_MAPPING_TEST_RECORDS: u64 = 10_000;
/// Most parts (statements) one adapter fetch may run.
pub const MAX_FETCH_PARTS: usize = MAX_VERIFY_BATCH_KEYS.div_ceil(MAX_IN_VALUES);
