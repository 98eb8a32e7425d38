//! The binary metadata entries (`-bin` trailers, or headers of a unary
//! response) that carry structured details beside a status: their names
//! and how to read them, so a client needs nothing but this crate.

use prost::Message;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::v1;

/// Trailer (streams) or header (unary) carrying the binary-encoded
/// `Receipt` of an exchange.
pub const RECEIPT_METADATA_KEY: &str = "jembatan-receipt-bin";
/// Trailer carrying the binary-encoded `DenialDetails` of a refused exchange.
pub const DENIAL_METADATA_KEY: &str = "jembatan-denial-bin";
/// Trailer carrying a binary-encoded `CheckCompatibilityResponse` when a
/// schema registration is refused as incompatible.
pub const INCOMPATIBILITY_METADATA_KEY: &str = "jembatan-incompatibility-bin";

/// The message under `key`; `None` when it is absent or does not decode.
fn read<M: Message + Default>(metadata: &MetadataMap, key: &str) -> Option<M> {
    let bytes = metadata.get_bin(key)?.to_bytes().ok()?;
    M::decode(bytes).ok()
}

/// Puts `message`, binary-encoded, under `key`.
pub fn insert<M: Message>(metadata: &mut MetadataMap, key: &'static str, message: &M) {
    metadata.insert_bin(key, MetadataValue::from_bytes(&message.encode_to_vec()));
}

/// The receipt in an exchange's trailers (or a lookup's headers).
pub fn receipt(metadata: &MetadataMap) -> Option<v1::Receipt> {
    read(metadata, RECEIPT_METADATA_KEY)
}

/// The reasons of a refused exchange.
pub fn denial_details(metadata: &MetadataMap) -> Option<v1::DenialDetails> {
    read(metadata, DENIAL_METADATA_KEY)
}

/// The incompatibilities of a schema registration refused as incompatible.
pub fn incompatibilities(metadata: &MetadataMap) -> Option<v1::CheckCompatibilityResponse> {
    read(metadata, INCOMPATIBILITY_METADATA_KEY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_read_back_as_written() {
        let mut metadata = MetadataMap::new();
        assert_eq!(denial_details(&metadata), None);
        let details = v1::DenialDetails {
            entry_seq: 7,
            ..Default::default()
        };
        insert(&mut metadata, DENIAL_METADATA_KEY, &details);
        assert_eq!(denial_details(&metadata), Some(details));
        assert_eq!(receipt(&metadata), None, "another key");

        metadata.insert_bin(
            INCOMPATIBILITY_METADATA_KEY,
            MetadataValue::from_bytes(b"\xff\xff not protobuf"),
        );
        assert_eq!(incompatibilities(&metadata), None, "undecodable");
    }
}
