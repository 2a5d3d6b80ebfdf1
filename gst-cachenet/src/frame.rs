//! Video frame -> model input pixels (u8 HWC at the model size, gray or RGB), without
//! per-frame allocations. Scaling is area averaging (a box filter with fractional coverage,
//! the weights computed once per caps), the same resize the training package uses for its
//! camera-like data (`cachenet_train.replay.area_resize`): a camera frame scaled down keeps the
//! look of the training images instead of the aliasing of nearest-neighbour sampling.

use cachenet_core::manifest::Color;
use gst_video::VideoFormat;

/// Formats the element accepts (sink caps).
pub const FORMATS: [VideoFormat; 11] = [
    VideoFormat::Rgb,
    VideoFormat::Bgr,
    VideoFormat::Rgba,
    VideoFormat::Bgra,
    VideoFormat::Rgbx,
    VideoFormat::Bgrx,
    VideoFormat::Xrgb,
    VideoFormat::Xbgr,
    VideoFormat::Gray8,
    VideoFormat::I420,
    VideoFormat::Nv12,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Packed RGB-like: bytes per pixel and offsets of R, G, B.
    Packed {
        bpp: usize,
        r: usize,
        g: usize,
        b: usize,
    },
    Gray,
    /// Y plane + chroma: `interleaved` for NV12 (UV in plane 1), else I420 (U plane 1, V plane 2).
    Yuv420 {
        interleaved: bool,
    },
}

fn layout(format: VideoFormat) -> Option<Layout> {
    use VideoFormat::*;
    let packed = |bpp, r, g, b| Some(Layout::Packed { bpp, r, g, b });
    match format {
        Rgb => packed(3, 0, 1, 2),
        Bgr => packed(3, 2, 1, 0),
        Rgba | Rgbx => packed(4, 0, 1, 2),
        Bgra | Bgrx => packed(4, 2, 1, 0),
        Xrgb | Argb => packed(4, 1, 2, 3),
        Xbgr | Abgr => packed(4, 3, 2, 1),
        Gray8 => Some(Layout::Gray),
        I420 => Some(Layout::Yuv420 { interleaved: false }),
        Nv12 => Some(Layout::Yuv420 { interleaved: true }),
        _ => None,
    }
}

/// Planes of one mapped frame: data and stride of each.
#[derive(Debug, Clone, Copy)]
pub struct Planes<'a> {
    pub data: [&'a [u8]; 3],
    pub stride: [usize; 3],
}

#[inline]
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((77 * r as u32 + 150 * g as u32 + 29 * b as u32 + 128) >> 8) as u8
}

#[inline]
fn clamp(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// BT.601 limited range Y'CbCr -> full range RGB.
#[inline]
fn yuv_to_rgb(y: u8, u: u8, v: u8) -> (u8, u8, u8) {
    let c = (y as i32 - 16).max(0) * 298;
    let d = u as i32 - 128;
    let e = v as i32 - 128;
    (
        clamp((c + 409 * e + 128) >> 8),
        clamp((c - 100 * d - 208 * e + 128) >> 8),
        clamp((c + 516 * d + 128) >> 8),
    )
}

#[inline]
fn y_to_gray(y: u8) -> u8 {
    clamp(((y as i32 - 16) * 298 + 128) >> 8)
}

/// Area-averaging weights along one axis: output pixel `o` averages the input interval
/// `[o * n_in / n_out, (o + 1) * n_in / n_out)`, each input pixel weighted by its coverage.
#[derive(Debug, Clone)]
struct AreaAxis {
    /// First input index of each output pixel.
    start: Vec<usize>,
    /// Offset of each output pixel's weights in `w` (len n_out + 1).
    off: Vec<usize>,
    w: Vec<f32>,
}

impl AreaAxis {
    fn new(n_in: usize, n_out: usize) -> AreaAxis {
        let scale = n_in as f64 / n_out as f64;
        let mut start = Vec::with_capacity(n_out);
        let mut off = vec![0];
        let mut w = Vec::new();
        for o in 0..n_out {
            let (a, b) = (o as f64 * scale, (o + 1) as f64 * scale);
            let first = a.floor() as usize;
            let last = (b.ceil() as usize).min(n_in);
            let ws: Vec<f64> = (first..last)
                .map(|i| b.min(i as f64 + 1.0) - a.max(i as f64))
                .collect();
            let sum: f64 = ws.iter().sum();
            start.push(first);
            w.extend(ws.iter().map(|v| (v / sum) as f32));
            off.push(w.len());
        }
        AreaAxis { start, off, w }
    }

    /// (input index, weight) pairs of output pixel `o`.
    #[inline]
    fn taps(&self, o: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let s = self.start[o];
        self.w[self.off[o]..self.off[o + 1]]
            .iter()
            .enumerate()
            .map(move |(k, &w)| (s + k, w))
    }
}

/// Scales and converts frames of one video format and size to the model input.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    layout: Layout,
    color: Color,
    width: usize,
    out_w: usize,
    out_h: usize,
    xs: AreaAxis,
    /// For each source row, the output rows it covers and with which weight.
    rows: Vec<Vec<(usize, f32)>>,
    /// One source row converted to the model's channels (width x channels).
    line: Vec<f32>,
    /// The whole output frame being accumulated (out_w x out_h x channels).
    acc: Vec<f32>,
}

