//! Regions of interest as tracked objects: which upstream regions `regions=roi` classifies,
//! and which object each region is from one frame to the next.
//!
//! A region with a tracker's id (the ROI meta's `id`, non-zero and unique among the frame's
//! regions of its type) is that object. Regions without one (a plain detector such as
//! `facedetect` sets none) are matched by overlap (greedy, highest intersection-over-union
//! first, at least [`MIN_IOU`]) to the last place of each object of the same type seen within
//! the last `timeout` frames (a detector that misses an object for a frame or two does not
//! make it a new one); a region that matches none is a new object.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use crate::runtime::ObjectKey;

/// A rectangle: x, y, width, height in pixels.
pub type Bounds = (u32, u32, u32, u32);

/// Least overlap for a region to continue an object of the previous frame.
pub const MIN_IOU: f32 = 0.3;

/// One region of interest on a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// Position among the buffer's ROI metas (to attach the result to the same meta).
    pub index: usize,
    /// The analytics object detection this region is (its mtd id), instead of a ROI meta.
    pub detection: Option<u32>,
    pub roi_type: String,
    /// The tracker's id (0 when none).
    pub id: i64,
    pub rect: Bounds,
}

/// Which regions to classify: types (empty: all) and the smallest size.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub types: Vec<String>,
    pub min_size: u32,
}

impl Filter {
    /// From a comma-separated list of types ("" or None: every type).
    pub fn new(types: Option<&str>, min_size: u32) -> Filter {
        Filter {
            types: types
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect(),
            min_size,
        }
    }

    pub fn accepts(&self, roi_type: &str, w: u32, h: u32) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == roi_type))
            && w >= self.min_size
            && h >= self.min_size
    }
}

fn iou(a: Bounds, b: Bounds) -> f32 {
    let (ax1, ay1) = (a.0 as u64 + a.2 as u64, a.1 as u64 + a.3 as u64);
    let (bx1, by1) = (b.0 as u64 + b.2 as u64, b.1 as u64 + b.3 as u64);
    let iw = ax1.min(bx1).saturating_sub((a.0 as u64).max(b.0 as u64));
    let ih = ay1.min(by1).saturating_sub((a.1 as u64).max(b.1 as u64));
    let inter = (iw * ih) as f64;
    let union = (a.2 as u64 * a.3 as u64 + b.2 as u64 * b.3 as u64) as f64 - inter;
    if union <= 0.0 {
        0.0
    } else {
        (inter / union) as f32
    }
}

fn tracker_key(roi_type: &str, id: i64) -> ObjectKey {
    let mut h = DefaultHasher::new();
    (roi_type, id).hash(&mut h);
    // The top bit marks tracker ids; never the frame's own key (all ones).
    (h.finish() | 1 << 63) & !1
}

/// Object keys for the regions of consecutive frames.
#[derive(Debug)]
pub struct Associator {
    /// Each object's last place: key, type, rectangle, frames since it was seen.
    previous: Vec<(ObjectKey, String, Bounds, u64)>,
    next: ObjectKey,
    timeout: u64,
}

impl Associator {
    /// Objects unseen for more than `timeout` frames are not matched any more.
    pub fn new(timeout: u64) -> Associator {
        Associator {
            previous: Vec::new(),
            next: 0,
            timeout,
        }
    }

