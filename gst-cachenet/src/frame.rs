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

/// A rectangle of a frame, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rect {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

/// Bytes per row and rows of each plane of a `width` x `height` frame of `format`: what a
/// buffer must hold of each plane (its last row need not be padded to the stride). None for a
/// format the element does not take.
pub fn plane_rows(format: VideoFormat, width: usize, height: usize) -> Option<PlaneRows> {
    let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
    let one = |row| PlaneRows {
        rows: [(row, height), (0, 0), (0, 0)],
        n: 1,
    };
    Some(match layout(format)? {
        Layout::Packed { bpp, .. } => one(width * bpp),
        Layout::Gray => one(width),
        Layout::Yuv420 { interleaved: false } => PlaneRows {
            rows: [(width, height), (cw, ch), (cw, ch)],
            n: 3,
        },
        Layout::Yuv420 { interleaved: true } => PlaneRows {
            rows: [(width, height), (2 * cw, ch), (0, 0)],
            n: 2,
        },
    })
}

/// See [`plane_rows`].
#[derive(Debug, Clone, Copy)]
pub struct PlaneRows {
    rows: [(usize, usize); 3],
    n: usize,
}

impl PlaneRows {
    /// (bytes per row, rows) of each plane.
    pub fn as_slice(&self) -> &[(usize, usize)] {
        &self.rows[..self.n]
    }
}

/// The planes of the frame of `info` in `data`, the whole buffer `buf` mapped: at the offsets
/// and strides of the buffer's video meta when it has one (padded rows from a camera driver,
/// planes anywhere), else of `info`. Every plane is checked to lie inside `data` (its last row
/// may be unpadded), so that all the scaler reads is in the buffer: a buffer smaller than its
/// planes, or a negative or too short stride, is an error. (GStreamer maps such a buffer, and
/// `VideoFrameRef::plane_data` hands out stride x rows bytes whatever the buffer holds.)
pub fn buffer_planes<'a>(
    data: &'a [u8],
    buf: &gst::BufferRef,
    info: &gst_video::VideoInfo,
) -> Result<Planes<'a>, String> {
    let meta = buf.meta::<gst_video::VideoMeta>();
    let (offsets, strides) = match &meta {
        Some(m) => (m.offset(), m.stride()),
        None => (info.offset(), info.stride()),
    };
    let rows = plane_rows(info.format(), info.width() as usize, info.height() as usize)
        .ok_or_else(|| format!("unsupported video format {:?}", info.format()))?;
    let rows = rows.as_slice();
    if offsets.len() < rows.len() || strides.len() < rows.len() {
        return Err(format!(
            "{} planes described for a {:?} frame",
            offsets.len().min(strides.len()),
            info.format()
        ));
    }
    let mut p = Planes {
        data: [&[], &[], &[]],
        stride: [0; 3],
    };
    for (i, &(row, n)) in rows.iter().enumerate() {
        let stride = usize::try_from(strides[i])
            .ok()
            .filter(|&s| s >= row)
            .ok_or_else(|| format!("plane {i}: stride {} for rows of {row} bytes", strides[i]))?;
        let start = offsets[i];
        let end = (n - 1)
            .checked_mul(stride)
            .and_then(|v| v.checked_add(start)?.checked_add(row))
            .filter(|&end| end <= data.len())
            .ok_or_else(|| {
                format!(
                    "plane {i} ({n} rows of {row} bytes, stride {stride}, offset {start}) does \
                     not fit in a buffer of {} bytes",
                    data.len()
                )
            })?;
        p.data[i] = &data[start..end];
        p.stride[i] = stride;
    }
    Ok(p)
}

