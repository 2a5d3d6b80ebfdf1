//! Pixels at model size -> the model's input tensor.

use crate::manifest::InputSpec;

/// Normalise `hwc` (u8, row-major, `spec.channels` interleaved, exactly `spec.len()` values)
/// into `out` (NCHW f32, same length): `(v / 255 - mean[c]) / std[c]`.
pub fn normalize_into(hwc: &[u8], spec: &InputSpec, out: &mut [f32]) {
    let c = spec.channels;
    let plane = spec.width * spec.height;
    debug_assert_eq!(hwc.len(), plane * c);
    debug_assert_eq!(out.len(), plane * c);
    for ch in 0..c {
        let scale = 1.0 / (255.0 * spec.std[ch]);
        let shift = spec.mean[ch] / spec.std[ch];
        let dst = &mut out[ch * plane..(ch + 1) * plane];
        for (i, d) in dst.iter_mut().enumerate() {
            *d = hwc[i * c + ch] as f32 * scale - shift;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Color;

    #[test]
    fn normalises_and_transposes() {
        let spec = InputSpec {
            width: 2,
            height: 1,
            channels: 3,
            color: Color::Rgb,
            layout: "NCHW".into(),
            mean: vec![0.0, 0.5, 1.0],
            std: vec![1.0, 0.5, 2.0],
        };
        let hwc = [255, 0, 51, 0, 255, 102];
        let mut out = [0.0; 6];
        normalize_into(&hwc, &spec, &mut out);
        let want = [1.0, 0.0, -1.0, 1.0, (0.2 - 1.0) / 2.0, (0.4 - 1.0) / 2.0];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
    }
}
