//! One inference request: decode, check, preprocess, full model + selector.

use std::time::Instant;

use cachenet_core::maths::Classification;
use cachenet_core::modelset::ModelSet;
use cachenet_core::preprocess::normalize_into;
use cachenet_core::proto::{self, infer_request::Image};
use cachenet_core::scaler::{Layout, Planes, Scaler, YuvMatrix};
use prost::Message;

use crate::ApiError;

/// The largest encoded image side this server decodes (a camera frame is far smaller).
pub const MAX_IMAGE_SIDE: u32 = 4096;
/// The most memory one decode may allocate.
const MAX_DECODE_BYTES: u64 = 4 * (MAX_IMAGE_SIDE as u64) * (MAX_IMAGE_SIDE as u64);

/// Decode an encoded image (JPEG/PNG) into HWC u8 at the full model's size and color. Its size
/// is read from the header first: a small file that declares a huge image (a decompression
/// bomb) is refused before anything is allocated.
fn decode_encoded(set: &ModelSet, bytes: &[u8]) -> Result<Vec<u8>, ApiError> {
    let spec = set.manifest.full_input();
    let bad = |e: image::ImageError| {
        ApiError::BadRequest(format!("cannot decode the encoded image: {e}"))
    };
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| ApiError::BadRequest(format!("cannot read the encoded image: {e}")))
    };
    let (w, h) = reader()?.into_dimensions().map_err(bad)?;
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
        return Err(ApiError::BadRequest(format!(
            "the encoded image is {w}x{h}; this server decodes at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} \
             (send frames scaled to the model's {}x{})",
            spec.width, spec.height
        )));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    let mut r = reader()?;
    r.limits(limits);
    let img = r.decode().map_err(bad)?;
    // Scaled by the device's own scaler: a gray image as gray pixels, any other as RGB (as a
    // camera's frame reaches the element after videoconvert), so that the edge sees the
    // pixels the device would have sent for the same frame.
    let (layout, pixels) = if img.color().has_color() {
        (Layout::RGB, img.into_rgb8().into_raw())
    } else {
        (Layout::Gray, img.into_luma8().into_raw())
    };
    let (w, h) = (w as usize, h as usize);
    let mut scaler = Scaler::new(
        layout,
        YuvMatrix::BT601,
        w,
        h,
        spec.width,
        spec.height,
        spec.color,
    )
    .map_err(ApiError::BadRequest)?;
    let row = pixels.len() / h;
    let mut out = vec![0u8; scaler.output_len()];
    scaler.run(
        &Planes {
            data: [&pixels, &[], &[]],
            stride: [row, 0, 0],
        },
        &mut out,
    );
    Ok(out)
}

/// `pixels` (HWC u8 at `from`) scaled and normalised to `to`.
fn selector_tensor(
    pixels: &[u8],
    from: &cachenet_core::manifest::InputSpec,
    to: &cachenet_core::manifest::InputSpec,
) -> Result<Vec<f32>, ApiError> {
    let layout = match from.color {
        cachenet_core::manifest::Color::Gray => Layout::Gray,
        cachenet_core::manifest::Color::Rgb => Layout::RGB,
    };
    let mut scaler = Scaler::new(
        layout,
        YuvMatrix::BT601,
        from.width,
        from.height,
        to.width,
        to.height,
        to.color,
    )
    .map_err(ApiError::Internal)?;
    let mut hwc = vec![0u8; scaler.output_len()];
    scaler.run(
        &Planes {
            data: [pixels, &[], &[]],
            stride: [from.width * from.channels, 0, 0],
        },
        &mut hwc,
    );
    let mut tensor = vec![0.0f32; to.len()];
    normalize_into(&hwc, to, &mut tensor);
    Ok(tensor)
}

/// One request's answer, the submodel whose hit it audits (an audit, not a miss), and the
/// frame at the full model's input when asked for (`--collect`).
pub(crate) struct Answered {
    pub response: proto::InferResponse,
    pub audited: Option<u32>,
    pub pixels: Option<Vec<u8>>,
}

