//! A seeded input mutator for the hostile-input tests (shared by the proto
//! and gateway tests through `#[path]`): byte flips, insertions, deletions,
//! truncation, duplication and splices of values known to break parsers.
//! Deterministic for a seed, so a failure reproduces.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Values that often sit on a parser's edge.
const SPLICES: &[&str] = &[
    "1e309",
    "-0",
    "-1",
    "1.5",
    "18446744073709551615",
    "18446744073709551616",
    "null",
    "true",
    "[]",
    "{}",
    "\"\"",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "%FF",
    "%00",
    "%",
    "&",
    "=",
    "+",
    "..",
    "dm:",
    "g:",
    ":",
    "\u{feff}",
    "\u{202e}",
    "é",
    "\\",
    "\"",
    "{\"a\":",
    "[[[[[[[[",
];

/// A deterministic mutator.
pub struct Mutator {
    rng: StdRng,
}

impl Mutator {
    /// A mutator whose outputs are fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Mutator {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The random source, for generators built on top.
    #[allow(dead_code, reason = "not every includer builds generators")]
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// One to four random edits of `seed`.
    pub fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut data = seed.to_vec();
        for _ in 0..self.rng.random_range(1..=4) {
            self.edit(&mut data);
        }
        data
    }

    fn edit(&mut self, data: &mut Vec<u8>) {
        let at = self.rng.random_range(0..=data.len());
        match self.rng.random_range(0..7) {
            0 if at < data.len() => data[at] ^= 1 << self.rng.random_range(0..8),
            1 => data.insert(at, self.rng.random()),
            2 if at < data.len() => {
                let end = self.rng.random_range(at..=data.len());
                data.drain(at..end);
            }
            3 => data.truncate(at),
            4 if at < data.len() => {
                let end = self.rng.random_range(at..=data.len().min(at + 64));
                let copy = data[at..end].to_vec();
                data.splice(at..at, copy);
            }
            _ => {
                let splice = SPLICES[self.rng.random_range(0..SPLICES.len())];
                data.splice(at..at, splice.bytes());
            }
        }
    }
}
