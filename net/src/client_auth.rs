//! Optional client authentication on the client port. When the node has a
//! client secret, its first frame on every connection is a challenge (a
//! fresh random nonce, [`KIND_CLIENT_CHALLENGE`]); the client's first frame
//! must be its proof ([`KIND_CLIENT_PROOF`]): HMAC-SHA256 under the secret
//! of a label and that nonce. Requests follow. A proof answers one nonce,
//! so a recorded proof opens no other connection.
//!
//! This decides who may use the port, not who may tamper with a
//! connection: client frames are neither authenticated one by one nor
//! encrypted (see docs/net.md).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;
use crate::handshake::{MAC_BYTES, NONCE_BYTES};

/// The node's challenge: body = a nonce of [`NONCE_BYTES`].
pub const KIND_CLIENT_CHALLENGE: u16 = 0xff12;
/// The client's proof: body = [`MAC_BYTES`] of HMAC.
pub const KIND_CLIENT_PROOF: u16 = 0xff13;

/// Keeps client proofs apart from every other use of the secret.
const LABEL: &[u8] = b"synod client proof v1";

fn mac(secret: &Secret, nonce: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.bytes()).expect("HMAC takes any key size");
    mac.update(LABEL);
    mac.update(nonce);
    mac
}

/// The client's proof for the node's `nonce`.
pub fn client_proof(secret: &Secret, nonce: &[u8]) -> [u8; MAC_BYTES] {
    mac(secret, nonce).finalize().into_bytes().into()
}

/// Constant-time check of a client's proof.
pub(crate) fn verify_client_proof(
    secret: &Secret,
    nonce: &[u8; NONCE_BYTES],
    proof: &[u8],
) -> bool {
    mac(secret, nonce).verify_slice(proof).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_answers_its_own_nonce_under_its_own_secret_only() {
        let secret = Secret::new(*b"0123456789abcdef");
        let nonce = crate::handshake::nonce();
        let proof = client_proof(&secret, &nonce);
        assert!(verify_client_proof(&secret, &nonce, &proof));
        assert!(!verify_client_proof(
            &secret,
            &crate::handshake::nonce(),
            &proof
        ));
        let other = Secret::new(*b"0123456789abcdeX");
        assert!(!verify_client_proof(&other, &nonce, &proof));
        assert!(!verify_client_proof(&secret, &nonce, &proof[..31]));
    }
}
