//! Who belongs to a group, slot by slot.
//!
//! A configuration is a log entry: a batch of one command from the reserved
//! client `MEMBERSHIP_CLIENT`, whose data lists the members. Chosen at slot
//! `s`, it is in force from slot `s + CHANGE_DELAY_SLOTS` on (Lamport's
//! "Reconfiguring a State Machine", the α-window): a leader proposes slot
//! `t` only once every slot up to `t - CHANGE_DELAY_SLOTS` is chosen, so it
//! always knows the configuration of the slots it proposes. docs/protocol.md
//! gives the safety argument, including Phase 1's.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::batch::{Batch, BatchBuilder, Command};
use super::config::MEMBERS_MAX;
use super::types::{ClientId, NodeId, Slot};
use super::VoteSet;

/// The client id that marks a configuration entry; no client may use it.
pub const MEMBERSHIP_CLIENT: ClientId = ClientId::MEMBERSHIP;

/// Slots between a configuration's own slot and the first slot it governs;
/// also the most slots a leader has in flight beyond its commit point.
pub const CHANGE_DELAY_SLOTS: u64 = 256;

/// Bytes of a member's address (opaque to the protocol; the runtime dials it).
pub const ADDR_BYTES_MAX: usize = 255;

/// One member of a configuration.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    /// Its identity.
    pub id: NodeId,
    /// Voters count in quorums and may lead; learners only receive the log.
    pub voter: bool,
    /// Where its peers reach it, as `HOST:PORT` (may be empty when the
    /// embedder knows its peers otherwise).
    pub addr: String,
}

/// The members of a group for a range of slots, sorted by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    members: Vec<Member>,
    /// Positions (in `members`) of the voters.
    voters: VoteSet,
}

