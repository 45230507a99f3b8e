//! Handshake messages as a stranger could send them, before anything is
//! trusted: `Hello::decode` and `Challenge::decode` take any bytes, and
//! what decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synod_net::handshake::{Challenge, Hello};

fuzz_target!(|data: &[u8]| {
    if let Some(hello) = Hello::decode(data) {
        assert_eq!(hello.encode(), data);
    }
    if let Some(challenge) = Challenge::decode(data) {
        assert_eq!(challenge.encode(), data);
    }
});
