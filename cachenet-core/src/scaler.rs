//! Frame -> model input pixels (u8 HWC at the model size, gray or RGB), without per-frame
//! allocations: the one scaler of the product. The device's element runs it on camera frames
//! and the edge on the frames it decodes, so both sides see the same pixels for the same frame.
//!
//! Scaling is area averaging (a box filter with fractional coverage, the weights computed once
//! per frame size), the same resize the training package uses for its camera-like data
//! (`cachenet_train.replay.area_resize`): a camera frame scaled down keeps the look of the
//! training images instead of the aliasing of nearest-neighbour sampling. Y'CbCr frames are
//! converted with the matrix and range their caps declare ([`YuvMatrix`]).

use crate::manifest::Color;

/// How the pixels of a frame are laid out in its planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Packed RGB-like: bytes per pixel and offsets of R, G, B.
    Packed {
        bpp: usize,
        r: usize,
        g: usize,
        b: usize,
    },
    /// One byte of luma per pixel.
    Gray,
    /// Y plane + chroma at half size in both axes: `interleaved` for NV12 (UV in plane 1), else
    /// I420 (U plane 1, V plane 2).
    Yuv420 { interleaved: bool },
}

impl Layout {
    /// Packed 8-bit RGB.
    pub const RGB: Layout = Layout::Packed {
        bpp: 3,
        r: 0,
        g: 1,
        b: 2,
    };
}

/// A Y'CbCr -> R'G'B' conversion: the luma weights of R and B (`kr`, `kb`) and whether the
/// samples use the full 0-255 range (else the studio range: Y' 16-235, Cb/Cr 16-240).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YuvMatrix {
    pub kr: f32,
    pub kb: f32,
    pub full_range: bool,
}

impl YuvMatrix {
    /// BT.601 (SD), limited range.
    pub const BT601: YuvMatrix = YuvMatrix::bt601(false);

    pub const fn bt601(full_range: bool) -> YuvMatrix {
        YuvMatrix {
            kr: 0.299,
            kb: 0.114,
            full_range,
        }
    }

    pub const fn bt709(full_range: bool) -> YuvMatrix {
        YuvMatrix {
            kr: 0.2126,
            kb: 0.0722,
            full_range,
        }
    }

    pub const fn bt2020(full_range: bool) -> YuvMatrix {
        YuvMatrix {
            kr: 0.2627,
            kb: 0.0593,
            full_range,
        }
    }

    /// The conversion as affine coefficients on 8-bit samples.
    fn coefficients(&self) -> YuvCoefficients {
        let (kr, kb) = (self.kr, self.kb);
        let kg = 1.0 - kr - kb;
        let (y_scale, y_offset, c_scale) = if self.full_range {
            (1.0, 0.0, 1.0)
        } else {
            (255.0 / 219.0, 16.0, 255.0 / 224.0)
        };
        let rv = 2.0 * (1.0 - kr) * c_scale;
        let bu = 2.0 * (1.0 - kb) * c_scale;
        let gu = -2.0 * kb * (1.0 - kb) / kg * c_scale;
        let gv = -2.0 * kr * (1.0 - kr) / kg * c_scale;
        // The luma of the converted pixel with the RGB -> gray weights: Y' plus what the chroma
        // adds when the matrix is not BT.601 (whose Y' already is that luma).
        let luma_u = LUMA[1] * gu + LUMA[2] * bu;
        let luma_v = LUMA[0] * rv + LUMA[1] * gv;
        YuvCoefficients {
            y_scale,
            y_offset,
            rv,
            gu,
            gv,
            bu,
            luma_u,
            luma_v,
        }
    }
}

/// See [`YuvMatrix::coefficients`]: with l = ys (Y - yo), R = l + rv (V - 128),
/// G = l + gu (U - 128) + gv (V - 128), B = l + bu (U - 128).
#[derive(Debug, Clone, Copy)]
struct YuvCoefficients {
    y_scale: f32,
    y_offset: f32,
    rv: f32,
    gu: f32,
    gv: f32,
    bu: f32,
    luma_u: f32,
    luma_v: f32,
}