    /// The object key of each region of this frame, in order.
    pub fn assign(&mut self, regions: &[Region]) -> Vec<ObjectKey> {
        let mut keys: Vec<Option<ObjectKey>> = vec![None; regions.len()];
        for (i, r) in regions.iter().enumerate() {
            let unique = regions
                .iter()
                .filter(|o| o.roi_type == r.roi_type && o.id == r.id)
                .count()
                == 1;
            if r.id != 0 && unique {
                keys[i] = Some(tracker_key(&r.roi_type, r.id));
            }
        }
        // Overlap matching of the rest, best pairs first.
        let mut pairs = Vec::new();
        for (i, r) in regions.iter().enumerate() {
            if keys[i].is_some() {
                continue;
            }
            for (j, (_, t, rect, _)) in self.previous.iter().enumerate() {
                let v = iou(r.rect, *rect);
                if *t == r.roi_type && v >= MIN_IOU {
                    pairs.push((v, i, j));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut used = vec![false; self.previous.len()];
        for (_, i, j) in pairs {
            let key = self.previous[j].0;
            if keys[i].is_none() && !used[j] && !keys.contains(&Some(key)) {
                keys[i] = Some(key);
                used[j] = true;
            }
        }
        let keys: Vec<ObjectKey> = keys
            .into_iter()
            .map(|k| {
                k.unwrap_or_else(|| {
                    self.next += 1;
                    self.next
                })
            })
            .collect();
        // This frame's places, then the unmatched older ones, one frame older.
        let mut next: Vec<_> = regions
            .iter()
            .zip(&keys)
            .map(|(r, k)| (*k, r.roi_type.clone(), r.rect, 0))
            .collect();
        for (k, t, rect, age) in self.previous.drain(..) {
            if age < self.timeout && !keys.contains(&k) {
                next.push((k, t, rect, age + 1));
            }
        }
        self.previous = next;
        keys
    }

    /// Forget every object (a flush: the next frame may be anywhere in the stream).
    pub fn reset(&mut self) {
        self.previous.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(index: usize, id: i64, rect: Bounds) -> Region {
        Region {
            index,
            detection: None,
            roi_type: "face".into(),
            id,
            rect,
        }
    }

    #[test]
    fn moving_regions_without_ids_keep_their_objects() {
        let mut a = Associator::new(2);
        let k1 = a.assign(&[region(0, 0, (0, 0, 40, 40)), region(1, 0, (100, 0, 40, 40))]);
        assert_ne!(k1[0], k1[1]);
        // Both moved a little, and come in the other order.
        let k2 = a.assign(&[region(0, 0, (104, 2, 40, 40)), region(1, 0, (5, 3, 40, 40))]);
        assert_eq!(k2, vec![k1[1], k1[0]]);
        // A region far from both is a new object.
        let k3 = a.assign(&[region(0, 0, (300, 300, 40, 40))]);
        assert!(!k1.contains(&k3[0]));
        // An object missed for two frames is found again; after a third, it is new.
        assert_eq!(a.assign(&[region(0, 0, (6, 4, 40, 40))]), vec![k1[0]]);
        a.assign(&[]);
        a.assign(&[]);
        a.assign(&[]);
        assert_ne!(a.assign(&[region(0, 0, (6, 4, 40, 40))]), vec![k1[0]]);
    }

    #[test]
    fn tracker_ids_win_over_overlap() {
        let mut a = Associator::new(0);
        let k1 = a.assign(&[region(0, 7, (0, 0, 40, 40))]);
        // Same id far away: the same object; another id on the same spot: another object.
        let k2 = a.assign(&[
            region(0, 7, (200, 200, 40, 40)),
            region(1, 8, (0, 0, 40, 40)),
        ]);
        assert_eq!(k2[0], k1[0]);
        assert_ne!(k2[1], k1[0]);
        // Two regions with one id are not tracked by it.
        let k3 = a.assign(&[
            region(0, 9, (0, 0, 40, 40)),
            region(1, 9, (200, 200, 40, 40)),
        ]);
        assert_eq!(k3[0], k2[1], "matched by overlap instead");
        assert_eq!(k3[1], k2[0]);
    }

    #[test]
    fn filter_by_type_and_size() {
        let f = Filter::new(Some(" face, person ,"), 16);
        assert_eq!(f.types, vec!["face", "person"]);
        assert!(f.accepts("face", 16, 20));
        assert!(!f.accepts("face", 15, 20));
        assert!(!f.accepts("car", 100, 100));
        assert!(Filter::new(None, 0).accepts("anything", 1, 1));
    }
}