impl<'a> Planes<'a> {
    /// The planes of the crop `r` of a frame of `format` (no copy: the slices start at the
    /// crop's first pixel and keep the frame's strides). `r` must lie inside the frame and, for
    /// 4:2:0 formats, start on even coordinates (see [`crop_rect`]).
    pub fn crop(&self, format: VideoFormat, r: Rect) -> Planes<'a> {
        let mut out = *self;
        match layout(format) {
            Some(Layout::Packed { bpp, .. }) => {
                out.data[0] = &self.data[0][r.y * self.stride[0] + r.x * bpp..];
            }
            Some(Layout::Gray) | None => {
                out.data[0] = &self.data[0][r.y * self.stride[0] + r.x..];
            }
            Some(Layout::Yuv420 { interleaved }) => {
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

/// The part of the region (x, y, w, h) that lies inside a `width` x `height` frame, its
/// origin rounded down to even coordinates for 4:2:0 formats (chroma is shared by 2x2
/// pixels); None when nothing of it is inside.
pub fn crop_rect(
    format: VideoFormat,
    (x, y, w, h): (u32, u32, u32, u32),
    width: u32,
    height: u32,
) -> Option<Rect> {
    let x0 = x.min(width);
    let y0 = y.min(height);
    let x1 = x.saturating_add(w).min(width);
    let y1 = y.saturating_add(h).min(height);
    let (x0, y0) = match layout(format) {
        Some(Layout::Yuv420 { .. }) => (x0 & !1, y0 & !1),
        _ => (x0, y0),
    };
    (x1 > x0 && y1 > y0).then(|| Rect {
        x: x0 as usize,
        y: y0 as usize,
        w: (x1 - x0) as usize,
        h: (y1 - y0) as usize,
    })
}

#[inline(always)]
fn clamp(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// BT.601 limited range Y'CbCr -> full range RGB (8-bit fixed-point coefficients), on area
/// averages: unclamped, the caller rounds and clamps.
#[inline(always)]
fn yuv_to_rgb_f(y: f32, u: f32, v: f32) -> [f32; 3] {
    let c = (y - 16.0).max(0.0) * 298.0;
    let (d, e) = (u - 128.0, v - 128.0);
    [
        (c + 409.0 * e) / 256.0,
        (c - 100.0 * d - 208.0 * e) / 256.0,
        (c + 516.0 * d) / 256.0,
    ]
}

#[inline(always)]
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

/// Scales and converts frames of one video format and size to the model input.
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
pub struct Preprocessor {
    layout: Layout,
    color: Color,
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
        if width == 0 || height == 0 || out_w == 0 || out_h == 0 {
            return Err("empty video frames".into());
        }
        let row_bytes = width * Self::bpp(layout, color);
        Ok(Preprocessor {
            layout,
            color,
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

    /// Bytes per pixel of the rows that are summed (YUV rows after conversion).
    fn bpp(layout: Layout, color: Color) -> usize {
        match layout {
            Layout::Packed { bpp, .. } => bpp,
            Layout::Gray => 1,
            Layout::Yuv420 { .. } => color.channels(),
        }
    }

    /// Bytes of one output frame.
    pub fn output_len(&self) -> usize {
        self.out_w * self.ys.len() * self.color.channels()
    }

    /// Source row `sy` as the bytes that are summed: packed and gray rows as they are, YUV rows
    /// as Y, U, V per pixel (or, for a gray model, luma).
    #[inline(always)]
    fn row<'a>(&'a mut self, p: &'a Planes<'_>, sy: usize) -> &'a [u8] {
        let w = self.width;
        let (interleaved, rgb) = match self.layout {
            Layout::Yuv420 { interleaved } => (interleaved, self.color == Color::Rgb),
            layout => {
                let n = w * Self::bpp(layout, self.color);
                return &p.data[0][sy * p.stride[0]..sy * p.stride[0] + n];
            }
        };
        let ysrc = &p.data[0][sy * p.stride[0]..sy * p.stride[0] + w];
        if !rgb {
            for (o, &y) in self.line.iter_mut().zip(ysrc) {
                *o = y_to_gray(y);
            }
            return &self.line;
        }
        // Y, U, V bytes per pixel (two pixels share one chroma sample); the area averages are
        // converted to RGB once per output pixel.
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

    /// Write the model-size frame into `out` (exactly [`Preprocessor::output_len`] bytes).
    /// Every source pixel is read once per output row it covers (once, or twice on an edge).
    pub fn run(&mut self, p: &Planes<'_>, out: &mut [u8]) {
        cachenet_core::cpu::wide(
            #[inline(always)]
            || self.run_here(p, out),
        )
    }

    /// [`Preprocessor::run`] compiled for the caller's instruction set (inlined, with the
    /// helpers below, into the CPU-specific variants of `run`).
    #[inline(always)]
    fn run_here(&mut self, p: &Planes<'_>, out: &mut [u8]) {
        debug_assert_eq!(out.len(), self.output_len());
        let ch = self.color.channels();
        let bpp = Self::bpp(self.layout, self.color);
        let gray = self.color == Color::Gray;
        // R, G, B lanes of a summed pixel, None for a one-lane (gray) row.
        let rgb = match self.layout {
            Layout::Packed { r, g, b, .. } => Some([r, g, b]),
            _ => None,
        };
        let yuv = matches!(self.layout, Layout::Yuv420 { .. }) && !gray;
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
                    let [r, g, b] = yuv_to_rgb_f(lanes[0], lanes[1], lanes[2]);
                    px.copy_from_slice(&[q(r), q(g), q(b)]);
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

    fn with_meta(
        size: usize,
        format: VideoFormat,
        offsets: &[usize],
        strides: &[i32],
    ) -> gst::Buffer {
        gst::init().unwrap();
        let mut buf = gst::Buffer::from_mut_slice((0..size).map(|i| i as u8).collect::<Vec<_>>());
        gst_video::VideoMeta::add_full(
            buf.get_mut().unwrap(),
            gst_video::VideoFrameFlags::empty(),
            format,
            6,
            4,
            offsets,
            strides,
        )
        .unwrap();
        buf
    }

    #[test]
    fn buffer_planes_follow_the_video_meta_and_stay_inside_the_buffer() {
        gst::init().unwrap();
        let info = gst_video::VideoInfo::builder(VideoFormat::I420, 6, 4)
            .build()
            .unwrap();
        // I420 6x4: Y 4 rows of 6 (stride 8), U and V 2 rows of 3 (stride 4), planes in reverse
        // order, Y's last row unpadded: 8 + 8 + 8 * 3 + 6 = 46 bytes.
        let buf = with_meta(46, VideoFormat::I420, &[16, 8, 0], &[8, 4, 4]);
        let map = buf.map_readable().unwrap();
        let p = buffer_planes(&map, &buf, &info).unwrap();
        assert_eq!(p.stride, [8, 4, 4]);
        assert_eq!((p.data[0][0], p.data[1][0], p.data[2][0]), (16, 8, 0));
        assert_eq!(
            (p.data[0].len(), p.data[1].len(), p.data[2].len()),
            (30, 7, 7)
        );
        // One byte short of plane 0's last row.
        let buf = with_meta(45, VideoFormat::I420, &[16, 8, 0], &[8, 4, 4]);
        let map = buf.map_readable().unwrap();
        let e = buffer_planes(&map, &buf, &info).unwrap_err();
        assert!(e.contains("plane 0") && e.contains("45 bytes"), "{e}");
        // A stride shorter than a row, a negative stride.
        for strides in [[5, 4, 4], [8, -4, 4]] {
            let buf = with_meta(64, VideoFormat::I420, &[0, 32, 48], &strides);
            let map = buf.map_readable().unwrap();
            assert!(
                buffer_planes(&map, &buf, &info)
                    .unwrap_err()
                    .contains("stride")
            );
        }
        // Without a meta: the caps' layout (V's last row padded to 4 bytes), checked the same way.
        let buf = gst::Buffer::from_mut_slice(vec![0u8; info.size() - 2]);
        let map = buf.map_readable().unwrap();
        assert!(buffer_planes(&map, &buf, &info).is_err());
        let buf = gst::Buffer::from_mut_slice(vec![0u8; info.size() - 1]);
        let map = buf.map_readable().unwrap();
        assert!(buffer_planes(&map, &buf, &info).is_ok());
    }

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
        let mut p = Preprocessor::new(VideoFormat::Gray8, w, h, out_w, out_h, Color::Gray).unwrap();
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
            (VideoFormat::Rgb, 3, Color::Rgb),
            (VideoFormat::Bgrx, 4, Color::Rgb),
            (VideoFormat::Gray8, 1, Color::Gray),
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
            let mut p = Preprocessor::new(format, w, h, out_w, out_h, color).unwrap();
            let mut out = vec![0u8; p.output_len()];
            let planes = Planes {
                data: [&data, &[], &[]],
                stride: [stride, 0, 0],
            };
            p.run(&planes, &mut out);
            let (ax, ay) = (AreaAxis::new(w, out_w), AreaAxis::new(h, out_h));
            let lanes: Vec<usize> = match format {
                VideoFormat::Bgrx => vec![2, 1, 0],
                VideoFormat::Rgb => vec![0, 1, 2],
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
            let mut p = Preprocessor::new(VideoFormat::I420, 4, 4, 2, 2, Color::Rgb).unwrap();
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

    #[test]
    fn unsupported_format_is_an_error() {
        assert!(Preprocessor::new(VideoFormat::Yuy2, 4, 4, 2, 2, Color::Gray).is_err());
    }
}
