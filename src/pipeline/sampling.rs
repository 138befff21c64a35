//! Deterministic point sampling. The reference draws prompt points with
//! `torch.randint`/`randperm` (`select_points`), so its zoom-in point
//! prompts differ run to run. Here every draw comes from a SplitMix64
//! stream seeded by (seed, category, window): the same inputs and seed give
//! the same points, and the distribution is the reference's (one uniform
//! positive, then k distinct uniform positives, which may repeat the first).

/// SplitMix64: tiny, fast, and good enough for picking voxels.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A stream derived from a seed and a path of integers.
    pub fn derive(seed: u64, path: &[u64]) -> Self {
        let mut r = Rng(seed ^ 0x5EC0_701D_5EC0_701D);
        for &p in path {
            r.0 ^= p.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            r.next_u64();
        }
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by Lemire's multiply-shift.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// `randperm(n)[:k]`: k distinct uniform indices in random order.
    pub fn distinct(&mut self, n: usize, k: usize) -> Vec<usize> {
        let k = k.min(n);
        let mut out: Vec<usize> = Vec::with_capacity(k);
        if k * 4 >= n {
            // Dense case: a partial Fisher-Yates over the whole range.
            let mut all: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = i + self.below(n - i);
                all.swap(i, j);
            }
            out.extend_from_slice(&all[..k]);
        } else {
            while out.len() < k {
                let c = self.below(n);
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        out
    }
}

/// `select_points`: from the positive (and, for the demo, negative) voxel
/// lists, one random positive, `pos_extra` distinct random positives,
/// `neg_extra` distinct random negatives, padded with `(-1,-1,-1)` / label
/// −1 to `1 + pos_extra + neg_extra` points. With no positive at all, the
/// first point is a padding point and no extra positives are drawn.
pub fn select_points(
    rng: &mut Rng,
    positives: &[[usize; 3]],
    negatives: &[[usize; 3]],
    pos_extra: usize,
    neg_extra: usize,
) -> Vec<([f32; 3], f32)> {
    let to_f = |p: &[usize; 3]| p.map(|v| v as f32);
    let pad = ([-1.0f32; 3], -1.0f32);
    let mut pts = Vec::new();
    let mut pos_extra = pos_extra;
    if positives.is_empty() {
        pos_extra = 0;
        pts.push(pad);
    } else {
        pts.push((to_f(&positives[rng.below(positives.len())]), 1.0));
    }
    for i in rng.distinct(positives.len(), pos_extra) {
        pts.push((to_f(&positives[i]), 1.0));
    }
    if neg_extra > 0 {
        for i in rng.distinct(negatives.len(), neg_extra) {
            pts.push((to_f(&negatives[i]), 0.0));
        }
    }
    while pts.len() < 1 + pos_extra + neg_extra {
        pts.push(pad);
    }
    pts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let mut a = Rng::derive(7, &[1, 2]);
        let mut b = Rng::derive(7, &[1, 2]);
        let mut c = Rng::derive(7, &[2, 1]);
        let va: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let vb: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let vc: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(va, vb);
        assert_ne!(va, vc);
        for _ in 0..1000 {
            assert!(a.below(7) < 7);
        }
        let d = a.distinct(10, 10);
        let mut s = d.clone();
        s.sort();
        assert_eq!(s, (0..10).collect::<Vec<_>>());
        let d = a.distinct(1_000_000, 4);
        assert_eq!(d.len(), 4);
    }

    #[test]
    fn select_points_shapes() {
        let mut r = Rng::new(1);
        let pos = vec![[1, 2, 3], [4, 5, 6]];
        // Zoom-in default (4 extra positives, no negatives): 1 + 2 drawn + 2 pads.
        let p = select_points(&mut r, &pos, &[], 4, 0);
        assert_eq!(p.len(), 5);
        assert_eq!(p.iter().filter(|x| x.1 == 1.0).count(), 3);
        assert_eq!(p.iter().filter(|x| x.1 == -1.0).count(), 2);
        // No positives: a single padding point.
        let p = select_points(&mut r, &[], &[], 4, 0);
        assert_eq!(p, vec![([-1.0; 3], -1.0)]);
        // Demo zoom-out (3 + 3): 7 points.
        let neg: Vec<[usize; 3]> = (0..50).map(|i| [0, 0, i]).collect();
        let p = select_points(&mut r, &pos, &neg, 3, 3);
        assert_eq!(p.len(), 7);
        assert_eq!(p.iter().filter(|x| x.1 == 0.0).count(), 3);
    }
}
