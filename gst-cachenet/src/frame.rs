//! Video frame -> model input pixels (u8 HWC at the model size, gray or RGB), without
//! per-frame allocations: nearest-neighbour sampling maps are computed once per caps.

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

/// Scales and converts frames of one video format and size to the model input.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    layout: Layout,
    color: Color,
    out_w: usize,
    out_h: usize,
    xmap: Vec<usize>,
    ymap: Vec<usize>,
}

fn nearest(out: usize, input: usize) -> Vec<usize> {
    (0..out)
        .map(|i| (((2 * i + 1) * input) / (2 * out)).min(input - 1))
        .collect()
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
        Ok(Preprocessor {
            layout,
            color,
            out_w,
            out_h,
            xmap: nearest(out_w, width),
            ymap: nearest(out_h, height),
        })
    }

    /// Bytes of one output frame.
    pub fn output_len(&self) -> usize {
        self.out_w * self.out_h * self.color.channels()
    }

    /// Write the model-size frame into `out` (exactly [`Preprocessor::output_len`] bytes).
    pub fn run(&self, p: &Planes<'_>, out: &mut [u8]) {
        let ch = self.color.channels();
        debug_assert_eq!(out.len(), self.output_len());
        for (oy, &sy) in self.ymap.iter().enumerate() {
            let row = &mut out[oy * self.out_w * ch..(oy + 1) * self.out_w * ch];
            match self.layout {
                Layout::Packed { bpp, r, g, b } => {
                    let src = &p.data[0][sy * p.stride[0]..];
                    for (ox, &sx) in self.xmap.iter().enumerate() {
                        let px = &src[sx * bpp..sx * bpp + bpp];
                        if ch == 1 {
                            row[ox] = luma(px[r], px[g], px[b]);
                        } else {
                            row[ox * 3..ox * 3 + 3].copy_from_slice(&[px[r], px[g], px[b]]);
                        }
                    }
                }
                Layout::Gray => {
                    let src = &p.data[0][sy * p.stride[0]..];
                    for (ox, &sx) in self.xmap.iter().enumerate() {
                        let v = src[sx];
                        if ch == 1 {
                            row[ox] = v;
                        } else {
                            row[ox * 3..ox * 3 + 3].copy_from_slice(&[v, v, v]);
                        }
                    }
                }
                Layout::Yuv420 { interleaved } => {
                    let ysrc = &p.data[0][sy * p.stride[0]..];
                    for (ox, &sx) in self.xmap.iter().enumerate() {
                        let y = ysrc[sx];
                        if ch == 1 {
                            row[ox] = y_to_gray(y);
                            continue;
                        }
                        let (cx, cy) = (sx / 2, sy / 2);
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
                        row[ox * 3..ox * 3 + 3].copy_from_slice(&[r, g, b]);
                    }
                }
            }
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
        let p = Preprocessor::new(VideoFormat::Bgrx, 4, 2, 2, 1, Color::Gray).unwrap();
        let mut out = [0u8; 2];
        p.run(
            &Planes {
                data: [&data, &[], &[]],
                stride: [20, 0, 0],
            },
            &mut out,
        );
        // nearest: x = 1 and 3 of row 1
        assert_eq!(out, [60, 180]);
    }

    #[test]
    fn rgb_channel_order() {
        let data = [10u8, 20, 30, 40, 50, 60, 0, 0];
        let p = Preprocessor::new(VideoFormat::Bgr, 2, 1, 2, 1, Color::Rgb).unwrap();
        let mut out = [0u8; 6];
        p.run(
            &Planes {
                data: [&data, &[], &[]],
                stride: [8, 0, 0],
            },
            &mut out,
        );
        assert_eq!(out, [30, 20, 10, 60, 50, 40]);
        let p = Preprocessor::new(VideoFormat::Xrgb, 2, 1, 1, 1, Color::Rgb).unwrap();
        let data = [0u8, 1, 2, 3, 0, 7, 8, 9];
        let mut out = [0u8; 3];
        p.run(
            &Planes {
                data: [&data, &[], &[]],
                stride: [8, 0, 0],
            },
            &mut out,
        );
        assert_eq!(out, [7, 8, 9]);
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
        let p = Preprocessor::new(VideoFormat::I420, 2, 2, 1, 1, Color::Gray).unwrap();
        let mut g = [0u8];
        p.run(&planes, &mut g);
        assert_eq!(g, [255]);
        let p = Preprocessor::new(VideoFormat::I420, 2, 2, 1, 1, Color::Rgb).unwrap();
        let mut rgb = [0u8; 3];
        p.run(&planes, &mut rgb);
        assert_eq!(rgb, [255, 255, 255]);
        // NV12 pure red-ish: Y=81 U=90 V=240 -> about (255, 0, 0)
        let y = [81u8; 4];
        let uv = [90u8, 240];
        let p = Preprocessor::new(VideoFormat::Nv12, 2, 2, 1, 1, Color::Rgb).unwrap();
        p.run(
            &Planes {
                data: [&y, &uv, &[]],
                stride: [2, 2, 0],
            },
            &mut rgb,
        );
        assert!(rgb[0] > 250 && rgb[1] < 5 && rgb[2] < 5, "{rgb:?}");
    }

    #[test]
    fn unsupported_format_is_an_error() {
        assert!(Preprocessor::new(VideoFormat::Yuy2, 4, 4, 2, 2, Color::Gray).is_err());
    }
}
