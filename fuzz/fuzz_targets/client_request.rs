//! What a client sends and what a node replies, as anyone who reaches the
//! client port could send it: `ClientRequest::decode` (bytecheck of the
//! archived request), `ClientResponse::decode` and `KvReply::decode` (what
//! `synod client` reads back). Never a panic; what decodes re-encodes to
//! a body that decodes to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synod_client_proto::{ClientRequest, ClientResponse, KvReply};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = ClientRequest::decode(data) {
        let again = request.encode();
        assert_eq!(ClientRequest::decode(&again).expect("re-encoded"), request);
    }
    if let Ok(response) = ClientResponse::decode(data) {
        let again = response.encode();
        assert_eq!(ClientResponse::decode(&again).expect("re-encoded"), response);
    }
    let _ = KvReply::decode(data);
});