/// Why a membership is refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MembershipError {
    /// No voter, too many members, node 0, a node listed twice.
    #[error("invalid membership: {0}")]
    Invalid(&'static str),
    /// The bytes of a configuration entry do not decode.
    #[error("malformed configuration entry: {0}")]
    Malformed(&'static str),
}

impl Membership {
    /// Voters only, without addresses: a group's first configuration.
    pub fn voters(ids: &[NodeId]) -> Result<Membership, MembershipError> {
        Membership::new(
            ids.iter()
                .map(|id| Member {
                    id: *id,
                    voter: true,
                    addr: String::new(),
                })
                .collect(),
        )
    }

    /// Checks and sorts `members`.
    pub fn new(mut members: Vec<Member>) -> Result<Membership, MembershipError> {
        members.sort();
        if members.len() > MEMBERS_MAX {
            return Err(MembershipError::Invalid("more than 64 members"));
        }
        if members.iter().any(|m| m.id == NodeId(0)) {
            return Err(MembershipError::Invalid("node id 0 is reserved"));
        }
        if members.windows(2).any(|w| w[0].id == w[1].id) {
            return Err(MembershipError::Invalid("a node is listed twice"));
        }
        if members.iter().any(|m| m.addr.len() > ADDR_BYTES_MAX) {
            return Err(MembershipError::Invalid("an address is too long"));
        }
        let mut voters = VoteSet::default();
        for (position, member) in members.iter().enumerate() {
            if member.voter {
                voters.insert(position);
            }
        }
        if voters.is_empty() {
            return Err(MembershipError::Invalid("no voter"));
        }
        Ok(Membership { members, voters })
    }

    /// Every member, voters and learners, by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The voters' ids, in order.
    pub fn voter_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.iter().filter(|m| m.voter).map(|m| m.id)
    }

    /// Voters in the configuration.
    pub fn voter_count(&self) -> usize {
        self.voters.len()
    }

    /// Votes that make a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The member's position in `members()`, voter or learner.
    pub fn position(&self, node: NodeId) -> Option<usize> {
        self.members.binary_search_by_key(&node, |m| m.id).ok()
    }

    /// Whether `node` is a member (voter or learner).
    pub fn contains(&self, node: NodeId) -> bool {
        self.position(node).is_some()
    }

    /// Whether `node` votes.
    pub fn is_voter(&self, node: NodeId) -> bool {
        self.position(node).is_some_and(|p| self.voters.contains(p))
    }

    /// Whether `set` (positions in `members()`) holds a majority of voters.
    pub fn is_quorum(&self, set: VoteSet) -> bool {
        set.intersect(self.voters).is_quorum(self.voters.len())
    }

    /// Whether the voters for which `heard` holds make a majority.
    pub fn majority(&self, mut heard: impl FnMut(NodeId) -> bool) -> bool {
        self.voter_ids().filter(|id| heard(*id)).count() >= self.quorum()
    }

    /// The configuration entry that proposes this membership.
    pub fn to_batch(&self) -> Batch {
        let mut builder = BatchBuilder::default();
        builder.push(&Command {
            client: MEMBERSHIP_CLIENT,
            seq: 0,
            data: self.encode(),
        });
        builder.finish()
    }

    /// The membership as its entry's command holds it (and a snapshot).
    pub fn encode(&self) -> Bytes {
        let mut data = BytesMut::new();
        data.put_u32_le(self.members.len() as u32);
        for member in &self.members {
            data.put_u64_le(member.id.0);
            data.put_u8(u8::from(member.voter));
            data.put_u8(member.addr.len() as u8);
            data.put_slice(member.addr.as_bytes());
        }
        data.freeze()
    }

    /// The membership a batch proposes: `Ok(None)` for an ordinary batch,
    /// an error for one that carries the reserved client but does not
    /// decode (or carries other commands with it).
    pub fn from_batch(batch: &Batch) -> Result<Option<Membership>, MembershipError> {
        let mut commands = batch.iter();
        let Some(first) = commands.next() else {
            return Ok(None);
        };
        if first.client != MEMBERSHIP_CLIENT {
            if batch.iter().any(|c| c.client == MEMBERSHIP_CLIENT) {
                return Err(MembershipError::Malformed("shares a batch with commands"));
            }
            return Ok(None);
        }
        if batch.len() != 1 {
            return Err(MembershipError::Malformed("shares a batch with commands"));
        }
        Membership::decode(first.data).map(Some)
    }

    /// Whether `batch` is a configuration entry, checking one field only:
    /// for batches already known to be well formed (the commit path).
    pub fn is_entry(batch: &Batch) -> bool {
        batch.len() == 1
            && batch
                .iter()
                .next()
                .is_some_and(|c| c.client == MEMBERSHIP_CLIENT)
    }

    /// Reads what [`Membership::encode`] wrote, checking every field.
    pub fn decode(mut data: &[u8]) -> Result<Membership, MembershipError> {
        let count = take_u32(&mut data)? as usize;
        if count > MEMBERS_MAX {
            return Err(MembershipError::Malformed("more than 64 members"));
        }
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            let id = NodeId(take_u64(&mut data)?);
            let role = take_bytes(&mut data, 1)?[0];
            let voter = match role {
                0 => false,
                1 => true,
                _ => return Err(MembershipError::Malformed("unknown role")),
            };
            let len = take_bytes(&mut data, 1)?[0] as usize;
            let addr = std::str::from_utf8(take_bytes(&mut data, len)?)
                .map_err(|_| MembershipError::Malformed("address is not UTF-8"))?;
            members.push(Member {
                id,
                voter,
                addr: addr.to_owned(),
            });
        }
        if !data.is_empty() {
            return Err(MembershipError::Malformed("trailing bytes"));
        }
        Membership::new(members)
    }
}

fn take_bytes<'a>(data: &mut &'a [u8], n: usize) -> Result<&'a [u8], MembershipError> {
    if data.len() < n {
        return Err(MembershipError::Malformed("truncated"));
    }
    let (head, rest) = data.split_at(n);
    *data = rest;
    Ok(head)
}

