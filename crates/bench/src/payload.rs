//! Object payloads: unique, incompressible, and re-derivable from a seed.
//!
//! An object's bytes are a function of its seed and their offset: the object
//! is cut into [`PAYLOAD_BLOCK_BYTES`] blocks, and block `b` is the output of
//! xoshiro256++ seeded from `(seed, b)` through SplitMix64. So any byte range
//! (a multipart part, a GET body arriving in pieces) is generated without the
//! bytes before it, nothing is stored to verify a read (regenerate and
//! compare), and no two blocks of any two objects are alike, which leaves
//! deduplication and compression nothing to gain. It is not cryptographic;
//! it only has to be fast (several GB/s per core) and never repeat.
//! This module knows nothing of HTTP.

/// The unit of generation: large enough that seeding a block costs nothing,
/// small enough that a partial block at a part boundary costs little.
pub const PAYLOAD_BLOCK_BYTES: usize = 4096;

const BLOCK: u64 = PAYLOAD_BLOCK_BYTES as u64;

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256++: the payload generator, and the workers' random choices.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole state comes from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        Self {
            s: [
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
            ],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A number in `0..bound` (0 when `bound` is 0), by multiply-shift.
    pub fn below(&mut self, bound: u64) -> u64 {
        let wide = u128::from(self.next_u64()) * u128::from(bound);
        // The high half of a 64x64 product always fits in 64 bits.
        u64::try_from(wide >> 64).unwrap_or(0)
    }
}

/// Block `block` of the object with `seed`.
fn block_bytes(seed: u64, block: u64, out: &mut [u8; PAYLOAD_BLOCK_BYTES]) {
    let mut sm = seed;
    let mixed = splitmix64(&mut sm) ^ block.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    let mut rng = Rng::new(mixed);
    for chunk in out.chunks_exact_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
}

/// Fills `out` with the object's bytes from `offset` on.
pub fn fill(seed: u64, offset: u64, out: &mut [u8]) {
    let mut block = [0u8; PAYLOAD_BLOCK_BYTES];
    let mut position = offset;
    let mut written = 0;
    while written < out.len() {
        let index = position / BLOCK;
        let skip = usize::try_from(position % BLOCK).unwrap_or(0);
        block_bytes(seed, index, &mut block);
        let take = (PAYLOAD_BLOCK_BYTES - skip).min(out.len() - written);
        out[written..written + take].copy_from_slice(&block[skip..skip + take]);
        written += take;
        position += take as u64;
    }
}

/// Compares bytes as they arrive with what the object must hold there,
/// without buffering the object.
#[derive(Debug)]
pub struct Verifier {
    seed: u64,
    offset: u64,
    expected: Vec<u8>,
    mismatch_at: Option<u64>,
}

impl Verifier {
    /// Expects the object with `seed` from byte `offset` on.
    #[must_use]
    pub fn new(seed: u64, offset: u64) -> Self {
        Self {
            seed,
            offset,
            expected: Vec::new(),
            mismatch_at: None,
        }
    }

    /// Checks the next piece of the body.
    pub fn update(&mut self, data: &[u8]) {
        if self.mismatch_at.is_none() {
            self.expected.resize(data.len(), 0);
            fill(self.seed, self.offset, &mut self.expected);
            if let Some(i) = data.iter().zip(&self.expected).position(|(a, b)| a != b) {
                self.mismatch_at = Some(self.offset + i as u64);
            }
        }
        self.offset += data.len() as u64;
    }

    /// How many bytes were seen.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The first offset that differed, if any.
    #[must_use]
    pub fn mismatch_at(&self) -> Option<u64> {
        self.mismatch_at
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn bytes(seed: u64, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        fill(seed, offset, &mut out);
        out
    }

    /// Shannon entropy in bits per byte.
    fn entropy(data: &[u8]) -> f64 {
        let mut counts = [0u64; 256];
        for b in data {
            counts[usize::from(*b)] += 1;
        }
        let n = data.len() as f64;
        counts
            .iter()
            .filter(|c| **c > 0)
            .map(|c| {
                let p = *c as f64 / n;
                -p * p.log2()
            })
            .sum()
    }

    #[test]
    fn deterministic_per_seed_and_offset() {
        let whole = bytes(42, 0, 3 * PAYLOAD_BLOCK_BYTES + 100);
        assert_eq!(whole, bytes(42, 0, whole.len()));
        // Any range is the same slice of the whole, across block boundaries.
        for (offset, len) in [(0, 1), (1, 4095), (4095, 2), (5000, 7000), (12_000, 388)] {
            let start = usize::try_from(offset).unwrap();
            assert_eq!(
                bytes(42, offset, len),
                whole[start..start + len],
                "{offset}+{len}"
            );
        }
    }

    #[test]
    fn distinct_across_seeds_and_blocks() {
        let mut blocks = std::collections::HashSet::new();
        for seed in 0..8u64 {
            let data = bytes(seed, 0, 16 * PAYLOAD_BLOCK_BYTES);
            for block in data.chunks(PAYLOAD_BLOCK_BYTES) {
                assert!(blocks.insert(block.to_vec()), "a block repeats");
            }
        }
        assert_eq!(blocks.len(), 8 * 16);
        let (a, b) = (bytes(1, 0, 4096), bytes(2, 0, 4096));
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!(same < 64, "seeds 1 and 2 agree on {same} of 4096 bytes");
    }

    #[test]
    fn incompressible() {
        let data = bytes(7, 0, 1 << 20);
        let h = entropy(&data);
        assert!(h > 7.999, "entropy {h} bits per byte");
        // Counter-check: the estimate does see structure where there is some.
        let text: Vec<u8> = b"nuage bench "
            .iter()
            .copied()
            .cycle()
            .take(1 << 20)
            .collect();
        assert!(entropy(&text) < 4.0);
    }

    #[test]
    fn verifier_finds_the_first_difference() {
        let data = bytes(9, 100, 10_000);
        let mut ok = Verifier::new(9, 100);
        for piece in data.chunks(777) {
            ok.update(piece);
        }
        assert_eq!(ok.mismatch_at(), None);
        assert_eq!(ok.offset(), 10_100);
        let mut bad_data = data.clone();
        bad_data[5000] ^= 1;
        let mut bad = Verifier::new(9, 100);
        for piece in bad_data.chunks(1024) {
            bad.update(piece);
        }
        assert_eq!(bad.mismatch_at(), Some(5100));
        let mut other_seed = Verifier::new(10, 100);
        other_seed.update(&data);
        assert!(other_seed.mismatch_at().is_some_and(|at| at < 200));
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = Rng::new(1);
        assert_eq!(rng.below(0), 0);
        for _ in 0..1000 {
            assert!(rng.below(3) < 3);
        }
    }
}