impl YuvCoefficients {
    /// Whether luma alone gives the gray value within a level at the most saturated chroma
    /// (BT.601: the gray weights are its luma weights, rounded to 1/256).
    fn gray_is_luma(&self) -> bool {
        (self.luma_u.abs() + self.luma_v.abs()) * 128.0 < 1.0
    }

    #[inline(always)]
    fn luma(&self, y: f32) -> f32 {
        (y - self.y_offset) * self.y_scale
    }

    /// Y'CbCr (area averages, unclamped) -> R'G'B', unclamped: the caller rounds and clamps.
    #[inline(always)]
    fn rgb(&self, y: f32, u: f32, v: f32) -> [f32; 3] {
        let (l, d, e) = (self.luma(y), u - 128.0, v - 128.0);
        [
            l + self.rv * e,
            l + self.gu * d + self.gv * e,
            l + self.bu * d,
        ]
    }
}

/// Planes of one mapped frame: data and stride of each.
#[derive(Debug, Clone, Copy)]
pub struct Planes<'a> {
    pub data: [&'a [u8]; 3],
    pub stride: [usize; 3],
}

/// A rectangle of a frame, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rect {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

impl<'a> Planes<'a> {
    /// The planes of the crop `r` of a frame laid out as `layout` (no copy: the slices start at the
    /// crop's first pixel and keep the frame's strides). `r` must lie inside the frame and, for
    /// 4:2:0 layouts, start on even coordinates.
    pub fn crop(&self, layout: Layout, r: Rect) -> Planes<'a> {
        let mut out = *self;
        match layout {
            Layout::Packed { bpp, .. } => {
                out.data[0] = &self.data[0][r.y * self.stride[0] + r.x * bpp..];
            }
            Layout::Gray => {
                out.data[0] = &self.data[0][r.y * self.stride[0] + r.x..];
            }
            Layout::Yuv420 { interleaved } => {
                out.data[0] = &self.data[0][r.y * self.stride[0] + r.x..];
                let (cx, cy) = (r.x / 2, r.y / 2);
                if interleaved {
                    out.data[1] = &self.data[1][cy * self.stride[1] + 2 * cx..];
                } else {
                    out.data[1] = &self.data[1][cy * self.stride[1] + cx..];
                    out.data[2] = &self.data[2][cy * self.stride[2] + cx..];
                }
            }
        }
        out
    }
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
    #[cfg(test)]
    fn taps(&self, o: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let s = self.start[o];
        self.w[self.off[o]..self.off[o + 1]]
            .iter()
            .enumerate()
            .map(move |(k, &w)| (s + k, w))
    }
}

/// The area taps of one output pixel along one axis in "edges + interior" form: input pixels
/// `first + 1..last` are covered whole (weight `norm` each, already normalised), `first` and
/// `last` partly (`w_first`, `w_last`); `last == first` when one input pixel covers it all.
#[derive(Debug, Clone, Copy)]
struct Span {
    first: usize,
    last: usize,
    w_first: f32,
    w_last: f32,
    norm: f32,
}

impl AreaAxis {
    fn spans(&self) -> Vec<Span> {
        (0..self.start.len())
            .map(|o| {
                let w = &self.w[self.off[o]..self.off[o + 1]];
                let first = self.start[o];
                let last = first + w.len() - 1;
                Span {
                    first,
                    last,
                    w_first: w[0],
                    w_last: if last > first { w[w.len() - 1] } else { 0.0 },
                    norm: if w.len() > 2 { w[1] } else { 0.0 },
                }
            })
            .collect()
    }
}

/// The horizontal area average of output pixel `sx` over a summed row of `B`-byte pixels: one
/// pass over the covered pixels, each lane summed in the order of the pixels.
#[inline(always)]
fn reduce<const B: usize>(fsum: &[f32], sx: &Span) -> [f32; 4] {
    let mut inner = [0f32; B];
    if sx.last > sx.first + 1 {
        for px in fsum[(sx.first + 1) * B..sx.last * B].chunks_exact(B) {
            for (s, v) in inner.iter_mut().zip(px) {
                *s += v;
            }
        }
    }
    let (a, b) = (&fsum[sx.first * B..][..B], &fsum[sx.last * B..][..B]);
    let mut lanes = [0f32; 4];
    for c in 0..B {
        lanes[c] = sx.w_first * a[c] + sx.norm * inner[c] + sx.w_last * b[c];
    }
    lanes
}

