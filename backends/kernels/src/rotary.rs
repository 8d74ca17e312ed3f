//! Rotary position embedding in Hugging Face's rotate-half layout, applied in place.

use super::simd::isa_specialised;

isa_specialised! {
    /// `x ← x·cos + rotate_half(x)·sin` for every head of `x` (heads of `cos.len()` values each),
    /// where `rotate_half([a, b]) = [-b, a]` and `cos`/`sin` are one position's table rows
    /// (`[head_dim]`, halves repeated as transformers builds them).
    pub fn rotate_half(x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let d = cos.len().min(sin.len());
        let half = d / 2;
        if half == 0 {
            return;
        }
        for head in x.chunks_exact_mut(d) {
            let (a, b) = head.split_at_mut(half);
            let (cos_a, cos_b) = cos.split_at(half);
            let (sin_a, sin_b) = sin.split_at(half);
            for i in 0..half {
                let (x1, x2) = (a[i], b[i]);
                a[i] = x1 * cos_a[i] - x2 * sin_a[i];
                b[i] = x2 * cos_b[i] + x1 * sin_b[i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_each_pair_by_its_angle() {
        // Two heads of 4; pair (x0, x2) at angle 2, pair (x1, x3) at angle 0.02.
        let (a0, a1) = (2.0f32, 0.02f32);
        let cos = [a0.cos(), a1.cos(), a0.cos(), a1.cos()];
        let sin = [a0.sin(), a1.sin(), a0.sin(), a1.sin()];
        let mut x = [1.0f32, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0];
        rotate_half(&mut x, &cos, &sin);
        let want = [
            1.0 * a0.cos() - 3.0 * a0.sin(),
            2.0 * a1.cos() - 4.0 * a1.sin(),
            3.0 * a0.cos() + 1.0 * a0.sin(),
            4.0 * a1.cos() + 2.0 * a1.sin(),
        ];
        for (got, want) in x.iter().zip(want.iter().chain(&want)) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }
}