fn take_u32(data: &mut &[u8]) -> Result<u32, MembershipError> {
    let bytes = take_bytes(data, 4)?;
    Ok(u32::from_le_bytes(bytes.try_into().expect("four bytes")))
}

fn take_u64(data: &mut &[u8]) -> Result<u64, MembershipError> {
    let bytes = take_bytes(data, 8)?;
    Ok(u64::from_le_bytes(bytes.try_into().expect("eight bytes")))
}

/// The configurations a replica knows, each with the first slot it governs.
/// The first one governs every slot from the replica's commit point back
/// to its own start; later ones were chosen and are not in force yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Increasing first slots; never empty.
    entries: Vec<(Slot, Membership)>,
}

impl Schedule {
    /// One configuration from slot 0 on.
    pub fn starting_with(membership: Membership) -> Schedule {
        Schedule {
            entries: vec![(Slot(0), membership)],
        }
    }

    /// A schedule as a snapshot recorded it (`Schedule::entries`); `None` if
    /// it is empty or out of order.
    pub fn from_entries(entries: Vec<(Slot, Membership)>) -> Option<Schedule> {
        let ordered = entries.windows(2).all(|w| w[0].0 < w[1].0);
        (!entries.is_empty() && ordered).then_some(Schedule { entries })
    }

    /// Every configuration known, with the first slot it governs.
    pub fn entries(&self) -> &[(Slot, Membership)] {
        &self.entries
    }

    /// The index of the entry that governs `slot` (the first governs every
    /// slot below its own first slot too).
    fn governing(&self, slot: Slot) -> usize {
        self.entries
            .partition_point(|(from, _)| *from <= slot)
            .saturating_sub(1)
    }

    /// The configuration that governs `slot`.
    pub fn at(&self, slot: Slot) -> &Membership {
        &self.entries[self.governing(slot)].1
    }

    /// The first slot of the configuration that governs `slot`: with the
    /// next one's first slot, it names the schedule's state from `slot` on
    /// (every configuration chosen has a first slot of its own).
    pub fn governing_from(&self, slot: Slot) -> Slot {
        self.entries[self.governing(slot)].0
    }

    /// The newest configuration known (in force or not yet).
    pub fn latest(&self) -> &Membership {
        &self.entries.last().expect("never empty").1
    }

    /// The first slot the newest configuration governs.
    pub fn latest_from(&self) -> Slot {
        self.entries.last().expect("never empty").0
    }

    /// The configurations that govern `slot` or any later slot.
    pub fn from(&self, slot: Slot) -> impl Iterator<Item = &Membership> {
        self.entries[self.governing(slot)..].iter().map(|(_, m)| m)
    }

    /// A configuration chosen at `slot`; it governs from
    /// `slot + CHANGE_DELAY_SLOTS` on.
    pub fn chosen(&mut self, slot: Slot, membership: Membership) {
        let from = slot.plus(CHANGE_DELAY_SLOTS);
        debug_assert!(from > self.latest_from(), "chosen in slot order");
        self.entries.push((from, membership));
    }

    /// Forgets configurations that no slot at or above `slot` uses.
    pub fn forget_below(&mut self, slot: Slot) {
        let keep_from = self.governing(slot);
        self.entries.drain(..keep_from);
    }

    /// Whether `node` is a member of any configuration known.
    pub fn knows(&self, node: NodeId) -> bool {
        self.entries.iter().any(|(_, m)| m.contains(node))
    }

    /// Whether `node` votes in any configuration known.
    pub fn votes_anywhere(&self, node: NodeId) -> bool {
        self.entries.iter().any(|(_, m)| m.is_voter(node))
    }

