//! Counting votes of one configuration's members.

/// A set of members, by their position in the sorted member list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VoteSet(u64);

impl VoteSet {
    /// Adds the member at `position`; true if it was not there yet.
    pub fn insert(&mut self, position: usize) -> bool {
        let bit = 1u64 << position;
        let fresh = self.0 & bit == 0;
        self.0 |= bit;
        fresh
    }

    /// Whether the member at `position` is in.
    pub fn contains(&self, position: usize) -> bool {
        self.0 & (1u64 << position) != 0
    }

    /// Members in the set.
    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }

    /// True when no member is in.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The members in both sets.
    #[must_use]
    pub fn intersect(self, other: VoteSet) -> VoteSet {
        VoteSet(self.0 & other.0)
    }

    /// Whether the set holds a majority of `members`.
    pub fn is_quorum(&self, members: usize) -> bool {
        self.len() > members / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn quorum_matches_a_counting_model(members in 1usize..=64, picks in prop::collection::vec(0usize..64, 0..100)) {
            let mut set = VoteSet::default();
            let mut model = std::collections::BTreeSet::new();
            for p in picks.into_iter().filter(|p| *p < members) {
                prop_assert_eq!(set.insert(p), model.insert(p));
                prop_assert!(set.contains(p));
            }
            prop_assert_eq!(set.len(), model.len());
            prop_assert_eq!(set.is_quorum(members), 2 * model.len() > members);
        }
    }
}
