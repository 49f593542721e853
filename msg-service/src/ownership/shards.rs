//! The shard of a log: 1024 shards; an inbox belongs to the shard of its
//! user id, a conversation log to the shard of its conversation id, by a
//! stable hash written down here (64-bit FNV-1a over the id's UTF-8 bytes,
//! modulo 1024). Never change it: the shards of stored logs depend on it.

use proto::{ConvId, UserId};

/// How many shards there are.
pub const SHARDS: u16 = 1024;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME)
    })
}

/// The shard of an id.
pub fn shard_of(id: &str) -> u16 {
    // The remainder is below 1024: it fits.
    (fnv1a(id.as_bytes()) % u64::from(SHARDS)) as u16
}

/// The shard of a user's inbox.
pub fn inbox_shard(user: &UserId) -> u16 {
    shard_of(user.as_str())
}

/// The shard of a conversation's log.
pub fn conversation_shard(conv: &ConvId) -> u16 {
    shard_of(conv.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a_and_never_changes() {
        // The published FNV-1a test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(shard_of("alice"), (fnv1a(b"alice") % 1024) as u16);
    }

    #[test]
    fn ids_spread_over_every_shard() {
        let mut counts = vec![0u32; usize::from(SHARDS)];
        for i in 0..102_400 {
            counts[usize::from(shard_of(&format!("user{i}")))] += 1;
        }
        let (min, max) = (counts.iter().min(), counts.iter().max());
        assert!(min >= Some(&50) && max <= Some(&150), "{min:?} {max:?}");
    }
}