impl Preprocessor {
    pub fn new(
        format: VideoFormat,
        width: usize,
        height: usize,
        out_w: usize,
        out_h: usize,
        color: Color,
    ) -> Result<Preprocessor, String> {
        let layout =
            layout(format).ok_or_else(|| format!("unsupported video format {format:?}"))?;
        if width == 0 || height == 0 {
            return Err("empty video frames".into());
        }
        let ys = AreaAxis::new(height, out_h);
        let mut rows = vec![Vec::new(); height];
        for oy in 0..out_h {
            for (sy, w) in ys.taps(oy) {
                rows[sy].push((oy, w));
            }
        }
        let ch = color.channels();
        Ok(Preprocessor {
            layout,
            color,
            width,
            out_w,
            out_h,
            xs: AreaAxis::new(width, out_w),
            rows,
            line: vec![0.0; width * ch],
            acc: vec![0.0; out_w * out_h * ch],
        })
    }

    /// Bytes of one output frame.
    pub fn output_len(&self) -> usize {
        self.out_w * self.out_h * self.color.channels()
    }

    /// Source row `sy` in the model's channels, into `line`.
    fn convert_row(&mut self, p: &Planes<'_>, sy: usize) {
        let w = self.width;
        let line = &mut self.line;
        let gray = self.color == Color::Gray;
        match self.layout {
            Layout::Packed { bpp, r, g, b } => {
                let src = &p.data[0][sy * p.stride[0]..sy * p.stride[0] + w * bpp];
                if gray {
                    for (o, px) in line.iter_mut().zip(src.chunks_exact(bpp)) {
                        *o = luma(px[r], px[g], px[b]) as f32;
                    }
                } else {
                    for (o, px) in line.chunks_exact_mut(3).zip(src.chunks_exact(bpp)) {
                        o[0] = px[r] as f32;
                        o[1] = px[g] as f32;
                        o[2] = px[b] as f32;
                    }
                }
            }
            Layout::Gray => {
                let src = &p.data[0][sy * p.stride[0]..sy * p.stride[0] + w];
                if gray {
                    for (o, &v) in line.iter_mut().zip(src) {
                        *o = v as f32;
                    }
                } else {
                    for (o, &v) in line.chunks_exact_mut(3).zip(src) {
                        o.fill(v as f32);
                    }
                }
            }
            Layout::Yuv420 { interleaved } => {
                let ysrc = &p.data[0][sy * p.stride[0]..sy * p.stride[0] + w];
                if gray {
                    for (o, &y) in line.iter_mut().zip(ysrc) {
                        *o = y_to_gray(y) as f32;
                    }
                    return;
                }
                let cy = sy / 2;
                for (sx, (o, &y)) in line.chunks_exact_mut(3).zip(ysrc).enumerate() {
                    let cx = sx / 2;
                    let (u, v) = if interleaved {
                        let uv = &p.data[1][cy * p.stride[1] + 2 * cx..];
                        (uv[0], uv[1])
                    } else {
                        (
                            p.data[1][cy * p.stride[1] + cx],
                            p.data[2][cy * p.stride[2] + cx],
                        )
                    };
                    let (r, g, b) = yuv_to_rgb(y, u, v);
                    o[0] = r as f32;
                    o[1] = g as f32;
                    o[2] = b as f32;
                }
            }
        }
    }

