//! What the CPU the code runs on can do, and code compiled for it.
//!
//! Release builds target the architecture's baseline (SSE2 on x86-64) so that they run on
//! every CPU of it. The hot loops that gain from wider vectors (the engine's matrix products,
//! the frame scaler) check the CPU here, once (the standard library caches the answer), and run
//! a variant compiled with the wider instruction set.
//!
//! This module and the engine's matrix kernel (`engine::gemm`) hold the crate's `unsafe` code:
//! calling a function compiled for instructions the baseline lacks is only sound on a CPU that
//! has them, which each call site checks first.

/// Whether this x86-64 CPU has AVX-512 (F and BW) with AVX2 and FMA (every AVX-512 CPU does;
/// checked all the same). False on other architectures.
pub fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && avx2()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this x86-64 CPU has AVX2 and FMA. False on other architectures.
pub fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Run `f` compiled for the widest vectors of this CPU: on x86-64 with AVX-512 or AVX2, `f` is
/// inlined into a function built with those enabled, so that its loops (and what it calls with
/// `#[inline(always)]`) are vectorised with 512- or 256-bit registers. Elsewhere (aarch64's
/// NEON is its baseline) `f` runs as it is. Integer results are the same either way, and so
/// are floating-point ones: the compiler neither reassociates nor fuses float operations.
#[inline(always)]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512() {
            // SAFETY: the CPU has every feature `x86::v4` enables (checked just above).
            #[allow(unsafe_code)]
            return unsafe { x86::v4(f) };
        }
        if avx2() {
            // SAFETY: the CPU has every feature `x86::v3` enables (checked just above).
            #[allow(unsafe_code)]
            return unsafe { x86::v3(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub(super) fn v4<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn v3<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}
