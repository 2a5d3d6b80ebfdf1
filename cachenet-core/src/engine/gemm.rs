//! Matrix products of the engine's plan: `C = A B (+ bias per row, then ReLU)` with `A` the
//! layer's weights, known when the model is loaded.
//!
//! On an x86-64 CPU with AVX-512 the weights are packed once, at load, into panels of 8 rows
//! (`k x 8` each, the 8 values of one column adjacent) and a kernel compiled for AVX-512
//! reads `B` where it lies (the im2col buffer or the Winograd tiles, row-major), 48 output
//! columns at a time (16 at the end of a row), with the bias in the accumulators and the ReLU at the store: nothing is
//! packed or copied per run. Everywhere else (AVX2-only x86-64, aarch64 NEON) the weights stay
//! row-major and `matrixmultiply` runs the product with the kernels it picks at run time.
//!
//! This module holds the only `unsafe` code of the engine: calling the AVX-512 function once
//! the CPU is known to have AVX-512, and the masked vector loads and stores it makes. Each
//! block says why it stays inside its slices.

use tract_onnx::prelude::tract_ndarray::linalg::general_mat_mul;
use tract_onnx::prelude::tract_ndarray::{ArrayView2, ArrayViewMut2};

/// Rows of `A` per panel of the AVX-512 kernel.
const MR: usize = 8;

/// The weights `A` (`m x k`) of one matrix product, in the layout of the kernel that runs it.
#[derive(Debug)]
pub(super) struct Weights {
    m: usize,
    k: usize,
    layout: Layout,
}

#[derive(Debug)]
enum Layout {
    /// Row-major, for `matrixmultiply`.
    Rows(Vec<f32>),
    /// Panels of [`MR`] rows (zero rows after the last), `k x MR` each, for the AVX-512 kernel.
    Panels(Vec<f32>),
}

