//! Video frames as the element receives them: the formats it takes, where each plane of a
//! mapped buffer lies (checked against the buffer), region crops, and the scaler for the caps
//! (format and colorimetry). The scaling itself is [`cachenet_core::scaler`], shared with the
//! edge.

use cachenet_core::manifest::{Color, InputSpec};
pub use cachenet_core::scaler::{Layout, Planes, Rect, Scaler, YuvMatrix};

use crate::runtime::Pixels;
use gst_video::{VideoColorMatrix, VideoColorRange, VideoFormat};

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

/// How frames of `format` lay out their pixels (None for a format the element does not take).
pub fn layout(format: VideoFormat) -> Option<Layout> {
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

/// The Y'CbCr conversion of frames with `colorimetry` (as `VideoInfo` fills it in from the
/// caps: a camera's caps without colorimetry get GStreamer's default for their size).
pub fn yuv_matrix(colorimetry: &gst_video::VideoColorimetry) -> YuvMatrix {
    let full = colorimetry.range() == VideoColorRange::Range0_255;
    match colorimetry.matrix() {
        VideoColorMatrix::Bt709 => YuvMatrix::bt709(full),
        VideoColorMatrix::Bt2020 => YuvMatrix::bt2020(full),
        VideoColorMatrix::Fcc => YuvMatrix {
            kr: 0.30,
            kb: 0.11,
            full_range: full,
        },
        VideoColorMatrix::Smpte240m => YuvMatrix {
            kr: 0.212,
            kb: 0.087,
            full_range: full,
        },
        _ => YuvMatrix::bt601(full),
    }
}

/// The scaler from `width` x `height` frames (the whole frame of `info`, or a crop of it) to
/// `out_w` x `out_h` pixels of `color`, for the format and colorimetry of `info`.
pub fn scaler(
    info: &gst_video::VideoInfo,
    width: usize,
    height: usize,
    out_w: usize,
    out_h: usize,
    color: Color,
) -> Result<Scaler, String> {
    let format = info.format();
    let layout = layout(format).ok_or_else(|| format!("unsupported video format {format:?}"))?;
    Scaler::new(
        layout,
        yuv_matrix(&info.colorimetry()),
        width,
        height,
        out_w,
        out_h,
        color,
    )
}

/// Scales one source size (the whole frame of `info`, or crops of one size) to every input of
/// a model set: one scaler per input, each run at most once per object and only when a model
/// of that input runs.
pub struct InputScalers {
    layout: Layout,
    /// One scaler and its output per input, in the order of the inputs given to `new`
    /// (`Manifest::inputs`, whose indices `Pixels::at` takes).
    scalers: Vec<(Scaler, Vec<u8>)>,
}

impl InputScalers {
    pub fn new(
        info: &gst_video::VideoInfo,
        width: usize,
        height: usize,
        inputs: &[&InputSpec],
    ) -> Result<InputScalers, String> {
        let format = info.format();
        let layout =
            layout(format).ok_or_else(|| format!("unsupported video format {format:?}"))?;
        if inputs.len() > 64 {
            return Err(format!(
                "the model set has {} distinct inputs; at most 64 are supported",
                inputs.len()
            ));
        }
        let scalers = inputs
            .iter()
            .map(|i| {
                let s = scaler(info, width, height, i.width, i.height, i.color)?;
                let out = vec![0; s.output_len()];
                Ok((s, out))
            })
            .collect::<Result<_, String>>()?;
        Ok(InputScalers { layout, scalers })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The object whose pixels are `planes` (already cropped), at each input on demand.
    pub fn pixels<'a>(&'a mut self, planes: Planes<'a>) -> ScaledPixels<'a> {
        ScaledPixels {
            planes,
            set: self,
            fresh: 0,
        }
    }
}

/// One object's pixels, scaled to an input the first time a model of that input asks.
pub struct ScaledPixels<'a> {
    planes: Planes<'a>,
    set: &'a mut InputScalers,
    fresh: u64,
}

impl Pixels for ScaledPixels<'_> {
    fn at(&mut self, i: usize) -> &[u8] {
        let (scaler, out) = &mut self.set.scalers[i];
        if self.fresh & (1 << i) == 0 {
            scaler.run(&self.planes, out);
            self.fresh |= 1 << i;
        }
        out
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
    fn unsupported_format_is_an_error() {
        gst::init().unwrap();
        let info = gst_video::VideoInfo::builder(VideoFormat::Yuy2, 4, 4)
            .build()
            .unwrap();
        assert!(scaler(&info, 4, 4, 2, 2, Color::Gray).is_err());
    }
}