    /// Write the model-size frame into `out` (exactly [`Preprocessor::output_len`] bytes).
    /// Every source pixel is read once: its row is converted, reduced horizontally by the
    /// area weights and added to the output rows it covers.
    pub fn run(&mut self, p: &Planes<'_>, out: &mut [u8]) {
        let ch = self.color.channels();
        debug_assert_eq!(out.len(), self.output_len());
        self.acc.fill(0.0);
        for sy in 0..self.rows.len() {
            if self.rows[sy].is_empty() {
                continue;
            }
            self.convert_row(p, sy);
            for ox in 0..self.out_w {
                let mut s = [0.0f32; 3];
                for (sx, wx) in self.xs.taps(ox) {
                    let px = &self.line[sx * ch..(sx + 1) * ch];
                    for (acc, v) in s.iter_mut().zip(px) {
                        *acc += wx * v;
                    }
                }
                for &(oy, wy) in &self.rows[sy] {
                    let at = (oy * self.out_w + ox) * ch;
                    for (a, v) in self.acc[at..at + ch].iter_mut().zip(&s) {
                        *a += wy * v;
                    }
                }
            }
        }
        for (o, a) in out.iter_mut().zip(&self.acc) {
            *o = (a + 0.5).floor().clamp(0.0, 255.0) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downscales_padded_bgrx_to_gray() {
        // 4x2 BGRx with stride 20 (4 bytes of padding per row), to 2x1 gray.
        let mut data = vec![0u8; 40];
        for x in 0..4 {
            let v = (x * 60) as u8;
            data[20 + x * 4..20 + x * 4 + 4].copy_from_slice(&[v, v, v, 0]); // row 1
        }
        let mut p = Preprocessor::new(VideoFormat::Bgrx, 4, 2, 2, 1, Color::Gray).unwrap();
        let mut out = [0u8; 2];
        p.run(
            &Planes {
                data: [&data, &[], &[]],
                stride: [20, 0, 0],
            },
            &mut out,
        );
        // area average of 2x2 blocks: row 0 is black, row 1 holds 0, 60 | 120, 180
        assert_eq!(out, [15, 75]);
    }

    #[test]
    fn rgb_channel_order() {
        let data = [10u8, 20, 30, 40, 50, 60, 0, 0];
        let mut p = Preprocessor::new(VideoFormat::Bgr, 2, 1, 2, 1, Color::Rgb).unwrap();
        let mut out = [0u8; 6];
        p.run(
            &Planes {
                data: [&data, &[], &[]],
                stride: [8, 0, 0],
            },
            &mut out,
        );
        assert_eq!(out, [30, 20, 10, 60, 50, 40]);
        let mut p = Preprocessor::new(VideoFormat::Xrgb, 2, 1, 1, 1, Color::Rgb).unwrap();
        let data = [0u8, 1, 2, 3, 0, 7, 8, 9];
        let mut out = [0u8; 3];
        p.run(
            &Planes {
                data: [&data, &[], &[]],
                stride: [8, 0, 0],
            },
            &mut out,
        );
        // the mean of (1, 2, 3) and (7, 8, 9)
        assert_eq!(out, [4, 5, 6]);
    }

    #[test]
    fn yuv_to_gray_and_rgb() {
        // 2x2 I420: Y = 235 (white), U = V = 128.
        let y = [235u8; 4];
        let u = [128u8];
        let v = [128u8];
        let planes = Planes {
            data: [&y, &u, &v],
            stride: [2, 1, 1],
        };
        let mut p = Preprocessor::new(VideoFormat::I420, 2, 2, 1, 1, Color::Gray).unwrap();
        let mut g = [0u8];
        p.run(&planes, &mut g);
        assert_eq!(g, [255]);
        let mut p = Preprocessor::new(VideoFormat::I420, 2, 2, 1, 1, Color::Rgb).unwrap();
        let mut rgb = [0u8; 3];
        p.run(&planes, &mut rgb);
        assert_eq!(rgb, [255, 255, 255]);
        // NV12 pure red-ish: Y=81 U=90 V=240 -> about (255, 0, 0)
        let y = [81u8; 4];
        let uv = [90u8, 240];
        let mut p = Preprocessor::new(VideoFormat::Nv12, 2, 2, 1, 1, Color::Rgb).unwrap();
        p.run(
            &Planes {
                data: [&y, &uv, &[]],
                stride: [2, 2, 0],
            },
            &mut rgb,
        );
        assert!(rgb[0] > 250 && rgb[1] < 5 && rgb[2] < 5, "{rgb:?}");
    }

    /// Fractional coverage, as `cachenet_train.replay.area_weights` computes it: 5 -> 2 pixels
    /// gives weights (1, 1, 0.5) / 2.5 and (0.5, 1, 1) / 2.5.
    #[test]
    fn area_weights_with_fractional_coverage() {
        let a = AreaAxis::new(5, 2);
        let t0: Vec<_> = a.taps(0).collect();
        let t1: Vec<_> = a.taps(1).collect();
        assert_eq!(t0, vec![(0, 0.4), (1, 0.4), (2, 0.2)]);
        assert_eq!(t1, vec![(2, 0.2), (3, 0.4), (4, 0.4)]);
        // Upscaling: 2 -> 4, each output pixel inside one input pixel.
        let a = AreaAxis::new(2, 4);
        assert_eq!(a.taps(1).collect::<Vec<_>>(), vec![(0, 1.0)]);
        assert_eq!(a.taps(2).collect::<Vec<_>>(), vec![(1, 1.0)]);
        // A 5x1 gray ramp to 2x1.
        let data = [0u8, 50, 100, 150, 200];
        let mut p = Preprocessor::new(VideoFormat::Gray8, 5, 1, 2, 1, Color::Gray).unwrap();
        let mut out = [0u8; 2];
        p.run(
            &Planes {
                data: [&data, &[], &[]],
                stride: [5, 0, 0],
            },
            &mut out,
        );
        // (0*.4 + 50*.4 + 100*.2) = 40, (100*.2 + 150*.4 + 200*.4) = 160
        assert_eq!(out, [40, 160]);
    }

    #[test]
    fn unsupported_format_is_an_error() {
        assert!(Preprocessor::new(VideoFormat::Yuy2, 4, 4, 2, 2, Color::Gray).is_err());
    }
}
