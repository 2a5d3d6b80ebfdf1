//! `CacheNetMeta`: a GstMeta carrying the frame's [`FrameResult`] for Rust applications.
//!
//! ```no_run
//! # fn f(buffer: &gst::BufferRef) {
//! use gstcachenet::meta::CacheNetMeta;
//! if let Some(m) = buffer.meta::<CacheNetMeta>() {
//!     let r = m.result();
//!     println!("{} (entropy {:.3}, hit {})", r.label, r.entropy, r.hit);
//! }
//! # }
//! ```
//! C and Python applications read the same result from the ROI meta's
//! `cachenet/classification` param (see [`crate::result`]).
#![allow(unsafe_code)]

use std::fmt;

use gst::glib;
use gst::prelude::*;

use crate::runtime::FrameResult;

/// The custom meta: a `GstMeta` header followed by a [`FrameResult`].
#[repr(transparent)]
pub struct CacheNetMeta(imp::CacheNetMeta);

// SAFETY: the payload is a plain owned Rust value (Send + Sync).
unsafe impl Send for CacheNetMeta {}
unsafe impl Sync for CacheNetMeta {}

impl CacheNetMeta {
    /// Attach `result` to `buffer`.
    pub fn add(
        buffer: &mut gst::BufferRef,
        result: FrameResult,
    ) -> gst::MetaRefMut<'_, Self, gst::meta::Standalone> {
        unsafe {
            let mut params = std::mem::ManuallyDrop::new(result);
            let meta = gst::ffi::gst_buffer_add_meta(
                buffer.as_mut_ptr(),
                imp::meta_get_info(),
                &mut *params as *mut FrameResult as glib::ffi::gpointer,
            ) as *mut imp::CacheNetMeta;
            Self::from_mut_ptr(buffer, meta)
        }
    }

    /// The classification of this frame.
    pub fn result(&self) -> &FrameResult {
        &self.0.result
    }
}

// SAFETY: GstType is the #[repr(C)] struct registered in imp.
unsafe impl MetaAPI for CacheNetMeta {
    type GstType = imp::CacheNetMeta;

    fn meta_api() -> glib::Type {
        imp::meta_api_get_type()
    }
}

impl fmt::Debug for CacheNetMeta {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("CacheNetMeta")
            .field("result", &self.0.result)
            .finish()
    }
}

mod imp {
    use std::sync::LazyLock;

    use gst::glib::{self, translate::*};

    use crate::runtime::FrameResult;

    #[repr(C)]
    pub struct CacheNetMeta {
        parent: gst::ffi::GstMeta,
        pub(super) result: FrameResult,
    }

    pub(super) fn meta_api_get_type() -> glib::Type {
        static TYPE: LazyLock<glib::Type> = LazyLock::new(|| unsafe {
            let mut tags: [*const std::ffi::c_char; 1] = [std::ptr::null()];
            let t = from_glib(gst::ffi::gst_meta_api_type_register(
                c"GstCacheNetMetaAPI".as_ptr(),
                tags.as_mut_ptr(),
            ));
            assert_ne!(t, glib::Type::INVALID);
            t
        });
        *TYPE
    }

    unsafe extern "C" fn init(
        meta: *mut gst::ffi::GstMeta,
        params: glib::ffi::gpointer,
        _buffer: *mut gst::ffi::GstBuffer,
    ) -> glib::ffi::gboolean {
        unsafe {
            assert!(!params.is_null());
            let meta = &mut *(meta as *mut CacheNetMeta);
            let result = std::ptr::read(params as *const FrameResult);
            std::ptr::write(&mut meta.result, result);
        }
        true.into_glib()
    }

    unsafe extern "C" fn free(meta: *mut gst::ffi::GstMeta, _buffer: *mut gst::ffi::GstBuffer) {
        unsafe {
            let meta = &mut *(meta as *mut CacheNetMeta);
            std::ptr::drop_in_place(&mut meta.result);
        }
    }

    unsafe extern "C" fn transform(
        dest: *mut gst::ffi::GstBuffer,
        meta: *mut gst::ffi::GstMeta,
        _src: *mut gst::ffi::GstBuffer,
        _type: glib::ffi::GQuark,
        _data: glib::ffi::gpointer,
    ) -> glib::ffi::gboolean {
        unsafe {
            // The result describes the whole frame: it survives copies and scaling alike.
            let meta = &*(meta as *const CacheNetMeta);
            super::CacheNetMeta::add(gst::BufferRef::from_mut_ptr(dest), meta.result.clone());
        }
        true.into_glib()
    }

    struct Info(std::ptr::NonNull<gst::ffi::GstMetaInfo>);
    // SAFETY: GstMetaInfo is immutable once registered.
    unsafe impl Send for Info {}
    unsafe impl Sync for Info {}

    pub(super) fn meta_get_info() -> *const gst::ffi::GstMetaInfo {
        static INFO: LazyLock<Info> = LazyLock::new(|| unsafe {
            Info(
                std::ptr::NonNull::new(gst::ffi::gst_meta_register(
                    meta_api_get_type().into_glib(),
                    c"GstCacheNetMeta".as_ptr(),
                    std::mem::size_of::<CacheNetMeta>(),
                    Some(init),
                    Some(free),
                    Some(transform),
                ) as *mut gst::ffi::GstMetaInfo)
                .expect("GstCacheNetMeta registered"),
            )
        });
        INFO.0.as_ptr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Source;

    #[test]
    fn add_read_and_copy() {
        gst::init().unwrap();
        let r = FrameResult {
            class_id: 3,
            label: "white".into(),
            confidence: 0.9,
            entropy: 0.1,
            source: Source::Edge,
            hit: false,
            submodel: 1,
            degraded: false,
        };
        let mut buf = gst::Buffer::with_size(8).unwrap();
        CacheNetMeta::add(buf.get_mut().unwrap(), r.clone());
        assert_eq!(buf.meta::<CacheNetMeta>().unwrap().result(), &r);
        let copy = buf.copy();
        drop(buf);
        assert_eq!(copy.meta::<CacheNetMeta>().unwrap().result(), &r);
    }
}
