//! What the broker's server tells `jembatan-telemetry`: the caller of an
//! RPC (from its client certificate) and the audit entry a response names
//! (the receipt's completion entry, or the denial's entry), for the
//! access log.

use jembatan_proto::trailers;
use jembatan_telemetry::RpcLayer;
use tonic::metadata::MetadataMap;

/// The layer on the broker's server: traces, `rpc.server.duration`, and
/// one access-log line per RPC.
pub(crate) fn rpc_layer() -> RpcLayer {
    RpcLayer::new(caller).with_audit_seq(audit_seq)
}

fn caller(extensions: &tonic::codegen::http::Extensions) -> Option<String> {
    jembatan_pki::peer_identity_in(extensions)
        .ok()
        .map(|id| id.to_string())
}

fn audit_seq(headers: &tonic::codegen::http::HeaderMap) -> Option<u64> {
    let receipt = headers.contains_key(jembatan_proto::RECEIPT_METADATA_KEY);
    let denial = headers.contains_key(jembatan_proto::DENIAL_METADATA_KEY);
    if !receipt && !denial {
        return None;
    }
    let metadata = MetadataMap::from_headers(headers.clone());
    trailers::receipt(&metadata)
        .map(|r| r.entry_seq)
        .or_else(|| trailers::denial_details(&metadata).map(|d| d.entry_seq))
}
