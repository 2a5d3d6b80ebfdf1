//! `CacheNetMeta`: a GstMeta carrying the frame's classification for Rust applications.
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
//!
//! An application may link this crate *and* load the plugin: two copies of this code in one
//! process. The meta therefore carries a C type (a `GstStructure`), and whichever copy comes
//! second finds the API type and the meta registered by the first, by name, instead of
//! registering them again.
#![allow(unsafe_code)]

use std::fmt;

use gst::glib;
use gst::prelude::*;

use crate::result::{Classification, RESULT_STRUCTURE};
use crate::runtime::FrameResult;

/// The custom meta: a `GstMeta` header followed by a `GstStructure` of the result fields.
#[repr(transparent)]
pub struct CacheNetMeta(imp::CacheNetMeta);

// SAFETY: the payload is an owned GstStructure, only read through shared references.
unsafe impl Send for CacheNetMeta {}
unsafe impl Sync for CacheNetMeta {}

impl CacheNetMeta {
    /// Attach `result` to `buffer`.
    pub fn add<'a>(
        buffer: &'a mut gst::BufferRef,
        result: &FrameResult,
    ) -> gst::MetaRefMut<'a, Self, gst::meta::Standalone> {
        Self::add_structure(
            buffer,
            crate::result::fields(RESULT_STRUCTURE, result).build(),
        )
    }

    /// Attach an already built `cachenet/classification` structure (the element builds it
    /// once per frame for the ROI param, this meta and the bus message).
    pub(crate) fn add_structure(
        buffer: &mut gst::BufferRef,
        s: gst::Structure,
    ) -> gst::MetaRefMut<'_, Self, gst::meta::Standalone> {
        debug_assert_eq!(s.name(), RESULT_STRUCTURE);
        unsafe { imp::add(buffer, s) }
    }

    /// The classification of this frame.
    pub fn result(&self) -> Classification {
        Classification::from_structure(self.structure())
            .expect("CacheNetMeta always carries every field")
    }

    /// The `cachenet/classification` structure itself.
    pub fn structure(&self) -> &gst::StructureRef {
        unsafe { gst::StructureRef::from_glib_borrow(self.0.structure) }
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
            .field("result", &self.result())
            .finish()
    }
}

mod imp {
    use std::sync::LazyLock;

    use gst::glib::{self, translate::*};
    use gst::prelude::*;

    const API_NAME: &std::ffi::CStr = c"GstCacheNetMetaAPI";
    const META_NAME: &std::ffi::CStr = c"GstCacheNetMeta";

    #[repr(C)]
    pub struct CacheNetMeta {
        parent: gst::ffi::GstMeta,
        pub(super) structure: *mut gst::ffi::GstStructure,
    }

    /// Attach `s` (ownership moves into the meta).
    pub(super) unsafe fn add(
        buffer: &mut gst::BufferRef,
        s: gst::Structure,
    ) -> gst::MetaRefMut<'_, super::CacheNetMeta, gst::meta::Standalone> {
        unsafe {
            let meta = gst::ffi::gst_buffer_add_meta(
                buffer.as_mut_ptr(),
                meta_get_info(),
                s.into_glib_ptr() as glib::ffi::gpointer,
            ) as *mut CacheNetMeta;
            super::CacheNetMeta::from_mut_ptr(buffer, meta)
        }
    }

    pub(super) fn meta_api_get_type() -> glib::Type {
        static TYPE: LazyLock<glib::Type> = LazyLock::new(|| unsafe {
            // Registered already by another copy of this code in the process: use that one.
            let existing = glib::gobject_ffi::g_type_from_name(API_NAME.as_ptr());
            if existing != 0 {
                return from_glib(existing);
            }
            let mut tags: [*const std::ffi::c_char; 1] = [std::ptr::null()];
            let t: glib::Type = from_glib(gst::ffi::gst_meta_api_type_register(
                API_NAME.as_ptr(),
                tags.as_mut_ptr(),
            ));
            assert_ne!(
                t,
                glib::Type::INVALID,
                "GstCacheNetMetaAPI cannot be registered"
            );
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
            (*(meta as *mut CacheNetMeta)).structure = params as *mut gst::ffi::GstStructure;
        }
        (!params.is_null()).into_glib()
    }

    unsafe extern "C" fn free(meta: *mut gst::ffi::GstMeta, _buffer: *mut gst::ffi::GstBuffer) {
        unsafe {
            let meta = &mut *(meta as *mut CacheNetMeta);
            if !meta.structure.is_null() {
                gst::ffi::gst_structure_free(meta.structure);
                meta.structure = std::ptr::null_mut();
            }
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
            let copy = gst::ffi::gst_structure_copy(meta.structure);
            !gst::ffi::gst_buffer_add_meta(dest, meta_get_info(), copy as glib::ffi::gpointer)
                .is_null()
        }
        .into_glib()
    }

    struct Info(std::ptr::NonNull<gst::ffi::GstMetaInfo>);
    // SAFETY: GstMetaInfo is immutable once registered.
    unsafe impl Send for Info {}
    unsafe impl Sync for Info {}

    pub(super) fn meta_get_info() -> *const gst::ffi::GstMetaInfo {
        static INFO: LazyLock<Info> = LazyLock::new(|| unsafe {
            let api = meta_api_get_type();
            let mut info = gst::ffi::gst_meta_get_info(META_NAME.as_ptr());
            if info.is_null() {
                info = gst::ffi::gst_meta_register(
                    api.into_glib(),
                    META_NAME.as_ptr(),
                    std::mem::size_of::<CacheNetMeta>(),
                    Some(init),
                    Some(free),
                    Some(transform),
                );
            }
            let info = std::ptr::NonNull::new(info as *mut gst::ffi::GstMetaInfo)
                .expect("GstCacheNetMeta registered");
            // Another copy registered it: the layout is C (a header and one pointer) in
            // every copy, which these check.
            assert_eq!(
                (*info.as_ptr()).api,
                api.into_glib(),
                "GstCacheNetMeta's API type"
            );
            assert_eq!(
                (*info.as_ptr()).size,
                std::mem::size_of::<CacheNetMeta>(),
                "GstCacheNetMeta's size"
            );
            Info(info)
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
            confidence: 0.5,
            entropy: 0.25,
            source: Source::Edge,
            hit: false,
            submodel: 1,
            degraded: false,
            deferred: false,
            reused: true,
            probabilities: vec![0.1, 0.1, 0.3, 0.5],
            threshold: 0.5,
        };
        let want = Classification {
            label: "white".into(),
            class_id: 3,
            confidence: 0.5,
            entropy: 0.25,
            source: "edge".into(),
            hit: false,
            submodel: 1,
            degraded: false,
            deferred: false,
            reused: true,
            threshold: 0.5,
            unique_id: 0,
            object_id: None,
        };
        let mut buf = gst::Buffer::with_size(8).unwrap();
        CacheNetMeta::add(buf.get_mut().unwrap(), &r);
        assert_eq!(buf.meta::<CacheNetMeta>().unwrap().result(), want);
        let copy = buf.copy();
        drop(buf);
        assert_eq!(copy.meta::<CacheNetMeta>().unwrap().result(), want);
    }
}
