//! rkyv in and out of byte buffers, pinned to one format (the features in
//! engine/Cargo.toml) for every body the runtime writes.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::Portable;

/// Serializes `value`; in memory this cannot fail.
pub(crate) fn to_bytes<T>(value: &T) -> AlignedVec
where
    T: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    rkyv::to_bytes::<rancor::Error>(value).expect("serializing into memory cannot fail")
}

/// Checks (bytecheck) and deserializes bytes from outside, copying them to
/// an aligned buffer first if they are not aligned.
pub(crate) fn from_bytes<T>(bytes: &[u8]) -> Result<T, String>
where
    T: rkyv::Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, HighDeserializer<rancor::Error>>,
{
    let mut aligned = AlignedVec::<16>::new();
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rancor::Error>(&aligned).map_err(|e| e.to_string())
}

/// Bytes from outside, 16-byte aligned for in-place access: borrowed when
/// they already are, copied once when not.
pub(crate) enum Aligned<'a> {
    Borrowed(&'a [u8]),
    Copied(AlignedVec<16>),
}

impl<'a> Aligned<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Aligned<'a> {
        if (bytes.as_ptr() as usize).is_multiple_of(16) {
            return Aligned::Borrowed(bytes);
        }
        let mut copy = AlignedVec::<16>::new();
        copy.extend_from_slice(bytes);
        Aligned::Copied(copy)
    }

    /// Checks (bytecheck) the archived value in place, without
    /// deserializing it.
    pub(crate) fn access<A>(&self) -> Result<&A, String>
    where
        A: Portable + for<'b> CheckBytes<HighValidator<'b, rancor::Error>>,
    {
        let bytes = match self {
            Aligned::Borrowed(bytes) => bytes,
            Aligned::Copied(copy) => copy.as_slice(),
        };
        rkyv::access::<A, rancor::Error>(bytes).map_err(|e| e.to_string())
    }
}

/// Deserializes an archived value already checked by [`Aligned::access`].
pub(crate) fn deserialize<T>(archived: &T::Archived) -> Result<T, String>
where
    T: rkyv::Archive,
    T::Archived: rkyv::Deserialize<T, HighDeserializer<rancor::Error>>,
{
    rkyv::deserialize::<T, rancor::Error>(archived).map_err(|e| e.to_string())
}
