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

use std::sync::atomic::{AtomicU8, Ordering};

/// The AVX-512 switch: 0 not read yet, 1 allowed, 2 switched off.
static AVX512_SWITCH: AtomicU8 = AtomicU8::new(0);

/// Switch the AVX-512 code paths off (`false`) or back on, for this process: models loaded
/// afterwards take the path of CPUs without AVX-512 (`matrixmultiply`'s kernels for the
/// engine's products, AVX2 for the scaler), the path ARM boards and most desktop CPUs take. The
/// environment variable `CACHENET_AVX512=0` does the same from the start. Results are the same
/// on either path up to float rounding (tests compare them).
pub fn set_avx512(enabled: bool) {
    AVX512_SWITCH.store(if enabled { 1 } else { 2 }, Ordering::Release);
}

#[cfg(target_arch = "x86_64")]
fn avx512_allowed() -> bool {
    match AVX512_SWITCH.load(Ordering::Acquire) {
        1 => true,
        2 => false,
        _ => {
            let off = std::env::var("CACHENET_AVX512").is_ok_and(|v| v.trim() == "0");
            // A concurrent set_avx512 wins over the environment.
            let _ = AVX512_SWITCH.compare_exchange(
                0,
                if off { 2 } else { 1 },
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            AVX512_SWITCH.load(Ordering::Acquire) == 1
        }
    }
}

/// Whether this x86-64 CPU has AVX-512 (F and BW) with AVX2 and FMA (every AVX-512 CPU does;
/// checked all the same) and the AVX-512 paths are not switched off ([`set_avx512`]). False on
/// other architectures.
pub fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx512_allowed()
            && std::arch::is_x86_feature_detected!("avx512f")
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