    /// Every member of the configurations from `slot` on, but `me`.
    pub fn peers_from(&self, slot: Slot, me: NodeId) -> Vec<NodeId> {
        let mut peers: Vec<NodeId> = self
            .from(slot)
            .flat_map(|m| m.members().iter().map(|m| m.id))
            .filter(|id| *id != me)
            .collect();
        peers.sort();
        peers.dedup();
        peers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().map(|i| NodeId(*i)).collect()
    }

    #[test]
    fn a_membership_travels_as_a_batch_of_one_reserved_command() {
        let membership = Membership::new(vec![
            Member {
                id: NodeId(3),
                voter: true,
                addr: "c:1".into(),
            },
            Member {
                id: NodeId(1),
                voter: true,
                addr: "a:1".into(),
            },
            Member {
                id: NodeId(7),
                voter: false,
                addr: String::new(),
            },
        ])
        .unwrap();
        let batch = membership.to_batch();
        assert!(Membership::is_entry(&batch));
        assert_eq!(Membership::from_batch(&batch), Ok(Some(membership.clone())));
        assert_eq!(membership.quorum(), 2, "learners are not counted");
        assert_eq!(membership.voter_ids().collect::<Vec<_>>(), ids(&[1, 3]));
        assert!(!membership.is_voter(NodeId(7)) && membership.contains(NodeId(7)));
        assert_eq!(Membership::from_batch(&Batch::noop()), Ok(None));
    }

    #[test]
    fn a_reserved_command_among_others_is_refused() {
        let mut builder = BatchBuilder::default();
        let entry = Membership::voters(&ids(&[1])).unwrap().to_batch();
        let reserved = entry.iter().next().unwrap();
        for client in [ClientId(5), MEMBERSHIP_CLIENT] {
            builder.push(&Command {
                client,
                seq: 1,
                data: Bytes::copy_from_slice(reserved.data),
            });
        }
        assert!(Membership::from_batch(&builder.finish()).is_err());
    }

    #[test]
    fn invalid_memberships_are_refused() {
        assert!(Membership::voters(&[]).is_err());
        assert!(Membership::voters(&ids(&[0, 1])).is_err());
        assert!(Membership::voters(&ids(&[2, 2])).is_err());
        let learners_only = Membership::new(vec![Member {
            id: NodeId(1),
            voter: false,
            addr: String::new(),
        }]);
        assert!(learners_only.is_err());
    }

    #[test]
    fn the_schedule_names_the_configuration_of_every_slot() {
        let one = Membership::voters(&ids(&[1, 2, 3])).unwrap();
        let two = Membership::voters(&ids(&[1, 2, 4])).unwrap();
        let mut schedule = Schedule::starting_with(one.clone());
        schedule.chosen(Slot(10), two.clone());
        let from = Slot(10 + CHANGE_DELAY_SLOTS);
        assert_eq!(schedule.at(Slot(0)), &one);
        assert_eq!(schedule.at(Slot(from.0 - 1)), &one);
        assert_eq!(schedule.at(from), &two);
        assert_eq!(schedule.from(Slot(5)).count(), 2);
        assert_eq!(schedule.peers_from(Slot(5), NodeId(1)), ids(&[2, 3, 4]));
        schedule.forget_below(from);
        assert_eq!(schedule.entries().len(), 1);
        assert_eq!(schedule.at(Slot(0)), &two, "the oldest known governs below");
        assert!(!schedule.knows(NodeId(3)));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_are_refused(data in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = Membership::decode(&data);
        }

        #[test]
        fn memberships_round_trip(members in prop::collection::btree_map(1u64..100, (any::<bool>(), "[a-z:0-9]{0,20}"), 1..10)) {
            let members: Vec<Member> = members
                .into_iter()
                .map(|(id, (voter, addr))| Member { id: NodeId(id), voter, addr })
                .collect();
            if let Ok(membership) = Membership::new(members) {
                prop_assert_eq!(Membership::from_batch(&membership.to_batch()), Ok(Some(membership)));
            }
        }
    }
}
