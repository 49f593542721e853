//! Where a row lives: seqs as CQL `bigint`s, the bucket of a seq (so an
//! inbox or a conversation log is split into partitions of at most 65,536
//! seqs, and a read knows which partition holds a seq without a lookup), and
//! the section of a seq ceiling.

use proto::Seq;

use crate::{Error, Result};

/// A bucket holds the seqs that agree above their low 16 bits.
pub(crate) const BUCKET_BITS: u32 = 16;

/// Ceiling rows are spread over this many partitions. Paxos serializes LWTs
/// per partition, so more sections mean less contention between keys; a
/// steady state of one LWT per key per `step` seqs keeps it low anyway.
pub(crate) const SECTIONS: u64 = 4096;

/// The bucket (partition) of a seq or conv_seq.
pub(crate) fn bucket_of(seq: i64) -> i64 {
    seq >> BUCKET_BITS
}

/// A seq as CQL stores it (`bigint`); seqs above `i64::MAX` cannot be stored.
pub(crate) fn to_cql(seq: Seq) -> Result<i64> {
    i64::try_from(seq).map_err(|_| Error::BadData(format!("seq {seq} does not fit a CQL bigint")))
}

/// A seq read back from CQL; a negative one is corrupt.
pub(crate) fn from_cql(value: i64) -> Result<Seq> {
    Seq::try_from(value).map_err(|_| Error::BadData(format!("negative seq {value} in storage")))
}

/// A bound of a range query, clamped to what a `bigint` holds (no stored
/// seq is above it, so the clamped range selects the same rows).
pub(crate) fn clamp(seq: Seq) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// The ceiling section of an allocator key: FNV-1a, so every instance and
/// every build agree (std's hasher is seeded per process).
pub(crate) fn section_of(key: &str) -> i32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Below SECTIONS (4096), so it fits.
    (hash % SECTIONS) as i32
}

/// How many rows one request asks for at most; longer reads page.
pub(crate) const MAX_PAGE: usize = 1000;

/// Rows to ask for when `wanted` more are needed, as CQL binds a `LIMIT`.
pub(crate) fn page_limit(wanted: usize) -> i32 {
    // At most MAX_PAGE (1000), so it fits.
    wanted.clamp(1, MAX_PAGE) as i32
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_bucket_holds_65536_consecutive_seqs() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(65_535), 0);
        assert_eq!(bucket_of(65_536), 1);
        assert_eq!(bucket_of(70_000), 1);
        assert_eq!(bucket_of(3 * 65_536 + 5), 3);
        assert_eq!(bucket_of(i64::MAX), (1 << 47) - 1);
    }

    #[test]
    fn seqs_convert_to_bigint_and_back_within_range() {
        assert_eq!(to_cql(0).unwrap(), 0);
        assert_eq!(to_cql(i64::MAX as Seq).unwrap(), i64::MAX);
        assert!(matches!(to_cql(Seq::MAX), Err(Error::BadData(_))));
        assert_eq!(from_cql(42).unwrap(), 42);
        assert!(matches!(from_cql(-1), Err(Error::BadData(_))));
    }

    #[test]
    fn range_bounds_clamp_to_the_largest_bigint() {
        assert_eq!(clamp(5), 5);
        assert_eq!(clamp(Seq::MAX), i64::MAX);
    }

    #[test]
    fn sections_are_stable_and_spread() {
        // FNV-1a of "" is its offset basis, 0xcbf29ce484222325: 0x325 = 805.
        assert_eq!(section_of(""), 805);
        assert_eq!(section_of("u:alice"), section_of("u:alice"));
        let sections: std::collections::HashSet<i32> = (0..1000)
            .map(|i| section_of(&format!("u:user{i}")))
            .collect();
        assert!(sections.len() > 800, "{} distinct", sections.len());
        assert!(sections.iter().all(|s| (0..4096).contains(s)));
    }

    #[test]
    fn page_limits_ask_for_at_least_one_and_at_most_a_page() {
        assert_eq!(page_limit(0), 1);
        assert_eq!(page_limit(7), 7);
        assert_eq!(page_limit(1_000_000), 1000);
    }
}
