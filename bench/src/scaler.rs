//! The element's scaler timed in process, next to a pass that only reads the frame: what the
//! element's overhead at 640x480 is made of, and the floor of any scaler that reads every byte.

use std::hint::black_box;
use std::time::Instant;

use cachenet_core::manifest::InputSpec;
use cachenet_core::scaler::{Layout, Planes, Scaler, YuvMatrix};

/// Distinct frames cycled through for the "from memory" timings: 118 MB, far more than the
/// caches hold, so each frame comes from memory as a camera's frame does.
const FRAMES: usize = 128;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ScalerTimes {
    pub width: usize,
    pub height: usize,
    /// The scaler on the same frame again and again (the frame in cache), us per frame.
    pub cached_us: f64,
    /// The scaler on frames from memory, us per frame.
    pub memory_us: f64,
    /// Reading every byte of a frame from memory and nothing else, us per frame.
    pub read_us: f64,
}

/// XOR of every 8-byte word of `frame`: a pass that reads each byte once, as cheaply as the
/// CPU allows (eight independent lanes).
fn read_all(frame: &[u8]) -> u64 {
    let (blocks, rest) = frame.as_chunks::<64>();
    let mut acc = [0u64; 8];
    for b in blocks {
        let (words, _) = b.as_chunks::<8>();
        for (a, w) in acc.iter_mut().zip(words) {
            *a ^= u64::from_le_bytes(*w);
        }
    }
    acc.iter().fold(0, |x, y| x ^ y) ^ rest.iter().map(|&b| b as u64).sum::<u64>()
}

/// Time the element's scaler on `width` x `height` RGB frames to `to` (the input of the set's
/// first submodel): best of several rounds of each.
pub fn time(width: usize, height: usize, to: &InputSpec) -> Result<ScalerTimes, String> {
    let len = width * height * 3;
    let frames: Vec<Vec<u8>> = (0..FRAMES)
        .map(|f| {
            (0..len)
                .map(|i| ((i * 7919 + f * 31) % 251) as u8)
                .collect()
        })
        .collect();
    let mut pre = Scaler::new(
        Layout::RGB,
        YuvMatrix::BT601,
        width,
        height,
        to.width,
        to.height,
        to.color,
    )?;
    let mut out = vec![0u8; pre.output_len()];
    fn planes(f: &[u8], stride: usize) -> Planes<'_> {
        Planes {
            data: [f, &[], &[]],
            stride: [stride, 0, 0],
        }
    }
    let us = |t: Instant, n: usize| t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let mut cached = f64::MAX;
    let first = planes(&frames[0], width * 3);
    for _ in 0..10 {
        let t = Instant::now();
        for _ in 0..100 {
            pre.run(&first, &mut out);
            black_box(&out);
        }
        cached = cached.min(us(t, 100));
    }
    // Frame k is read at step k and scaled at step k + FRAMES / 2: in between, the passes touch
    // every other frame (118 MB), so each pass meets its frame out of the caches.
    let (mut memory, mut read) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let (mut t_read, mut t_scale) = (0.0, 0.0);
        for i in 0..FRAMES {
            let t = Instant::now();
            black_box(read_all(&frames[i]));
            t_read += t.elapsed().as_secs_f64();
            let p = planes(&frames[(i + FRAMES / 2) % FRAMES], width * 3);
            let t = Instant::now();
            pre.run(&p, &mut out);
            black_box(&out);
            t_scale += t.elapsed().as_secs_f64();
        }
        read = read.min(t_read * 1e6 / FRAMES as f64);
        memory = memory.min(t_scale * 1e6 / FRAMES as f64);
    }
    Ok(ScalerTimes {
        width,
        height,
        cached_us: cached,
        memory_us: memory,
        read_us: read,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_pass_depends_on_every_byte() {
        let frame: Vec<u8> = (0..1000).map(|i| (i * 13 % 256) as u8).collect();
        let whole = 1000 / 64 * 64;
        let words = frame[..whole]
            .chunks_exact(8)
            .fold(0, |x, w| x ^ u64::from_le_bytes(w.try_into().unwrap()));
        let rest: u64 = frame[whole..].iter().map(|&b| b as u64).sum();
        assert_eq!(read_all(&frame), words ^ rest);
        for i in [0, 63, 500, 999] {
            let mut f = frame.clone();
            f[i] ^= 0x10;
            assert_ne!(read_all(&f), read_all(&frame), "byte {i}");
        }
    }

    #[test]
    fn times_a_small_frame() {
        let to = InputSpec {
            width: 28,
            height: 28,
            channels: 1,
            color: cachenet_core::manifest::Color::Gray,
            layout: "NCHW".into(),
            mean: vec![0.0],
            std: vec![1.0],
        };
        let t = time(64, 48, &to).unwrap();
        assert_eq!((t.width, t.height), (64, 48));
        for v in [t.cached_us, t.memory_us, t.read_us] {
            assert!(v.is_finite() && v > 0.0, "{t:?}");
        }
    }
}
