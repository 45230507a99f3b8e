//! The engine's rkyv format (the features in engine/Cargo.toml), for
//! embedders whose commands, replies, queries and snapshots are rkyv
//! bodies too: the same checked decoding of bytes from outside that the
//! engine uses for its own, in place where the bytes are aligned.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::Portable;

use crate::group::archive;

/// Serializes `value`; in memory this cannot fail.
pub fn to_bytes<T>(value: &T) -> AlignedVec
where
    T: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    archive::to_bytes(value)
}

/// Checks (bytecheck) and deserializes bytes from outside, copying them to
/// an aligned buffer first if they are not aligned.
pub fn from_bytes<T>(bytes: &[u8]) -> Result<T, String>
where
    T: rkyv::Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, HighDeserializer<rancor::Error>>,
{
    archive::from_bytes(bytes)
}

/// Bytes from outside, 16-byte aligned for in-place access: borrowed when
/// they already are, copied once when not.
pub struct Aligned<'a>(archive::Aligned<'a>);

impl<'a> Aligned<'a> {
    /// Borrows `bytes` if they are aligned, else copies them once.
    pub fn new(bytes: &'a [u8]) -> Aligned<'a> {
        Aligned(archive::Aligned::new(bytes))
    }

    /// Checks (bytecheck) the archived value in place, without
    /// deserializing it.
    pub fn access<A>(&self) -> Result<&A, String>
    where
        A: Portable + for<'b> CheckBytes<HighValidator<'b, rancor::Error>>,
    {
        self.0.access()
    }
}

/// Deserializes an archived value already checked by [`Aligned::access`].
pub fn deserialize<T>(archived: &T::Archived) -> Result<T, String>
where
    T: rkyv::Archive,
    T::Archived: rkyv::Deserialize<T, HighDeserializer<rancor::Error>>,
{
    archive::deserialize(archived)
}
