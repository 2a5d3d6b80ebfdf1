//! Y'CbCr frames are converted with the colorimetry their caps declare (BT.601, BT.709, full or
//! limited range): the element's scaler on an I420 frame gives, within one level, what the
//! standard's per-pixel conversion followed by the same area scaler gives, and what
//! `videoconvert` to RGB followed by the area scaler gives within videoconvert's own rounding.

use cachenet_core::manifest::Color;
use gst_video::{VideoColorMatrix, VideoColorPrimaries, VideoColorRange, VideoTransferFunction};
use gstcachenet::frame::{Layout, Planes, Scaler, YuvMatrix, buffer_planes, scaler};

const W: usize = 64;
const H: usize = 48;
const OUT_W: usize = 16;
const OUT_H: usize = 12;

/// An I420 frame: a luma ramp and strongly coloured, slowly varying chroma (far from grey, so
/// that the matrices differ by several levels; inside the RGB cube, so nothing clips).
fn i420_frame() -> Vec<u8> {
    let (cw, ch) = (W / 2, H / 2);
    let mut f = Vec::with_capacity(W * H + 2 * cw * ch);
    f.extend((0..W * H).map(|i| (60 + (i % W) + (i / W) / 4) as u8));
    f.extend((0..cw * ch).map(|i| (110 + (i % cw) / 6 + (i / cw) / 8) as u8));
    f.extend((0..cw * ch).map(|i| (160 + (i % cw) / 4 + (i / cw) / 6) as u8));
    f
}

fn caps(format: &str, colorimetry: &str) -> String {
    format!(
        "video/x-raw,format={format},width={W},height={H},framerate=30/1,colorimetry={colorimetry}"
    )
}

/// The frame through `videoconvert` to RGB, taken from its 16-bit path (ARGB64) and rounded to
/// 8 bits: its 8-bit path approximates the matrix in 8-bit fixed point (2-4 levels off the
/// standard's formulas on these colours), its 16-bit path follows them.
fn videoconvert_rgb(frame: &[u8], colorimetry: &str) -> Vec<u8> {
    let mut h = gst_check::Harness::new_parse("videoconvert dither=none");
    h.set_caps_str(
        &caps("I420", colorimetry),
        // The same transfer function and primaries (no gamma or gamut conversion): only the
        // matrix and range differ.
        &format!(
            "video/x-raw,format=ARGB64,width={W},height={H},framerate=30/1,colorimetry={}",
            gst_video::VideoColorimetry::new(
                VideoColorRange::Range0_255,
                VideoColorMatrix::Rgb,
                VideoTransferFunction::Bt709,
                VideoColorPrimaries::Bt709,
            )
        ),
    );
    let out = h
        .push_and_pull(gst::Buffer::from_slice(frame.to_vec()))
        .unwrap();
    let map = out.map_readable().unwrap();
    assert_eq!(map.len(), W * H * 8);
    map.chunks_exact(8)
        .flat_map(|px| {
            let c = |i: usize| {
                let v = u16::from_ne_bytes([px[2 * i], px[2 * i + 1]]) as u32;
                ((v * 255 + 32_767) / 65_535) as u8
            };
            [c(1), c(2), c(3)]
        })
        .collect()
}

/// The standard's conversion of each pixel (chroma shared by 2x2 pixels), clamped to 8 bits.
fn exact_rgb(frame: &[u8], m: YuvMatrix) -> Vec<u8> {
    let (cw, ch) = (W / 2, H / 2);
    let (ys, yo, cs) = if m.full_range {
        (1.0, 0.0, 1.0)
    } else {
        (255.0 / 219.0, 16.0, 255.0 / 224.0)
    };
    let kg = 1.0 - m.kr - m.kb;
    let mut out = Vec::with_capacity(W * H * 3);
    for y in 0..H {
        for x in 0..W {
            let l = (frame[y * W + x] as f32 - yo) * ys;
            let ci = (y / 2) * cw + x / 2;
            let u = (frame[W * H + ci] as f32 - 128.0) * cs;
            let v = (frame[W * H + cw * ch + ci] as f32 - 128.0) * cs;
            let r = l + 2.0 * (1.0 - m.kr) * v;
            let b = l + 2.0 * (1.0 - m.kb) * u;
            let g = (l - m.kr * r - m.kb * b) / kg;
            out.extend([r, g, b].map(|c| (c + 0.5).clamp(0.0, 255.0) as u8));
        }
    }
    out
}

fn worst(got: &[u8], want: &[u8]) -> i32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .max()
        .unwrap()
}

#[test]
fn yuv_follows_the_caps_colorimetry() {
    gst::init().unwrap();
    let frame = i420_frame();
    let colorimetry = |range, matrix| {
        gst_video::VideoColorimetry::new(
            range,
            matrix,
            VideoTransferFunction::Bt709,
            VideoColorPrimaries::Bt709,
        )
        .to_string()
    };
    let cases = [
        (
            "bt601 limited",
            VideoColorRange::Range16_235,
            VideoColorMatrix::Bt601,
            YuvMatrix::bt601(false),
        ),
        (
            "bt709 limited",
            VideoColorRange::Range16_235,
            VideoColorMatrix::Bt709,
            YuvMatrix::bt709(false),
        ),
        (
            "bt709 full",
            VideoColorRange::Range0_255,
            VideoColorMatrix::Bt709,
            YuvMatrix::bt709(true),
        ),
        (
            "bt601 full",
            VideoColorRange::Range0_255,
            VideoColorMatrix::Bt601,
            YuvMatrix::bt601(true),
        ),
    ];
    let scale = |rgb: &[u8], color| {
        let mut s = Scaler::new(Layout::RGB, YuvMatrix::BT601, W, H, OUT_W, OUT_H, color).unwrap();
        let mut out = vec![0u8; s.output_len()];
        s.run(
            &Planes {
                data: [rgb, &[], &[]],
                stride: [W * 3, 0, 0],
            },
            &mut out,
        );
        out
    };
    for (name, range, matrix, m) in cases {
        let c = colorimetry(range, matrix);
        let converted = videoconvert_rgb(&frame, &c);
        let exact = exact_rgb(&frame, m);
        let info = gst_video::VideoInfo::from_caps(&caps("I420", &c).parse::<gst::Caps>().unwrap())
            .unwrap();
        let buf = gst::Buffer::from_slice(frame.clone());
        let map = buf.map_readable().unwrap();
        let planes = buffer_planes(&map, &buf, &info).unwrap();
        for color in [Color::Rgb, Color::Gray] {
            let mut ours = scaler(&info, W, H, OUT_W, OUT_H, color).unwrap();
            let mut got = vec![0u8; ours.output_len()];
            ours.run(&planes, &mut got);
            let (converted, exact) = (scale(&converted, color), scale(&exact, color));
            let (vc, ex, vc_ex) = (
                worst(&got, &converted),
                worst(&got, &exact),
                worst(&converted, &exact),
            );
            println!(
                "{name} ({c}) to {color:?}: {ex} levels off the standard, {vc} off videoconvert \
                 (videoconvert {vc_ex} off the standard)"
            );
            assert!(
                ex <= 1,
                "{name} to {color:?}: {ex} levels off the standard's conversion"
            );
            // videoconvert's own rounding (its 16-bit path) is up to 2 levels off the standard
            // on these colours.
            assert!(
                vc <= vc_ex + 1,
                "{name} to {color:?}: {vc} levels off videoconvert"
            );
        }
    }
}
