//! Matrix products of the engine's plan: `C = A W (+ bias per column, then ReLU)`, with `A`
//! the activations (`m x k`, one row per pixel or Winograd tile, channels along the row) and
//! `W` the layer's weights (`k x n`, one column per output channel), known at load.
//!
//! On an x86-64 CPU with AVX-512 the weights are packed once, at load, into strips of 16-64
//! columns (`k x 16 v` each, zero after the last column), and a kernel compiled for AVX-512
//! keeps a block of `C` (6-16 rows of one strip) in registers while it walks `k`: one vector
//! load per 16 weights, one broadcast per activation, the bias in the accumulators and the
//! ReLU at the store; the activations are read where they lie. Everywhere else (AVX2-only
//! x86-64, aarch64 NEON) the weights stay row-major and `matrixmultiply` runs the product
//! with the kernels it picks at run time.
//!
//! This module holds the engine's `unsafe` code: calling the AVX-512 function once the CPU is
//! known to have AVX-512 (see [`crate::cpu`]), and the vector loads and stores it makes. Each
//! block says why it stays inside its slices.

use tract_onnx::prelude::tract_ndarray::linalg::general_mat_mul;
use tract_onnx::prelude::tract_ndarray::{ArrayView2, ArrayViewMut2};

use crate::cpu::avx512;

/// The weights `W` (`k x n`) of one matrix product, in the layout of the kernel that runs it.
#[derive(Debug)]
pub(super) struct Weights {
    k: usize,
    n: usize,
    layout: Layout,
}

#[derive(Debug)]
enum Layout {
    /// Row-major, for `matrixmultiply`.
    Rows(Vec<f32>),
    /// Column strips for the AVX-512 kernel: `(first column, vectors of 16)` and the packed
    /// values, strip after strip (`k x 16 v` each).
    Strips(Vec<(usize, usize)>, Vec<f32>),
}

/// Widths of the column strips, in vectors of 16: as many of 64 columns as fit, then one
/// narrower strip for the rest.
fn strips(n: usize) -> Vec<(usize, usize)> {
    (0..n)
        .step_by(64)
        .map(|j| (j, (n - j).min(64).div_ceil(16)))
        .collect()
}

impl Weights {
    /// `w` is `k x n`, row-major.
    pub(super) fn new(w: Vec<f32>, k: usize, n: usize) -> Self {
        Self::with_kernel(w, k, n, true)
    }

    /// As [`Weights::new`], packed for the AVX-512 kernel only if `packed` (and the CPU has it).
    pub(super) fn with_kernel(w: Vec<f32>, k: usize, n: usize, packed: bool) -> Self {
        assert_eq!(w.len(), k * n, "weights are not k x n");
        let layout = if packed && avx512() {
            let strips = strips(n);
            let mut p = Vec::with_capacity(strips.iter().map(|s| 16 * s.1 * k).sum());
            for &(j0, v) in &strips {
                let cols = (n - j0).min(16 * v);
                for row in w.chunks_exact(n) {
                    p.extend_from_slice(&row[j0..j0 + cols]);
                    p.resize(p.len() + 16 * v - cols, 0.0);
                }
            }
            Layout::Strips(strips, p)
        } else {
            Layout::Rows(w)
        };
        Weights { k, n, layout }
    }

    /// Whether the product runs on the packed AVX-512 kernel.
    #[cfg(test)]
    pub(super) fn packed(&self) -> bool {
        matches!(self.layout, Layout::Strips(..))
    }