/// Whether this CPU runs the AVX-512 code (AVX-512F with AVX2 and FMA, as every AVX-512 CPU
/// has; checked all the same).
fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl Weights {
    /// `a` is `m x k`, row-major (ONNX's layout of convolution weights).
    pub(super) fn new(a: Vec<f32>, m: usize, k: usize) -> Self {
        Self::with_kernel(a, m, k, true)
    }

    /// As [`Weights::new`], with the packed AVX-512 layout only if `packed` (and the CPU has it).
    pub(super) fn with_kernel(a: Vec<f32>, m: usize, k: usize, packed: bool) -> Self {
        assert_eq!(a.len(), m * k, "weights are not m x k");
        let layout = if packed && avx512() {
            let mut p = vec![0.0; m.div_ceil(MR) * MR * k];
            for (r, row) in a.chunks_exact(k).enumerate() {
                let panel = &mut p[(r / MR) * MR * k..][..MR * k];
                for (kk, &v) in row.iter().enumerate() {
                    panel[kk * MR + r % MR] = v;
                }
            }
            Layout::Panels(p)
        } else {
            Layout::Rows(a)
        };
        Weights { m, k, layout }
    }

    /// Whether the product runs on the packed AVX-512 kernel.
    #[cfg(test)]
    pub(super) fn packed(&self) -> bool {
        matches!(self.layout, Layout::Panels(_))
    }

    /// `c = A b (+ bias[row]) (then max(0, .))`, with `b` `k x n` and `c` `m x n`, row-major.
    pub(super) fn product(
        &self,
        b: &[f32],
        n: usize,
        c: &mut [f32],
        bias: Option<&[f32]>,
        relu: bool,
    ) {
        let (m, k) = (self.m, self.k);
        assert!(
            b.len() >= k * n && c.len() >= m * n,
            "product operands too short"
        );
        assert!(bias.is_none_or(|b| b.len() >= m), "bias too short");
        match &self.layout {
            Layout::Rows(a) => {
                let a = ArrayView2::from_shape((m, k), &a[..]).expect("weight shape");
                let b = ArrayView2::from_shape((k, n), &b[..k * n]).expect("input shape");
                let c = &mut c[..m * n];
                let mut cv = ArrayViewMut2::from_shape((m, n), &mut *c).expect("output shape");
                general_mat_mul(1.0, &a, &b, 0.0, &mut cv);
                if bias.is_none() && !relu {
                    return;
                }
                for (r, row) in c.chunks_exact_mut(n).enumerate() {
                    let add = bias.map_or(0.0, |b| b[r]);
                    if relu {
                        row.iter_mut().for_each(|v| *v = (*v + add).max(0.0));
                    } else {
                        row.iter_mut().for_each(|v| *v += add);
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            Layout::Panels(p) => {
                // SAFETY: a `Panels` layout is only made when the CPU has AVX-512F
                // (`with_kernel` checks `avx512()`), the one feature `x86::product` enables.
                #[allow(unsafe_code)]
                unsafe {
                    x86::product(p, m, k, b, n, c, bias, relu)
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            Layout::Panels(_) => unreachable!("packed weights only on x86-64"),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use std::arch::x86_64::*;

    use super::MR;

    /// The AVX-512 product over packed panels (see [`super::Weights::product`]; the caller
    /// checked the lengths of `b`, `c` and `bias`): strips of 48 columns, then of 16.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn product(
        panels: &[f32],
        m: usize,
        k: usize,
        b: &[f32],
        n: usize,
        c: &mut [f32],
        bias: Option<&[f32]>,
        relu: bool,
    ) {
        // Strip by strip (each strip of `b` stays in the cache while every panel of the
        // weights passes over it), panel by panel.
        let wide = n / 48 * 48;
        let strips = (0..wide)
            .step_by(48)
            .map(|j| (j, 3))
            .chain((wide..n).step_by(16).map(|j| (j, 1)));
        for (j0, nv) in strips {
            for (p, panel) in panels.chunks_exact(MR * k).enumerate() {
                let rows = (m - p * MR).min(MR);
                let bias: [f32; MR] = std::array::from_fn(|i| match bias {
                    Some(bias) if i < rows => bias[p * MR + i],
                    _ => 0.0,
                });
                let c = &mut c[p * MR * n..];
                if nv == 3 {
                    strip::<3>(panel, rows, b, n, j0, c, &bias, relu);
                } else {
                    strip::<1>(panel, rows, b, n, j0, c, &bias, relu);
                }
            }
        }
    }

    /// Mask of the first `lanes` (at most 16) lanes.
    fn mask(lanes: usize) -> __mmask16 {
        ((1u32 << lanes.min(16)) - 1) as u16
    }

    /// Rows `0..rows` of one panel times columns `j0..j0 + 16 NV` of `b` (fewer at the end of
    /// a row) into `c` (which starts at the panel's first row).
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn strip<const NV: usize>(
        panel: &[f32],
        rows: usize,
        b: &[f32],
        n: usize,
        j0: usize,
        c: &mut [f32],
        bias: &[f32; MR],
        relu: bool,
    ) {
        let masks: [__mmask16; NV] = std::array::from_fn(|v| mask((n - j0).saturating_sub(16 * v)));
        let mut acc: [[__m512; NV]; MR] = std::array::from_fn(|i| [_mm512_set1_ps(bias[i]); NV]);
        for (kk, a) in panel.chunks_exact(MR).enumerate() {
            let a: &[f32; MR] = a.try_into().expect("panel column");
            let row = &b[kk * n + j0..];
            // SAFETY: `row` holds at least `n - j0` values (`b` holds `k x n`, `kk < k`); the
            // mask of vector v loads only lanes 16 v + l < n - j0 (none when 16 v >= n - j0,
            // where the pointer may lie past `row` but is not read).
            let bv: [__m512; NV] = std::array::from_fn(|v| unsafe {
                _mm512_maskz_loadu_ps(masks[v], row.as_ptr().wrapping_add(16 * v))
            });
            for (acc, &a) in acc.iter_mut().zip(a) {
                let a = _mm512_set1_ps(a);
                for (acc, bv) in acc.iter_mut().zip(&bv) {
                    *acc = _mm512_fmadd_ps(a, *bv, *acc);
                }
            }
        }
        let zero = _mm512_setzero_ps();
        for (i, acc) in acc.iter().enumerate().take(rows) {
            let out = &mut c[i * n + j0..];
            for (v, acc) in acc.iter().enumerate() {
                let x = if relu {
                    _mm512_max_ps(*acc, zero)
                } else {
                    *acc
                };
                // SAFETY: `out` holds at least `n - j0` values (`c` holds the panel's rows of
                // `n`); the mask stores only lanes 16 v + l < n - j0.
                unsafe {
                    _mm512_mask_storeu_ps(out.as_mut_ptr().wrapping_add(16 * v), masks[v], x)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(
        a: &[f32],
        m: usize,
        k: usize,
        b: &[f32],
        n: usize,
        bias: &[f32],
        relu: bool,
    ) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for r in 0..m {
            for j in 0..n {
                let v = (0..k).map(|kk| a[r * k + kk] * b[kk * n + j]).sum::<f32>() + bias[r];
                c[r * n + j] = if relu { v.max(0.0) } else { v };
            }
        }
        c
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn both_layouts_match_the_definition() {
        // Rows not a multiple of the panel, columns not a multiple of the vector, k of 1.
        let shapes = [
            (16, 9, 784),
            (5, 1, 3),
            (33, 70, 49),
            (128, 128, 16),
            (20, 288, 17),
            (1, 4, 1),
        ];
        for (seed, &(m, k, n)) in shapes.iter().enumerate() {
            let a = values(m * k, seed as u32);
            let b = values(k * n, seed as u32 + 100);
            let bias = values(m, seed as u32 + 200);
            for packed in [false, true] {
                let w = Weights::with_kernel(a.clone(), m, k, packed);
                assert_eq!(w.packed(), packed && avx512());
                for (with_bias, relu) in
                    [(false, false), (true, false), (true, true), (false, true)]
                {
                    let zeros = vec![0.0; m];
                    let used = if with_bias { &bias } else { &zeros };
                    let want = naive(&a, m, k, &b, n, used, relu);
                    // Output with a sentinel tail: nothing past m x n is written.
                    let mut c = vec![7.0; m * n + 5];
                    w.product(&b, n, &mut c, with_bias.then_some(&bias[..]), relu);
                    for (i, (x, y)) in c.iter().zip(&want).enumerate() {
                        assert!(
                            (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                            "{m}x{k}x{n} packed {packed} bias {with_bias} relu {relu}: c[{i}] = {x}, want {y}"
                        );
                    }
                    assert!(
                        c[m * n..].iter().all(|&v| v == 7.0),
                        "wrote past the output"
                    );
                }
            }
        }
    }
}