/// `isum += (the eight rows) x ROW_UNITS`, byte by byte (8 x 255 x 8 fits in 16 bits).
#[inline(always)]
fn add_eight_rows(isum: &mut [u16], r: [&[u8]; 8]) {
    let [a, b, c, d, e, f, g, h] = r;
    let rows = isum.iter_mut().zip(a).zip(b).zip(c).zip(d);
    for ((((((((s, a), b), c), d), e), f), g), h) in rows.zip(e).zip(f).zip(g).zip(h) {
        let top = *a as u16 + *b as u16 + *c as u16 + *d as u16;
        *s += (top + *e as u16 + *f as u16 + *g as u16 + *h as u16) * ROW_UNITS;
    }
}

/// Luma weights (BT.601, 8-bit fixed point) applied to area sums of R, G and B.
const LUMA: [f32; 3] = [77.0 / 256.0, 150.0 / 256.0, 29.0 / 256.0];

/// Row weights in the 16-bit sums of a downscale, in units of 1/ROW_UNITS of a row: a whole
/// row adds ROW_UNITS times its bytes, a partly covered edge row its coverage rounded to a unit
/// (at most 1/16 of a row off; the output is normalised by the units actually summed).
const ROW_UNITS: u16 = 8;

/// Units summed in 16 bits before a flush (256 x 255 < 2^16): 32 whole rows.
const MAX_UNITS: u32 = 256;

/// Scales and converts frames of one layout, colour matrix and size to the model input.
///
/// Vertical first: for each output row, the source rows it covers whole are summed as integers
/// over every byte of the row (one vectorised add per byte), the partly covered edge rows into
/// the same sums with their coverage in eighths of a row (a downscale by 2 or less adds its
/// edge rows with exact float weights); the horizontal reduction and the colour conversion then run once
/// per output pixel. The conversions the model may need after that are linear (RGB -> luma,
/// gray -> RGB) or nearly so (YUV -> RGB: the average of a block is converted, as scaling
/// before converting would); YUV rows are first laid out as Y, U, V bytes per pixel (for a
/// gray model: luma).
#[derive(Debug, Clone)]
pub struct Scaler {
    layout: Layout,
    color: Color,
    yuv: YuvCoefficients,
    /// YUV rows summed as luma alone (a gray model, BT.601-like matrix): one byte per pixel.
    luma_rows: bool,
    width: usize,
    out_w: usize,
    xs: Vec<Span>,
    ys: Vec<Span>,
    /// One YUV source row converted to RGB or gray bytes.
    line: Vec<u8>,
    /// Integer sums of whole rows, one per byte of a row.
    isum: Vec<u16>,
    /// Weighted sums of the rows of one output row, one per byte of a row.
    fsum: Vec<f32>,
}

impl Scaler {
    /// A scaler from `width` x `height` frames laid out as `layout` (Y'CbCr ones converted with
    /// `yuv`) to `out_w` x `out_h` pixels of `color`.
    pub fn new(
        layout: Layout,
        yuv: YuvMatrix,
        width: usize,
        height: usize,
        out_w: usize,
        out_h: usize,
        color: Color,
    ) -> Result<Scaler, String> {
        if width == 0 || height == 0 || out_w == 0 || out_h == 0 {
            return Err("empty video frames".into());
        }
        let yuv = yuv.coefficients();
        let luma_rows = color == Color::Gray && yuv.gray_is_luma();
        let row_bytes = width * Self::bpp(layout, luma_rows);
        Ok(Scaler {
            layout,
            color,
            yuv,
            luma_rows,
            width,
            out_w,
            xs: AreaAxis::new(width, out_w).spans(),
            ys: AreaAxis::new(height, out_h).spans(),
            line: match layout {
                Layout::Yuv420 { .. } => vec![0; row_bytes],
                _ => Vec::new(),
            },
            isum: vec![0; row_bytes],
            fsum: vec![0.0; row_bytes],
        })
    }

