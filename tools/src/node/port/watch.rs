//! A watch: the KV changes from a log index, as this node applied them;
//! when there are none yet, the request waits (polling the node's own
//! state, which costs the group nothing) until one comes or its wait ends.

use std::time::{Duration, Instant};

use synod_client_proto::ClientResponse;
use synod_engine::runtime::client_port::LocalGroup;

use super::as_response;
use super::outcome::read;
use crate::node::machine::watch_query;

/// The longest a watch request waits for a change.
pub const WATCH_WAIT_MAX: Duration = Duration::from_secs(30);

/// How often a waiting watch looks again.
const POLL: Duration = Duration::from_millis(10);

pub(super) async fn watch(
    group: LocalGroup<'_>,
    prefix: &[u8],
    mut from: u64,
    mut skip: u32,
    wait_ms: u32,
) -> ClientResponse {
    let until = Instant::now() + WATCH_WAIT_MAX.min(Duration::from_millis(wait_ms.into()));
    loop {
        let answer = read(
            group.read_local(watch_query(prefix, from, skip)).await,
            as_response,
        );
        match answer {
            ClientResponse::Events {
                ref events,
                next,
                next_skip,
            } if events.is_empty() => {
                if Instant::now() >= until {
                    return answer;
                }
                // Nothing under the prefix up to `next`: look from there.
                (from, skip) = (next, next_skip);
                glommio::timer::sleep(POLL).await;
            }
            answer => return answer,
        }
    }
}
