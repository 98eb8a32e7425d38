//! Requests to the federation's broker and what tests read of the
//! answers: agreements granting the provider's dataset, queries and
//! filters, a whole query stream, and the receipt or denial in a status.

use jembatan_proto::v1 as pb;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use tonic::transport::Channel;

/// An `[[agreements]]` table granting `fields` (TOML array text).
pub fn agreement_toml(id: &str, consumer: &str, fields: &str, status: &str, extra: &str) -> String {
    format!(
        r#"
[[agreements]]
id = "{id}"
provider = "prov"
consumer = "{consumer}"
dataset = "prov.penduduk"
fields = {fields}
purpose = "bansos"
valid_from = "2020-01-01"
status = "{status}"
{extra}
"#
    )
}

/// A query of the provider's dataset for `fields`, purpose `bansos`.
pub fn query(fields: &[&str]) -> pb::QueryRequest {
    pb::QueryRequest {
        dataset: "prov.penduduk".into(),
        purpose: "bansos".into(),
        fields: fields.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// A string scalar.
pub fn string(value: &str) -> pb::Scalar {
    pb::Scalar {
        kind: Some(pb::scalar::Kind::StringValue(value.into())),
    }
}

/// `field = value`.
pub fn eq(field: &str, value: &str) -> pb::Filter {
    pb::Filter {
        kind: Some(pb::filter::Kind::Predicate(pb::Predicate {
            field: field.into(),
            op: pb::Operator::Eq as i32,
            value: Some(string(value)),
            values: vec![],
        })),
    }
}

/// What a query stream delivered before it ended, and how it ended.
pub struct Streamed {
    pub records: Vec<serde_json::Map<String, serde_json::Value>>,
    pub end: Result<(), tonic::Status>,
    pub receipt: Option<pb::Receipt>,
}

/// Reads a whole query stream, keeping what arrived before an error.
pub async fn run_query(client: &mut ExchangeClient<Channel>, req: pb::QueryRequest) -> Streamed {
    let mut out = Streamed {
        records: vec![],
        end: Ok(()),
        receipt: None,
    };
    let mut stream = match client.query(req).await {
        Ok(s) => s.into_inner(),
        Err(status) => {
            out.end = Err(status);
            return out;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(msg)) => match msg.item.unwrap() {
                pb::query_response::Item::Batch(b) => out
                    .records
                    .extend(b.records.iter().map(|r| serde_json::from_str(r).unwrap())),
                pb::query_response::Item::Receipt(r) => out.receipt = Some(r),
            },
            Ok(None) => break,
            Err(status) => {
                out.receipt = receipt_of(&status);
                out.end = Err(status);
                break;
            }
        }
    }
    out
}

/// The receipt a status's trailers carry.
pub fn receipt_of(status: &tonic::Status) -> Option<pb::Receipt> {
    jembatan_proto::trailers::receipt(status.metadata())
}

/// The denial codes a refused exchange's trailer carries.
pub fn denial_codes(status: &tonic::Status) -> Vec<String> {
    denial_details(status)
        .reasons
        .into_iter()
        .map(|r| r.reason)
        .collect()
}

/// A refused exchange's trailer; empty when it has none.
pub fn denial_details(status: &tonic::Status) -> pb::DenialDetails {
    jembatan_proto::trailers::denial_details(status.metadata()).unwrap_or_default()
}