    /// Bytes per pixel of the rows that are summed (YUV rows: Y, U, V, or luma alone).
    fn bpp(layout: Layout, luma_rows: bool) -> usize {
        match layout {
            Layout::Packed { bpp, .. } => bpp,
            Layout::Gray => 1,
            Layout::Yuv420 { .. } if luma_rows => 1,
            Layout::Yuv420 { .. } => 3,
        }
    }

    /// The layout of the frames this scaler reads.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Bytes of one output frame.
    pub fn output_len(&self) -> usize {
        self.out_w * self.ys.len() * self.color.channels()
    }

    /// Source row `sy` as the bytes that are summed: packed and gray rows as they are, YUV rows
    /// as Y, U, V per pixel (or, for a gray model and a BT.601-like matrix, luma).
    #[inline(always)]
    fn row<'a>(&'a mut self, p: &'a Planes<'_>, sy: usize) -> &'a [u8] {
        let w = self.width;
        let interleaved = match self.layout {
            Layout::Yuv420 { interleaved } => interleaved,
            layout => {
                let n = w * Self::bpp(layout, false);
                return &p.data[0][sy * p.stride[0]..sy * p.stride[0] + n];
            }
        };
        let ysrc = &p.data[0][sy * p.stride[0]..sy * p.stride[0] + w];
        if self.luma_rows {
            let yuv = self.yuv;
            for (o, &y) in self.line.iter_mut().zip(ysrc) {
                *o = (yuv.luma(y as f32) + 0.5).clamp(0.0, 255.0) as u8;
            }
            return &self.line;
        }
        // Y, U, V bytes per pixel (two pixels share one chroma sample); the area averages are
        // converted once per output pixel.
        let cy = sy / 2;
        let c1 = &p.data[1][cy * p.stride[1]..];
        let c2 = &p.data[2][if interleaved { 0 } else { cy * p.stride[2] }..];
        for (cx, (o, ys)) in self.line.chunks_mut(6).zip(ysrc.chunks(2)).enumerate() {
            let (u, v) = if interleaved {
                (c1[2 * cx], c1[2 * cx + 1])
            } else {
                (c1[cx], c2[cx])
            };
            for (px, &y) in o.chunks_exact_mut(3).zip(ys) {
                px.copy_from_slice(&[y, u, v]);
            }
        }
        &self.line
    }

    /// Add source row `sy` into `fsum` with weight `w` (the rows of a downscale by 2 or less,
    /// or of an upscale).
    #[inline(always)]
    fn add_row(&mut self, p: &Planes<'_>, sy: usize, w: f32) {
        let mut fsum = std::mem::take(&mut self.fsum);
        let row = self.row(p, sy);
        for (s, &v) in fsum.iter_mut().zip(row) {
            *s += w * v as f32;
        }
        self.fsum = fsum;
    }

    /// Add source row `sy` into `isum` with weight `units`.
    #[inline(always)]
    fn add_row_units(&mut self, p: &Planes<'_>, sy: usize, units: u16) {
        let mut isum = std::mem::take(&mut self.isum);
        let row = self.row(p, sy);
        for (s, &v) in isum.iter_mut().zip(row) {
            *s += v as u16 * units;
        }
        self.isum = isum;
    }

    /// Add the `n` whole source rows from `sy` into `isum` with weight `ROW_UNITS` each: packed
    /// or gray rows eight or four at a time (one read-modify-write of the sums per pass), the
    /// rest and YUV rows one by one.
    #[inline(always)]
    fn add_whole_rows(&mut self, p: &Planes<'_>, sy: usize, n: usize) {
        let mut r = sy;
        if !matches!(self.layout, Layout::Yuv420 { .. }) {
            let len = self.isum.len();
            let row = |r: usize| &p.data[0][r * p.stride[0]..][..len];
            // The caller passes at most eight rows.
            if n == 8 {
                add_eight_rows(&mut self.isum, [0, 1, 2, 3, 4, 5, 6, 7].map(|k| row(r + k)));
                r += 8;
            }
            if r + 4 <= sy + n {
                let [a, b, c, d] = [0, 1, 2, 3].map(|k| row(r + k));
                // (Iterators, not indices: no bounds checks, so the loop is vectorised.)
                for ((((s, a), b), c), d) in self.isum.iter_mut().zip(a).zip(b).zip(c).zip(d) {
                    *s += (*a as u16 + *b as u16 + *c as u16 + *d as u16) * ROW_UNITS;
                }
                r += 4;
            }
        }
        for r in r..sy + n {
            self.add_row_units(p, r, ROW_UNITS);
        }
    }

    /// One output row of a downscale (the span has whole rows inside it): every row into the
    /// 16-bit sums with its weight in units, flushed into `fsum` normalised by all units.
    #[inline(always)]
    fn sum_rows_units(&mut self, p: &Planes<'_>, sp: Span) {
        let unit = ROW_UNITS as f32;
        let first = ((sp.w_first / sp.norm) * unit).round() as u16;
        let last = ((sp.w_last / sp.norm) * unit).round() as u16;
        let whole = sp.last - sp.first - 1;
        let total = first as u32 + last as u32 + whole as u32 * ROW_UNITS as u32;
        let scale = 1.0 / total as f32;
        let mut held = 0u32;
        let mut add = |this: &mut Self, units: u32| {
            if held + units > MAX_UNITS {
                this.flush(scale);
                held = 0;
            }
            held += units;
        };
        if first > 0 {
            add(self, first as u32);
            self.add_row_units(p, sp.first, first);
        }
        let mut sy = sp.first + 1;
        while sy < sp.last {
            let n = (sp.last - sy).min(8);
            add(self, n as u32 * ROW_UNITS as u32);
            self.add_whole_rows(p, sy, n);
            sy += n;
        }
        if last > 0 {
            add(self, last as u32);
            self.add_row_units(p, sp.last, last);
        }
        self.flush(scale);
    }

    /// Move the integer sums into `fsum` with weight `norm`.
    #[inline(always)]
    fn flush(&mut self, norm: f32) {
        for (f, i) in self.fsum.iter_mut().zip(self.isum.iter_mut()) {
            *f += norm * *i as f32;
            *i = 0;
        }
    }

    /// Write the model-size frame into `out` (exactly [`Scaler::output_len`] bytes).
    /// Every source pixel is read once per output row it covers (once, or twice on an edge).
    pub fn run(&mut self, p: &Planes<'_>, out: &mut [u8]) {
        crate::cpu::wide(
            #[inline(always)]
            || self.run_here(p, out),
        )
    }

    /// [`Scaler::run`] compiled for the caller's instruction set (inlined, with the
    /// helpers below, into the CPU-specific variants of `run`).
    #[inline(always)]
    fn run_here(&mut self, p: &Planes<'_>, out: &mut [u8]) {
        debug_assert_eq!(out.len(), self.output_len());
        let ch = self.color.channels();
        let bpp = Self::bpp(self.layout, self.luma_rows);
        let gray = self.color == Color::Gray;
        // R, G, B lanes of a summed pixel, None for a one-lane (gray) row.
        let rgb = match self.layout {
            Layout::Packed { r, g, b, .. } => Some([r, g, b]),
            _ => None,
        };
        let yuv = matches!(self.layout, Layout::Yuv420 { .. }) && !self.luma_rows;
        for oy in 0..self.ys.len() {
            let sp = self.ys[oy];
            self.fsum.fill(0.0);
            if sp.last > sp.first + 1 {
                // Whole rows inside: every row into the 16-bit sums.
                self.sum_rows_units(p, sp);
            } else {
                // One or two source rows (a downscale by 2 or less, or an upscale).
                self.add_row(p, sp.first, sp.w_first);
                if sp.last > sp.first {
                    self.add_row(p, sp.last, sp.w_last);
                }
            }
            // Horizontal reduction of the summed row, then the colour conversion.
            let dst = &mut out[oy * self.out_w * ch..(oy + 1) * self.out_w * ch];
            for (ox, sx) in self.xs.iter().enumerate() {
                let lanes = match bpp {
                    1 => reduce::<1>(&self.fsum, sx),
                    3 => reduce::<3>(&self.fsum, sx),
                    _ => reduce::<4>(&self.fsum, sx),
                };
                let px = &mut dst[ox * ch..(ox + 1) * ch];
                let q = |v: f32| (v + 0.5).floor().clamp(0.0, 255.0) as u8;
                if yuv {
                    let [r, g, b] = self.yuv.rgb(lanes[0], lanes[1], lanes[2]);
                    if gray {
                        let c = |v: f32| v.clamp(0.0, 255.0);
                        px[0] = q(LUMA[0] * c(r) + LUMA[1] * c(g) + LUMA[2] * c(b));
                    } else {
                        px.copy_from_slice(&[q(r), q(g), q(b)]);
                    }
                    continue;
                }
                match (rgb, gray) {
                    (Some([r, g, b]), true) => {
                        px[0] = q(LUMA[0] * lanes[r] + LUMA[1] * lanes[g] + LUMA[2] * lanes[b])
                    }
                    (Some([r, g, b]), false) => {
                        px.copy_from_slice(&[q(lanes[r]), q(lanes[g]), q(lanes[b])])
                    }
                    (None, _) => px.fill(q(lanes[0])),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BGRX: Layout = Layout::Packed {
        bpp: 4,
        r: 2,
        g: 1,
        b: 0,
    };

    #[test]
    fn downscales_padded_bgrx_to_gray() {
        // 4x2 BGRx with stride 20 (4 bytes of padding per row), to 2x1 gray.
        let mut data = vec![0u8; 40];
        for x in 0..4 {
            let v = (x * 60) as u8;
            data[20 + x * 4..20 + x * 4 + 4].copy_from_slice(&[v, v, v, 0]); // row 1
        }
        let mut p = Scaler::new(BGRX, YuvMatrix::BT601, 4, 2, 2, 1, Color::Gray).unwrap();
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
        let mut p = Scaler::new(
            Layout::Packed {
                bpp: 3,
                r: 2,
                g: 1,
                b: 0,
            },
            YuvMatrix::BT601,
            2,
            1,
            2,
            1,
            Color::Rgb,
        )
        .unwrap();
        let mut out = [0u8; 6];
        p.run(
            &Planes {
                data: [&data, &[], &[]],
                stride: [8, 0, 0],
            },
            &mut out,
        );
        assert_eq!(out, [30, 20, 10, 60, 50, 40]);
        let mut p = Scaler::new(
            Layout::Packed {
                bpp: 4,
                r: 1,
                g: 2,
                b: 3,
            },
            YuvMatrix::BT601,
            2,
            1,
            1,
            1,
            Color::Rgb,
        )
        .unwrap();
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
        let mut p = Scaler::new(
            Layout::Yuv420 { interleaved: false },
            YuvMatrix::BT601,
            2,
            2,
            1,
            1,
            Color::Gray,
        )
        .unwrap();
        let mut g = [0u8];
        p.run(&planes, &mut g);
        assert_eq!(g, [255]);
        let mut p = Scaler::new(
            Layout::Yuv420 { interleaved: false },
            YuvMatrix::BT601,
            2,
            2,
            1,
            1,
            Color::Rgb,
        )
        .unwrap();
        let mut rgb = [0u8; 3];
        p.run(&planes, &mut rgb);
        assert_eq!(rgb, [255, 255, 255]);
        // NV12 pure red-ish: Y=81 U=90 V=240 -> about (255, 0, 0)
        let y = [81u8; 4];
        let uv = [90u8, 240];
        let mut p = Scaler::new(
            Layout::Yuv420 { interleaved: true },
            YuvMatrix::BT601,
            2,
            2,
            1,
            1,
            Color::Rgb,
        )
        .unwrap();
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
        let mut p = Scaler::new(Layout::Gray, YuvMatrix::BT601, 5, 1, 2, 1, Color::Gray).unwrap();
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

    /// Frames of many rows per output row (the rows summed four at a time, the integer sums
    /// flushed, fractional edges) against the area average computed per pixel from the taps.
    /// Tall spans of bright pixels (39 source rows of 200-255 per output row, more than 16 bits
    /// hold): the sums are flushed inside a span.
    #[test]
    fn tall_spans_match_the_per_pixel_area_average() {
        let (w, h, out_w, out_h) = (37, 1100, 5, 28);
        let mut seed = 3u32;
        let data: Vec<u8> = (0..w * h)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                200 + ((seed >> 16) % 56) as u8
            })
            .collect();
        let mut p = Scaler::new(
            Layout::Gray,
            YuvMatrix::BT601,
            w,
            h,
            out_w,
            out_h,
            Color::Gray,
        )
        .unwrap();
        let mut out = vec![0u8; p.output_len()];
        let planes = Planes {
            data: [&data, &[], &[]],
            stride: [w, 0, 0],
        };
        p.run(&planes, &mut out);
        let (ax, ay) = (AreaAxis::new(w, out_w), AreaAxis::new(h, out_h));
        for oy in 0..out_h {
            for ox in 0..out_w {
                let mut v = 0.0f64;
                for (y, wy) in ay.taps(oy) {
                    for (x, wx) in ax.taps(ox) {
                        v += (wy * wx) as f64 * data[y * w + x] as f64;
                    }
                }
                let got = out[oy * out_w + ox] as f64;
                assert!((got - v).abs() <= 1.0, "({ox}, {oy}): {got} vs {v}");
            }
        }
    }

    #[test]
    fn large_frames_match_the_per_pixel_area_average() {
        for (format, bpp, color) in [
            (Layout::RGB, 3, Color::Rgb),
            (BGRX, 4, Color::Rgb),
            (Layout::Gray, 1, Color::Gray),
        ] {
            let (w, h, out_w, out_h) = (643, 487, 28, 28);
            let stride = w * bpp + 5;
            let mut seed = 7u32;
            let data: Vec<u8> = (0..stride * h)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (seed >> 16) as u8
                })
                .collect();
            let mut p = Scaler::new(format, YuvMatrix::BT601, w, h, out_w, out_h, color).unwrap();
            let mut out = vec![0u8; p.output_len()];
            let planes = Planes {
                data: [&data, &[], &[]],
                stride: [stride, 0, 0],
            };
            p.run(&planes, &mut out);
            let (ax, ay) = (AreaAxis::new(w, out_w), AreaAxis::new(h, out_h));
            let lanes: Vec<usize> = match format {
                BGRX => vec![2, 1, 0],
                Layout::RGB => vec![0, 1, 2],
                _ => vec![0],
            };
            for oy in 0..out_h {
                for ox in 0..out_w {
                    for (c, &lane) in lanes.iter().enumerate() {
                        let mut v = 0.0f64;
                        for (y, wy) in ay.taps(oy) {
                            for (x, wx) in ax.taps(ox) {
                                v += (wy * wx) as f64 * data[y * stride + x * bpp + lane] as f64;
                            }
                        }
                        let got = out[(oy * out_w + ox) * lanes.len() + c] as f64;
                        assert!(
                            (got - v).abs() <= 1.0,
                            "{format:?} ({ox}, {oy}) {c}: {got} vs {v}"
                        );
                    }
                }
            }
        }
    }

    /// The integer form of the conversion, per pixel.
    fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
        let c = (y as i32 - 16).max(0) * 298;
        let (d, e) = (u as i32 - 128, v as i32 - 128);
        [
            c + 409 * e + 128,
            c - 100 * d - 208 * e + 128,
            c + 516 * d + 128,
        ]
        .map(|x| (x >> 8).clamp(0, 255) as u8)
    }

    /// On a block of one colour, averaging then converting is the per-pixel conversion.
    #[test]
    fn yuv_block_converts_like_each_pixel() {
        for (y, u, v) in [
            (81u8, 90u8, 240u8),
            (16, 128, 128),
            (200, 30, 60),
            (128, 200, 100),
        ] {
            let (yp, up, vp) = ([y; 16], [u; 4], [v; 4]);
            let mut p = Scaler::new(
                Layout::Yuv420 { interleaved: false },
                YuvMatrix::BT601,
                4,
                4,
                2,
                2,
                Color::Rgb,
            )
            .unwrap();
            let mut out = [0u8; 12];
            p.run(
                &Planes {
                    data: [&yp, &up, &vp],
                    stride: [4, 2, 2],
                },
                &mut out,
            );
            let want = yuv_to_rgb(y, u, v);
            for px in out.chunks(3) {
                for (a, b) in px.iter().zip(want) {
                    assert!((*a as i32 - b as i32).abs() <= 1, "{px:?} vs {want:?}");
                }
            }
        }
    }
}
