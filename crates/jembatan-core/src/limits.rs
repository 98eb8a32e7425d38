//! Limits on untrusted input, shared by the broker and the adapter.

/// Deepest nesting of `all` / `any` / `not` in a filter.
pub const MAX_FILTER_DEPTH: usize = 16;
/// Most predicates in one filter.
pub const MAX_FILTER_PREDICATES: usize = 256;
/// Most values in one `IN` predicate.
pub const MAX_IN_VALUES: usize = 1_000;
/// Longest string value in a filter or lookup key, in bytes.
pub const MAX_STRING_BYTES: usize = 4_096;
/// Longest identifier (agency, dataset, field name), in bytes.
pub const MAX_IDENT_BYTES: usize = 128;
/// Most fields named in one request.
pub const MAX_FIELDS: usize = 256;
