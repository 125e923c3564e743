//! Addressable randomness: every sample's draws come from `(seed, epoch, index)`,
//! so a batch is the same whatever the number of threads, and a resumed run sees
//! the same data.

/// SplitMix64 finaliser, a good 64-bit mixer.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small, fast generator (xoshiro256**) seeded from a sample's address.
#[derive(Debug, Clone)]
pub struct SampleRng {
    s: [u64; 4],
}

impl SampleRng {
    /// The generator of sample `index` in `epoch` of a run seeded with `seed`.
    pub fn new(seed: u64, epoch: u64, index: u64) -> Self {
        let mut z = mix(seed ^ 0x9e37_79b9_7f4a_7c15);
        z = mix(z ^ epoch.wrapping_mul(0xd1b5_4a32_d192_ed03));
        z = mix(z ^ index.wrapping_mul(0x8cb9_2ba7_2f3d_8dd7));
        let mut s = [0u64; 4];
        for (i, v) in s.iter_mut().enumerate() {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            *v = mix(z ^ i as u64);
        }
        Self { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Uniform integer in `[lo, hi]` (inclusive).
    pub fn int_range(&mut self, lo: i64, hi: i64) -> i64 {
        let span = (hi - lo + 1).max(1) as u64;
        lo + (self.next_u64() % span) as i64
    }

    /// `true` with probability `p`.
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// A random permutation of `0..n` (Fisher–Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.int_range(0, i as i64) as usize;
            v.swap(i, j);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_address_same_stream_different_address_different_stream() {
        let a: Vec<u64> = (0..4).map(|_| SampleRng::new(1, 2, 3).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut x = SampleRng::new(1, 2, 3);
        let mut y = SampleRng::new(1, 2, 4);
        let mut z = SampleRng::new(1, 3, 3);
        let (vx, vy, vz) = (x.next_u64(), y.next_u64(), z.next_u64());
        assert!(vx != vy && vx != vz && vy != vz);
    }

    #[test]
    fn uniform_draws_cover_their_range() {
        let mut r = SampleRng::new(0, 0, 0);
        let draws: Vec<f64> = (0..10_000).map(|_| r.uniform(-15.0, 15.0)).collect();
        assert!(draws.iter().all(|d| (-15.0..15.0).contains(d)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!(mean.abs() < 0.5, "{mean}");
        let mut p = r.permutation(10);
        p.sort_unstable();
        assert_eq!(p, (0..10).collect::<Vec<_>>());
    }
}