    /// `c = a W (+ bias[column]) (then max(0, .))`, with `a` `m x k` and `c` `m x n`, row-major.
    pub(super) fn product(
        &self,
        a: &[f32],
        m: usize,
        c: &mut [f32],
        bias: Option<&[f32]>,
        relu: bool,
    ) {
        let (k, n) = (self.k, self.n);
        assert!(
            a.len() >= m * k && c.len() >= m * n,
            "product operands too short"
        );
        assert!(bias.is_none_or(|b| b.len() >= n), "bias too short");
        if m == 0 {
            return;
        }
        match &self.layout {
            Layout::Rows(w) => {
                let wv = ArrayView2::from_shape((k, n), &w[..]).expect("weight shape");
                let av = ArrayView2::from_shape((m, k), &a[..m * k]).expect("input shape");
                let c = &mut c[..m * n];
                let mut cv = ArrayViewMut2::from_shape((m, n), &mut *c).expect("output shape");
                general_mat_mul(1.0, &av, &wv, 0.0, &mut cv);
                if bias.is_none() && !relu {
                    return;
                }
                for row in c.chunks_exact_mut(n) {
                    for (j, v) in row.iter_mut().enumerate() {
                        let x = *v + bias.map_or(0.0, |b| b[j]);
                        *v = if relu { x.max(0.0) } else { x };
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            Layout::Strips(strips, p) => {
                // SAFETY: a `Strips` layout is only made when the CPU has AVX-512F
                // (`with_kernel` checks `cpu::avx512()`), the one feature `x86::product` enables.
                #[allow(unsafe_code)]
                unsafe {
                    x86::product(strips, p, k, n, a, m, c, bias, relu)
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            Layout::Strips(..) => unreachable!("packed weights only on x86-64"),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use std::arch::x86_64::*;

    /// The AVX-512 product (see [`super::Weights::product`]; the caller checked the lengths
    /// of `a`, `c` and `bias`, and that `m > 0`).
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn product(
        strips: &[(usize, usize)],
        packed: &[f32],
        k: usize,
        n: usize,
        a: &[f32],
        m: usize,
        c: &mut [f32],
        bias: Option<&[f32]>,
        relu: bool,
    ) {
        let mut offset = 0;
        for &(j0, v) in strips {
            let w = &packed[offset..][..16 * v * k];
            offset += 16 * v * k;
            let s = Strip {
                w,
                k,
                n,
                j0,
                bias,
                relu,
            };
            // Rows per block: as many as keep 24 accumulators (16 for one vector) in registers.
            match v {
                1 => s.run::<16, 1>(a, m, c),
                2 => s.run::<12, 2>(a, m, c),
                3 => s.run::<8, 3>(a, m, c),
                _ => s.run::<6, 4>(a, m, c),
            }
        }
    }

    /// One strip of packed weights (`k x 16 NV`), for columns `j0..` of `c`.
    struct Strip<'a> {
        w: &'a [f32],
        k: usize,
        n: usize,
        j0: usize,
        bias: Option<&'a [f32]>,
        relu: bool,
    }

    impl Strip<'_> {
        #[target_feature(enable = "avx512f")]
        fn run<const MR: usize, const NV: usize>(&self, a: &[f32], m: usize, c: &mut [f32]) {
            let (k, n, j0) = (self.k, self.n, self.j0);
            let cols = (n - j0).min(16 * NV);
            let masks: [__mmask16; NV] = std::array::from_fn(|v| {
                let lanes = cols.saturating_sub(16 * v).min(16);
                ((1u32 << lanes) - 1) as u16
            });
            let init: [__m512; NV] = std::array::from_fn(|v| match self.bias {
                // SAFETY: the bias holds `n` values; the mask loads only columns below `n`.
                Some(b) => unsafe {
                    _mm512_maskz_loadu_ps(masks[v], b[j0..].as_ptr().wrapping_add(16 * v))
                },
                None => _mm512_setzero_ps(),
            });
            let zero = _mm512_setzero_ps();
            for r0 in (0..m).step_by(MR) {
                let rows = (m - r0).min(MR);
                // Rows past the end repeat the last one (computed, not stored).
                let mut ar: [&[f32]; MR] = [&[]; MR];
                for (i, ar) in ar.iter_mut().enumerate() {
                    *ar = &a[(r0 + i.min(rows - 1)) * k..][..k];
                }
                let mut acc = [init; MR];
                for (kk, wrow) in self.w.chunks_exact(16 * NV).enumerate() {
                    let mut wv = [zero; NV];
                    for (v, wv) in wv.iter_mut().enumerate() {
                        // SAFETY: `wrow` holds 16 NV values; vector v reads 16 v..16 v + 16.
                        *wv = unsafe { _mm512_loadu_ps(wrow.as_ptr().add(16 * v)) };
                    }
                    for (acc, ar) in acc.iter_mut().zip(&ar) {
                        let x = _mm512_set1_ps(ar[kk]);
                        for (acc, wv) in acc.iter_mut().zip(&wv) {
                            *acc = _mm512_fmadd_ps(x, *wv, *acc);
                        }
                    }
                }
                for (i, acc) in acc.iter().enumerate().take(rows) {
                    let out = &mut c[(r0 + i) * n + j0..];
                    for (v, acc) in acc.iter().enumerate() {
                        let x = if self.relu {
                            _mm512_max_ps(*acc, zero)
                        } else {
                            *acc
                        };
                        // SAFETY: `out` holds `n - j0 >= cols` values (`c` holds `m x n`); the
                        // mask stores only lanes 16 v + l < cols.
                        unsafe {
                            _mm512_mask_storeu_ps(
                                out.as_mut_ptr().wrapping_add(16 * v),
                                masks[v],
                                x,
                            )
                        };
                    }
                }
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
        w: &[f32],
        n: usize,
        bias: &[f32],
        relu: bool,
    ) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for r in 0..m {
            for j in 0..n {
                let v = (0..k).map(|kk| a[r * k + kk] * w[kk * n + j]).sum::<f32>() + bias[j];
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
        // (m, k, n): every strip width (16, 32, 48, 64 and partial ones), rows that are not
        // a multiple of a block, a single row, k of 1.
        let shapes = [
            (784, 9, 32),
            (3, 1, 5),
            (49, 70, 33),
            (16, 128, 128),
            (17, 288, 20),
            (1, 4, 1),
            (7, 13, 80),
            (13, 5, 160),
            (5, 3, 48),
            (11, 6, 100),
        ];
        for (seed, &(m, k, n)) in shapes.iter().enumerate() {
            let a = values(m * k, seed as u32);
            let w = values(k * n, seed as u32 + 100);
            let bias = values(n, seed as u32 + 200);
            for packed in [false, true] {
                let wt = Weights::with_kernel(w.clone(), k, n, packed);
                assert_eq!(wt.packed(), packed && avx512());
                for (with_bias, relu) in
                    [(false, false), (true, false), (true, true), (false, true)]
                {
                    let zeros = vec![0.0; n];
                    let used = if with_bias { &bias } else { &zeros };
                    let want = naive(&a, m, k, &w, n, used, relu);
                    // Output with a sentinel tail: nothing past m x n is written.
                    let mut c = vec![7.0; m * n + 5];
                    wt.product(&a, m, &mut c, with_bias.then_some(&bias[..]), relu);
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
