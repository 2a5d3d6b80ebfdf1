//! Polar soft codes of the submodel selector (paper section 4.2, eqs 9-13).
//!
//! The selector network maps a frame to a 2-D point z-bar. Its angle (eq 9, mapped to
//! [0, 2pi) as in eq 10 without the training noise) is compared with the K sector midpoints
//! (eq 11) by circular distance; the soft code of sector k is `exp(-d_k^2 / (2 sigma^2))`
//! (eq 12), and the selected submodel is the sector with the largest code.
//!
//! Submodel ids are 0-based: id `k` is the paper's sector `k + 1`, midpoint `2pi(k + 1/2)/K`.

use std::f64::consts::PI;

const TWO_PI: f64 = 2.0 * PI;

/// Eq 9: the angle of `(z1, z2)` with the x-axis, in (-pi, pi].
pub fn angle_eq9(z1: f64, z2: f64) -> f64 {
    if z1 > 0.0 {
        (z2 / z1).atan()
    } else if z1 < 0.0 && z2 >= 0.0 {
        (z2 / z1).atan() + PI
    } else if z1 < 0.0 {
        (z2 / z1).atan() - PI
    } else if z2 > 0.0 {
        PI / 2.0
    } else if z2 < 0.0 {
        -PI / 2.0
    } else {
        0.0
    }
}

/// Eq 10 without noise: the angle mapped to [0, 2pi).
pub fn angle(z1: f64, z2: f64) -> f64 {
    let t = angle_eq9(z1, z2).rem_euclid(TWO_PI);
    // rem_euclid can round up to exactly 2pi for tiny negative inputs.
    if t >= TWO_PI { 0.0 } else { t }
}

/// Eq 11: midpoints `2pi(k + 1/2)/K` for k = 0..K.
pub fn midpoints(k: usize) -> Vec<f64> {
    (0..k)
        .map(|i| TWO_PI * (i as f64 + 0.5) / k as f64)
        .collect()
}

/// Distance between two angles on the circle, in [0, pi].
pub fn circular_distance(a: f64, b: f64) -> f64 {
    let d = (a - b).rem_euclid(TWO_PI);
    d.min(TWO_PI - d)
}

/// Eq 13: sigma from the overlap ratio gamma (fraction of 2pi) and the threshold tau.
pub fn sigma_from_overlap(k: usize, gamma: f64, tau: f64) -> f64 {
    (-(PI * PI * (1.0 + gamma).powi(2)) / (2.0 * (k * k) as f64 * tau.ln())).sqrt()
}

/// Eq 12 on the circular distance: soft code of each of the K sectors for angle `theta`.
pub fn soft_codes(theta: f64, k: usize, sigma: f64) -> Vec<f64> {
    midpoints(k)
        .into_iter()
        .map(|m| {
            let d = circular_distance(theta, m);
            (-(d * d) / (2.0 * sigma * sigma)).exp()
        })
        .collect()
}

/// The outcome of submodel selection for one point.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub theta: f64,
    pub codes: Vec<f64>,
    pub submodel: u32,
}

/// Select the submodel for a 2-D point: argmax of the soft codes (first on ties).
pub fn select(z: [f32; 2], k: usize, sigma: f64) -> Selection {
    let theta = angle(z[0] as f64, z[1] as f64);
    let codes = soft_codes(theta, k, sigma);
    let mut best = 0;
    for (i, c) in codes.iter().enumerate() {
        if *c > codes[best] {
            best = i;
        }
    }
    Selection {
        theta,
        codes,
        submodel: best as u32,
    }
}

