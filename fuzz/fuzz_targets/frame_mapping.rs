//! A video frame as upstream hands it to the element, for every supported format: any size,
//! any per-plane stride (a video meta with padded rows, as from a camera driver), a buffer
//! cut short, any bytes; then what the element does with it: map it, take its planes, scale
//! the whole frame to any model size (gray or RGB) and scale any region of it. Either a
//! clear refusal (a plane that does not fit in the buffer) or model input, never a panic or a
//! read outside the buffer.
#![no_main]

use std::sync::Once;

use cachenet_core::manifest::Color;
use gstcachenet::frame::{FORMATS, buffer_planes, crop_rect, plane_rows, scaler};
use libfuzzer_sys::fuzz_target;

static INIT: Once = Once::new();

fuzz_target!(|input: &[u8]| {
    INIT.call_once(|| gst::init().expect("GStreamer"));
    if input.len() < 14 {
        return;
    }
    let (p, pixels) = input.split_at(14);
    let format = FORMATS[p[0] as usize % FORMATS.len()];
    let (w, h) = (1 + p[1] as usize % 48, 1 + p[2] as usize % 48);
    let (out_w, out_h) = (1 + p[6] as usize % 32, 1 + p[7] as usize % 32);
    let color = if p[8] & 1 == 0 {
        Color::Gray
    } else {
        Color::Rgb
    };
    let region = (p[9] as u32, p[10] as u32, p[11] as u32, p[12] as u32);
    // Rows padded by 0..15 bytes per plane; the last plane's last row padded or not; the
    // buffer cut short by 0..7 bytes.
    let planes = plane_rows(format, w, h).expect("a supported format");
    let planes = planes.as_slice();
    let mut offsets = Vec::new();
    let mut strides = Vec::new();
    let mut size = 0;
    for (i, &(row, rows)) in planes.iter().enumerate() {
        let stride = row + p[3 + i] as usize % 16;
        offsets.push(size);
        strides.push(stride as i32);
        size += stride * rows;
    }
    let (last_row, _) = planes[planes.len() - 1];
    if p[13] & 1 == 1 {
        size -= strides[strides.len() - 1] as usize - last_row;
    }
    let cut = (p[13] >> 1) as usize % 8;
    size = size.saturating_sub(cut);
    let data: Vec<u8> = (0..size)
        .map(|i| {
            pixels
                .get(i % pixels.len().max(1))
                .copied()
                .unwrap_or(i as u8)
        })
        .collect();
    let mut buf = gst::Buffer::from_mut_slice(data);
    let Ok(_) = gst_video::VideoMeta::add_full(
        buf.get_mut().expect("new buffer"),
        gst_video::VideoFrameFlags::empty(),
        format,
        w as u32,
        h as u32,
        &offsets,
        &strides,
    ) else {
        return;
    };
    let info = gst_video::VideoInfo::builder(format, w as u32, h as u32)
        .build()
        .expect("a valid video info");
    // As the element reads a frame.
    let map = buf.map_readable().expect("a readable buffer");
    let planes = match buffer_planes(&map, buf.as_ref(), &info) {
        Ok(planes) => planes,
        // Refused only when the buffer was cut short.
        Err(e) => {
            assert!(cut > 0, "a whole {format:?} {w}x{h} frame refused: {e}");
            return;
        }
    };
    let mut pre = scaler(&info, w, h, out_w, out_h, color).expect("a scaler");
    let mut out = vec![0u8; pre.output_len()];
    pre.run(&planes, &mut out);
    if let Some(rect) = crop_rect(format, region, w as u32, h as u32) {
        let mut pre = scaler(&info, rect.w, rect.h, out_w, out_h, color).expect("a scaler");
        let mut out = vec![0u8; pre.output_len()];
        pre.run(&planes.crop(pre.layout(), rect), &mut out);
    }
});
