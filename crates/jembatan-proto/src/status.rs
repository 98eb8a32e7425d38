//! Refusals of requests tonic cannot decode, in the codes the services
//! use for bad input.
//!
//! tonic answers a request over the decoding size limit with `OutOfRange`
//! and a request that is not valid Protobuf (a `string` field holding
//! invalid UTF-8, a truncated message) with `Internal`. Both are the
//! caller's fault and nothing of the request reached a handler, so the
//! servers rewrite them to `ResourceExhausted` naming the limit and to
//! `InvalidArgument`.

use tonic::codegen::http;
use tonic::{Code, Status};

/// The limit's name in messages about oversized requests.
const LIMIT_NAME: &str = "max_request_bytes";

/// Rewrites the status of a request that could not be decoded; every other
/// response passes unchanged. Meant for
/// `tower::util::MapResponseLayer::new(map_decode_errors)` on a server.
pub fn map_decode_errors<B>(mut response: http::Response<B>) -> http::Response<B> {
    // tonic keeps the status of a trailers-only error response here
    let Some(status) = response.extensions().get::<Status>() else {
        return response;
    };
    let Some(mapped) = decode_error_status(status) else {
        return response;
    };
    if mapped.add_header(response.headers_mut()).is_ok() {
        response.extensions_mut().insert(mapped);
    }
    response
}

/// The status a decoding failure becomes; `None` for every other status.
pub fn decode_error_status(status: &Status) -> Option<Status> {
    let message = status.message();
    match status.code() {
        Code::Internal if message.starts_with("failed to decode Protobuf message") => Some(
            Status::invalid_argument(format!("invalid request: {message}")),
        ),
        Code::OutOfRange if message.contains("decoded message length too large") => {
            let (found, limit) = sizes(message);
            Some(Status::resource_exhausted(match (found, limit) {
                (Some(found), Some(limit)) => {
                    format!("request of {found} bytes exceeds the limit {LIMIT_NAME} = {limit}")
                }
                _ => format!("request exceeds the limit {LIMIT_NAME}: {message}"),
            }))
        }
        _ => None,
    }
}

/// The sizes in tonic's "found N bytes, the limit is: M bytes".
fn sizes(message: &str) -> (Option<u64>, Option<u64>) {
    let number_after = |marker: &str| {
        let rest = &message[message.find(marker)? + marker.len()..];
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    (number_after("found"), number_after("the limit is:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_failures_become_client_errors() {
        let cases = [
            (
                Status::out_of_range(
                    "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
                ),
                Some((
                    Code::ResourceExhausted,
                    "request of 5000000 bytes exceeds the limit max_request_bytes = 4194304",
                )),
            ),
            (
                Status::internal(
                    "failed to decode Protobuf message: FetchRequest.dataset: invalid string value: data is not UTF-8 encoded",
                ),
                Some((
                    Code::InvalidArgument,
                    "invalid request: failed to decode Protobuf message: FetchRequest.dataset: invalid string value: data is not UTF-8 encoded",
                )),
            ),
            (
                Status::internal("database error while reading dataset a.b"),
                None,
            ),
            (Status::out_of_range("limit out of range"), None),
            (Status::invalid_argument("invalid filter: x"), None),
        ];
        for (status, want) in cases {
            let got = decode_error_status(&status);
            assert_eq!(
                got.as_ref().map(|s| (s.code(), s.message())),
                want,
                "{status:?}"
            );
        }
    }

    #[test]
    fn responses_are_rewritten_only_for_decoding_failures() {
        let response: http::Response<()> =
            Status::internal("failed to decode Protobuf message: invalid wire type").into_http();
        let response = map_decode_errors(response);
        let status = Status::from_header_map(response.headers()).expect("status header");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid request: failed to decode Protobuf message: invalid wire type"
        );
        assert_eq!(
            response.extensions().get::<Status>().map(Status::code),
            Some(Code::InvalidArgument)
        );

        let response: http::Response<()> =
            Status::internal("cannot record the receipt").into_http();
        let response = map_decode_errors(response);
        let status = Status::from_header_map(response.headers()).expect("status header");
        assert_eq!(status.code(), Code::Internal);

        let ok = map_decode_errors(http::Response::new(()));
        assert!(ok.headers().get("grpc-status").is_none());
    }
}