/// Answer one request body. `remote_full`: the full model on an inference server (else the
/// set's own).
pub(crate) fn infer(
    set: &ModelSet,
    remote_full: Option<&crate::oip::OipModel>,
    body: &[u8],
    keep_pixels: bool,
) -> Result<Answered, ApiError> {
    let req = proto::InferRequest::decode(body)
        .map_err(|e| ApiError::BadRequest(format!("malformed InferRequest protobuf: {e}")))?;
    if req.api_version != proto::API_VERSION {
        return Err(ApiError::BadRequest(format!(
            "api_version {} is not supported (this server speaks {})",
            req.api_version,
            proto::API_VERSION
        )));
    }
    let spec = set.manifest.full_input();
    let t0 = Instant::now();
    let owned;
    let pixels: &[u8] = match &req.image {
        Some(Image::Raw(f)) => {
            let (w, h, c) = (f.width as usize, f.height as usize, f.channels as usize);
            if (w, h, c) != (spec.width, spec.height, spec.channels) || f.pixels.len() != w * h * c
            {
                return Err(ApiError::BadRequest(format!(
                    "wrong tensor size: got {w}x{h}x{c} with {} bytes, model set {:?} takes \
                     {}x{}x{} ({} bytes)",
                    f.pixels.len(),
                    set.name(),
                    spec.width,
                    spec.height,
                    spec.channels,
                    spec.len()
                )));
            }
            &f.pixels
        }
        Some(Image::Encoded(bytes)) => {
            owned = decode_encoded(set, bytes)?;
            &owned
        }
        None => return Err(ApiError::BadRequest("InferRequest has no image".into())),
    };
    let mut tensor = vec![0.0f32; spec.len()];
    normalize_into(pixels, spec, &mut tensor);
    let decode_us = t0.elapsed().as_micros() as u64;
    let internal = |e: cachenet_core::CoreError| ApiError::Internal(e.to_string());
    let t1 = Instant::now();
    let cls = match remote_full {
        Some(server) => Classification::from_logits(&server.run(&tensor).map_err(|e| match e {
            crate::oip::OipError::Unavailable(m) => ApiError::Overloaded(m),
            crate::oip::OipError::Bad(m) => ApiError::Upstream(m),
        })?),
        None => set.classify_full(&tensor).map_err(internal)?,
    };
    let full_model_us = t1.elapsed().as_micros() as u64;
    let t2 = Instant::now();
    // An image selector of its own size gets the frame scaled again, from the full model's
    // pixels.
    let own;
    let selector_tensor = match set.manifest.selector_image_input() {
        Some(s) if s != spec => {
            own = selector_tensor(pixels, spec, s)?;
            &own
        }
        _ => &tensor,
    };
    let sel = set.select(selector_tensor, &cls).map_err(internal)?;
    let selector_us = t2.elapsed().as_micros() as u64;
    let sub = set.submodel(sel.submodel).ok_or_else(|| {
        ApiError::Internal(format!("selector chose missing submodel {}", sel.submodel))
    })?;
    tracing::debug!(
        set = set.name(),
        request = %req.request_id,
        class = cls.class_id,
        entropy = cls.entropy,
        submodel = sel.submodel,
        cached = ?req.cached_submodels,
        audited = ?req.audited_submodel,
        "infer"
    );
    let response = proto::InferResponse {
        request_id: req.request_id,
        class_id: cls.class_id as u32,
        label: set.manifest.labels[cls.class_id].clone(),
        probabilities: cls.probabilities,
        entropy: cls.entropy,
        submodel_id: sel.submodel,
        submodel_sha256: sub.sha256.clone(),
        timings: Some(proto::ServerTimings {
            decode_us,
            full_model_us,
            selector_us,
        }),
        soft_codes: sel.codes.iter().map(|c| *c as f32).collect(),
    };
    Ok(Answered {
        response,
        audited: req.audited_submodel,
        pixels: keep_pixels.then(|| pixels.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// An encoded frame is scaled by the same area scaler as the device's: the edge's pixels
    /// for a PNG equal the element's for the raw frame (RGB and gray sources).
    #[test]
    fn encoded_frames_are_scaled_like_the_device_does() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny");
        let set = ModelSet::load(&dir).unwrap();
        let spec = set.manifest.full_input().clone();
        let (w, h) = (97usize, 61usize);
        let mut seed = 11u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (seed >> 16) as u8
        };
        let rgb: Vec<u8> = (0..w * h * 3).map(|_| next()).collect();
        let gray: Vec<u8> = (0..w * h).map(|_| next()).collect();
        for (layout, pixels, color) in [
            (Layout::RGB, rgb, image::ColorType::Rgb8),
            (Layout::Gray, gray, image::ColorType::L8),
        ] {
            let mut png = Vec::new();
            image::write_buffer_with_format(
                &mut std::io::Cursor::new(&mut png),
                &pixels,
                w as u32,
                h as u32,
                color,
                image::ImageFormat::Png,
            )
            .unwrap();
            let edge = decode_encoded(&set, &png).unwrap();
            let mut device = Scaler::new(
                layout,
                YuvMatrix::BT601,
                w,
                h,
                spec.width,
                spec.height,
                spec.color,
            )
            .unwrap();
            let mut want = vec![0u8; device.output_len()];
            device.run(
                &Planes {
                    data: [&pixels, &[], &[]],
                    stride: [w * layout_bpp(layout), 0, 0],
                },
                &mut want,
            );
            assert_eq!(edge, want, "{layout:?}");
        }
    }

    fn layout_bpp(layout: Layout) -> usize {
        match layout {
            Layout::Packed { bpp, .. } => bpp,
            _ => 1,
        }
    }
}