/// Sectors whose soft code is at least `tau` (the partitions a point belongs to, section 4.2).
pub fn partitions(codes: &[f64], tau: f64) -> Vec<usize> {
    codes
        .iter()
        .enumerate()
        .filter(|(_, c)| **c >= tau)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn eq9_every_branch() {
        assert!(close(angle_eq9(1.0, 1.0), PI / 4.0));
        assert!(close(angle_eq9(-1.0, 1.0), 3.0 * PI / 4.0));
        assert!(close(angle_eq9(-1.0, 0.0), PI)); // z1 < 0, z2 >= 0
        assert!(close(angle_eq9(-1.0, -1.0), -3.0 * PI / 4.0));
        assert!(close(angle_eq9(0.0, 2.0), PI / 2.0));
        assert!(close(angle_eq9(0.0, -2.0), -PI / 2.0));
        assert_eq!(angle_eq9(0.0, 0.0), 0.0);
        assert!(close(angle_eq9(1.0, 0.0), 0.0));
    }

    #[test]
    fn eq9_agrees_with_atan2() {
        for i in 0..360 {
            let a = (i as f64).to_radians() + 0.001;
            let (z1, z2) = (a.cos() * 3.0, a.sin() * 3.0);
            assert!(close(angle_eq9(z1, z2), z2.atan2(z1)), "angle {i}");
        }
    }

    #[test]
    fn angle_is_in_zero_two_pi() {
        assert!(close(angle(-1.0, -1.0), 5.0 * PI / 4.0));
        assert!(close(angle(0.0, -1.0), 3.0 * PI / 2.0));
        assert!(close(angle(1.0, -1e-12), TWO_PI - 1e-12));
        let t = angle(1.0, -1e-300);
        assert!((0.0..TWO_PI).contains(&t));
    }

    #[test]
    fn midpoints_of_four() {
        let m = midpoints(4);
        let want = [PI / 4.0, 3.0 * PI / 4.0, 5.0 * PI / 4.0, 7.0 * PI / 4.0];
        for (a, b) in m.iter().zip(want) {
            assert!(close(*a, b));
        }
    }

    #[test]
    fn circular_distance_wraps() {
        assert!(close(circular_distance(0.1, TWO_PI - 0.1), 0.2));
        assert!(close(circular_distance(PI, 0.0), PI));
        assert!(close(circular_distance(0.0, 3.0 * PI), PI));
    }

    #[test]
    fn sigma_eq13_hand_checked() {
        // K = 4, gamma = 0.3, tau = 0.3 (paper Fig 2):
        // sigma^2 = pi^2 * 1.69 / (2 * 16 * -ln 0.3) = 0.432 93, sigma = 0.657 976
        let s = sigma_from_overlap(4, 0.3, 0.3);
        assert!((s - 0.657_976).abs() < 1e-5, "{s}");
        // Half sector width sigma * sqrt(-2 ln tau) = pi (1 + gamma) / K.
        let half = s * (-2.0 * 0.3f64.ln()).sqrt();
        assert!(close(half, PI * 1.3 / 4.0));
    }

    #[test]
    fn paper_figure2_examples() {
        let s = sigma_from_overlap(4, 0.3, 0.3);
        // theta = pi/3: only sector 0 (midpoint pi/4) is >= tau.
        let c = soft_codes(PI / 3.0, 4, s);
        assert_eq!(partitions(&c, 0.3), vec![0]);
        // theta = 4pi/9: between pi/4 and 3pi/4, both sectors >= tau.
        let c = soft_codes(4.0 * PI / 9.0, 4, s);
        assert_eq!(partitions(&c, 0.3), vec![0, 1]);
    }

    #[test]
    fn soft_code_hand_checked() {
        // theta at the midpoint: code 1. theta = 0: distance pi/4 to sectors 0 and 3.
        let c = soft_codes(PI / 4.0, 4, 0.5);
        assert!(close(c[0], 1.0));
        let c = soft_codes(0.0, 4, 0.5);
        let want = (-(PI / 4.0).powi(2) / 0.5).exp();
        assert!(close(c[0], want) && close(c[3], want));
        assert!(close(c[2], (-(3.0 * PI / 4.0).powi(2) / 0.5).exp()));
    }

    #[test]
    fn select_picks_nearest_sector() {
        assert_eq!(select([1.0, 0.1], 4, 0.6).submodel, 0);
        assert_eq!(select([-1.0, 0.5], 4, 0.6).submodel, 1);
        assert_eq!(select([-1.0, -0.5], 4, 0.6).submodel, 2);
        assert_eq!(select([1.0, -0.1], 4, 0.6).submodel, 3);
        // The origin has angle 0, exactly between sectors 3 and 0: first wins.
        assert_eq!(select([0.0, 0.0], 4, 0.6).submodel, 0);
    }
}
