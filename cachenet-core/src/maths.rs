//! Softmax, predictive entropy (paper eq 14) and argmax.

/// Numerically stable softmax of `logits` into `out` (same length).
pub fn softmax_into(logits: &[f32], out: &mut [f32]) {
    debug_assert_eq!(logits.len(), out.len());
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for (o, &l) in out.iter_mut().zip(logits) {
        *o = (l - max).exp();
        sum += *o;
    }
    if sum > 0.0 && sum.is_finite() {
        out.iter_mut().for_each(|o| *o /= sum);
    } else {
        let u = 1.0 / out.len().max(1) as f32;
        out.iter_mut().for_each(|o| *o = u);
    }
}

/// Softmax returning a new vector.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; logits.len()];
    softmax_into(logits, &mut out);
    out
}

/// Predictive entropy H = -sum p ln p, in nats (0 ln 0 = 0).
pub fn entropy(probs: &[f32]) -> f32 {
    -probs
        .iter()
        .filter(|&&p| p > 0.0)
        .map(|&p| p * p.ln())
        .sum::<f32>()
}

/// Index of the largest value (first one on ties); 0 for an empty slice.
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

/// A classification: class, its probability, the entropy and all probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    pub class_id: usize,
    pub confidence: f32,
    pub entropy: f32,
    pub probabilities: Vec<f32>,
}

impl Classification {
    /// From raw logits.
    pub fn from_logits(logits: &[f32]) -> Self {
        Self::from_probabilities(softmax(logits))
    }

    pub fn from_probabilities(probabilities: Vec<f32>) -> Self {
        let class_id = argmax(&probabilities);
        Classification {
            class_id,
            confidence: probabilities.get(class_id).copied().unwrap_or(0.0),
            entropy: entropy(&probabilities),
            probabilities,
        }
    }

    /// A cache hit iff H < T (paper appendix A).
    pub fn is_hit(&self, threshold: f32) -> bool {
        self.entropy < threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_uniform_is_ln_n() {
        let p = vec![0.25; 4];
        assert!((entropy(&p) - 4f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn entropy_of_one_hot_is_zero() {
        assert_eq!(entropy(&[0.0, 1.0, 0.0]), 0.0);
    }

    #[test]
    fn entropy_hand_checked() {
        // -(0.5 ln 0.5 + 0.25 ln 0.25 * 2) = 1.0397208
        assert!((entropy(&[0.5, 0.25, 0.25]) - 1.039_720_8).abs() < 1e-6);
    }

    #[test]
    fn softmax_is_stable_and_sums_to_one() {
        let p = softmax(&[1000.0, 1000.0, -1000.0]);
        assert!((p[0] - 0.5).abs() < 1e-6 && (p[1] - 0.5).abs() < 1e-6 && p[2] == 0.0);
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p[2] - 0.665_240_9).abs() < 1e-6);
    }

    #[test]
    fn hit_is_strictly_below_threshold() {
        let c = Classification::from_probabilities(vec![0.5, 0.5]);
        let h = c.entropy;
        assert!(!c.is_hit(h), "H == T is a miss");
        assert!(c.is_hit(h + 1e-4));
        assert_eq!(c.class_id, 0);
    }

    #[test]
    fn argmax_first_on_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax(&[]), 0);
    }
}
