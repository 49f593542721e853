//! Which live instance owns each shard: rendezvous hashing (each shard goes
//! to the instance with the highest hash of (instance, shard)), so that an
//! instance joining or leaving moves only the shards it takes or had.

use super::shards::{SHARDS, fnv1a};

/// MurmurHash3's 64-bit finalizer: FNV-1a alone lets the first bytes
/// decide the high bits, so names that differ early would win every shard.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn weight(instance: &str, shard: u16) -> u64 {
    let mut bytes = Vec::with_capacity(instance.len() + 2);
    bytes.extend_from_slice(instance.as_bytes());
    bytes.extend_from_slice(&shard.to_be_bytes());
    fmix64(fnv1a(&bytes))
}

/// The instance `shard` is assigned to, among `live` (none when empty).
pub fn owner_of(shard: u16, live: &[String]) -> Option<&String> {
    live.iter()
        .max_by_key(|instance| (weight(instance, shard), instance.as_str()))
}

/// The shards assigned to `me` among `live` (`me` counted as live).
pub fn assigned_to(me: &str, live: &[String]) -> Vec<u16> {
    let mut all: Vec<String> = live.to_vec();
    if !all.iter().any(|i| i == me) {
        all.push(me.to_owned());
    }
    (0..SHARDS)
        .filter(|shard| owner_of(*shard, &all).is_some_and(|owner| owner == me))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names as instances get them (a name and an incarnation), fixed so
    /// the test is the same every run: set `seed` picks the incarnations.
    fn names(n: usize, seed: u64) -> Vec<String> {
        (0..n as u64)
            .map(|i| {
                let incarnation = (seed * 8 + i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                format!(
                    "{}-{incarnation:016x}",
                    ["a", "b", "c", "d"][i as usize % 4]
                )
            })
            .collect()
    }

    #[test]
    fn every_shard_has_exactly_one_owner_and_the_load_is_even() {
        for seed in 0..50 {
            shares_are_even(&names(3, seed));
        }
    }

    fn shares_are_even(live: &[String]) {
        let shares: Vec<Vec<u16>> = live.iter().map(|me| assigned_to(me, live)).collect();
        let total: usize = shares.iter().map(Vec::len).sum();
        assert_eq!(total, usize::from(SHARDS));
        for share in &shares {
            // 1024 / 3 = 341; rendezvous over few instances is within a fifth.
            assert!(
                (273..=410).contains(&share.len()),
                "{} of {live:?}",
                share.len()
            );
        }
    }

    #[test]
    fn an_instance_leaving_moves_only_its_own_shards() {
        let live = names(3, 0);
        let fewer = live[..2].to_vec();
        for shard in 0..SHARDS {
            let before = owner_of(shard, &live);
            let after = owner_of(shard, &fewer);
            if before != Some(&live[2]) {
                assert_eq!(before, after, "shard {shard} moved");
            }
        }
    }

    #[test]
    fn one_instance_owns_every_shard() {
        assert_eq!(assigned_to("only", &[]).len(), usize::from(SHARDS));
    }
}
