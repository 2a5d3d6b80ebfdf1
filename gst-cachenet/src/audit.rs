//! Auditing hits against the full model, and calibrating each submodel's threshold from the
//! audits (the element's `audit-interval`, `audit-seed` and `target-agreement`).
//!
//! On average one hit in `audit-interval` is drawn (a seeded xoshiro256++ generator, so that a
//! seed replays the same draws) and its model input goes to the edge in the background; the
//! frame keeps its local result. Each answered audit says whether the submodel agreed with the
//! full model. Per submodel this module keeps the last [`WINDOW`] audits and their agreement
//! with a 95 % Wilson score interval (what `stats` shows), and, with a target agreement, moves
//! that submodel's threshold:
//!
//! - **down** by [`STEP_DOWN`] (10 %) when the upper bound of the interval over the audits taken
//!   at the current threshold is below the target, at most once per [`AUDITS_PER_STEP`] (20)
//!   audits: more frames go to the edge. The audits taken before a step down described frames
//!   that miss now, so the decision counts only those taken since (at most the last 200);
//! - **up** by [`STEP_UP`] (2 %) per [`AGREEING_PER_RISE`] (50) agreeing audits while the lower
//!   bound is above the target, never above the threshold in use at start (the property, else
//!   the manifest's);
//! - never below [`FLOOR`] (a quarter) of the threshold at start. A submodel whose agreement
//!   stays below the target there for another 20 audits gets one warning: the set needs
//!   retraining (or distilling) for this camera.
//!
//! The interval is the Wilson score interval (Wilson, 1927), a closed formula: it stays inside
//! [0, 1] and is honest at small counts and at agreements near 1, where the normal
//! approximation is not.

use std::collections::VecDeque;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

/// Audits per submodel over which agreement is reported.
pub const WINDOW: usize = 200;
/// z of a two-sided 95 % interval.
pub const Z95: f64 = 1.959_964;
/// A step down multiplies the threshold by `1 - STEP_DOWN`.
pub const STEP_DOWN: f32 = 0.10;
/// Audits at least between two steps down (and before the first).
pub const AUDITS_PER_STEP: u32 = 20;
/// A step up multiplies the threshold by `1 + STEP_UP`.
pub const STEP_UP: f32 = 0.02;
/// Agreeing audits per step up.
pub const AGREEING_PER_RISE: u32 = 50;
/// The lowest threshold, as a fraction of the threshold at start.
pub const FLOOR: f32 = 0.25;

/// The 95 % Wilson score interval of `k` successes in `n` trials; (0, 1) when `n` is 0.
pub fn wilson(k: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n, z2) = (k as f64, n as f64, Z95 * Z95);
    let p = k / n;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    // All or none: the bound at 1 (or 0) exactly, not a rounding of it.
    let low = if k == 0.0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let high = if k == n {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    (low, high)
}

/// Audit settings of a runtime (the element's properties).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AuditConfig {
    /// One hit in `interval` on average is audited; 0: none.
    pub interval: u32,
    /// Seed of the draws; 0: from the clock.
    pub seed: u64,
    /// Calibrate each submodel's threshold towards this agreement; None: thresholds stay.
    pub target: Option<f64>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            interval: 50,
            seed: 0,
            target: None,
        }
    }
}

/// One submodel's audits and threshold.
#[derive(Debug, Clone)]
struct Audited {
    /// The last [`WINDOW`] audits: agreed, and the threshold epoch it was taken in.
    window: VecDeque<(bool, u64)>,
    audits: u64,
    agree: u64,
    threshold: f32,
    /// Incremented at each step down.
    epoch: u64,
    since_step: u32,
    agreeing_since_rise: u32,
    warned: bool,
}

/// A submodel's agreement with the full model, for `stats`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agreement {
    pub submodel: u32,
    /// Audits answered, all time.
    pub audits: u64,
    pub agree: u64,
    /// Over the last [`WINDOW`] audits: the share that agreed and its 95 % Wilson interval.
    pub window: u64,
    pub agreement: f64,
    pub low: f64,
    pub high: f64,
    /// The threshold in use for this submodel.
    pub threshold: f32,
}

/// A threshold that moved, for the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moved {
    pub submodel: u32,
    pub from: f32,
    pub to: f32,
}

/// What recording one audit did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Recorded {
    pub moved: Option<Moved>,
    /// The submodel stays below the target at the lowest threshold (once per streak).
    pub warning: Option<String>,
}

/// Draws the hits to audit and keeps each submodel's audits and threshold.
#[derive(Debug, Clone)]
pub struct Auditor {
    config: AuditConfig,
    rng: Xoshiro256PlusPlus,
    start: f32,
    submodels: Vec<Audited>,
}

impl Auditor {
    /// `threshold`: the threshold in use at start; `submodels`: how many the set has.
    pub fn new(config: AuditConfig, threshold: f32, submodels: usize) -> Auditor {
        let seed = if config.seed != 0 {
            config.seed
        } else {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        };
        Auditor {
            config,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            start: threshold,
            submodels: vec![
                Audited {
                    window: VecDeque::new(),
                    audits: 0,
                    agree: 0,
                    threshold,
                    epoch: 0,
                    since_step: 0,
                    agreeing_since_rise: 0,
                    warned: false,
                };
                submodels
            ],
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.interval > 0
    }

    /// Whether this hit is audited: one in `interval` on average.
    pub fn draw(&mut self) -> bool {
        self.enabled() && self.rng.random_ratio(1, self.config.interval)
    }

    /// The threshold in use for `submodel` (the one at start for an id the set does not have).
    pub fn threshold(&self, submodel: u32) -> f32 {
        self.submodels
            .get(submodel as usize)
            .map_or(self.start, |s| s.threshold)
    }

    /// The lowest threshold calibration goes to.
    pub fn floor(&self) -> f32 {
        self.start * FLOOR
    }

    /// Record an answered audit of `submodel`: whether it agreed with the full model. With a
    /// target, the submodel's threshold may move.
    pub fn record(&mut self, submodel: u32, agreed: bool) -> Recorded {
        let (target, floor, start) = (self.config.target, self.floor(), self.start);
        let Some(s) = self.submodels.get_mut(submodel as usize) else {
            return Recorded::default();
        };
        s.window.push_back((agreed, s.epoch));
        if s.window.len() > WINDOW {
            s.window.pop_front();
        }
        s.audits += 1;
        s.agree += u64::from(agreed);
        s.since_step = s.since_step.saturating_add(1);
        s.agreeing_since_rise += u32::from(agreed);
        let Some(target) = target else {
            return Recorded::default();
        };
        let current: Vec<bool> = s
            .window
            .iter()
            .filter(|(_, e)| *e == s.epoch)
            .map(|(a, _)| *a)
            .collect();
        let k = current.iter().filter(|a| **a).count() as u64;
        let (low, high) = wilson(k, current.len() as u64);
        let mut out = Recorded::default();
        let from = s.threshold;
        if high < target && s.since_step >= AUDITS_PER_STEP {
            if s.threshold > floor {
                s.threshold = (s.threshold * (1.0 - STEP_DOWN)).max(floor);
                s.epoch += 1;
                s.since_step = 0;
                s.agreeing_since_rise = 0;
            } else if !s.warned {
                s.warned = true;
                out.warning = Some(format!(
                    "submodel {submodel} agrees with the full model on {:.1} % of its last {} \
                     audits (95 % interval {:.1}-{:.1} %), below target-agreement {:.1} % at \
                     its lowest threshold {floor:.3}: the model set needs retraining for this \
                     camera",
                    100.0 * k as f64 / current.len() as f64,
                    current.len(),
                    100.0 * low,
                    100.0 * high,
                    100.0 * target
                ));
            }
        } else if low > target && s.agreeing_since_rise >= AGREEING_PER_RISE && s.threshold < start
        {
            s.threshold = (s.threshold * (1.0 + STEP_UP)).min(start);
            s.agreeing_since_rise = 0;
            s.warned = false;
        }
        if s.threshold != from {
            out.moved = Some(Moved {
                submodel,
                from,
                to: s.threshold,
            });
        }
        out
    }

    /// Each submodel's agreement over its last [`WINDOW`] audits (those audited at least once).
    pub fn agreements(&self) -> Vec<Agreement> {
        self.submodels
            .iter()
            .enumerate()
            .filter(|(_, s)| s.audits > 0)
            .map(|(id, s)| {
                let n = s.window.len() as u64;
                let k = s.window.iter().filter(|(a, _)| *a).count() as u64;
                let (low, high) = wilson(k, n);
                Agreement {
                    submodel: id as u32,
                    audits: s.audits,
                    agree: s.agree,
                    window: n,
                    agreement: if n == 0 { 0.0 } else { k as f64 / n as f64 },
                    low,
                    high,
                    threshold: s.threshold,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_published_values() {
        // Newcombe (1998), table I: 81/263 -> 0.2553-0.3662; 15/148 -> 0.0624-0.1605.
        let (l, h) = wilson(81, 263);
        assert!(
            (l - 0.2553).abs() < 1e-4 && (h - 0.3662).abs() < 1e-4,
            "{l} {h}"
        );
        let (l, h) = wilson(15, 148);
        assert!(
            (l - 0.0624).abs() < 1e-4 && (h - 0.1605).abs() < 1e-4,
            "{l} {h}"
        );
        // All or nothing stays inside [0, 1] and is not degenerate.
        let (l, h) = wilson(20, 20);
        assert!(l > 0.8 && l < 0.85 && h == 1.0, "{l} {h}");
        let (l, h) = wilson(0, 20);
        assert!(l == 0.0 && h > 0.15 && h < 0.2, "{l} {h}");
        assert_eq!(wilson(0, 0), (0.0, 1.0));
    }

    fn calibrating(target: f64) -> Auditor {
        Auditor::new(
            AuditConfig {
                interval: 1,
                seed: 1,
                target: Some(target),
            },
            2.0,
            2,
        )
    }

    #[test]
    fn disagreement_steps_the_threshold_down_once_per_twenty_audits_to_the_floor() {
        let mut a = calibrating(0.97);
        let mut moves = Vec::new();
        let mut warnings = Vec::new();
        for _ in 0..400 {
            let r = a.record(0, false);
            moves.extend(r.moved);
            warnings.extend(r.warning);
        }
        // 2.0 * 0.9^k reaches the floor 0.5 after 14 steps (the last one clamped).
        assert_eq!(moves.len(), 14, "{moves:?}");
        assert!((moves[0].to - 1.8).abs() < 1e-6);
        assert_eq!(a.threshold(0), 0.5);
        assert_eq!(a.threshold(1), 2.0, "another submodel keeps its own");
        assert_eq!(warnings.len(), 1, "one warning per streak: {warnings:?}");
        assert!(warnings[0].contains("retraining"), "{}", warnings[0]);
        let g = a.agreements();
        assert_eq!((g.len(), g[0].audits, g[0].window), (1, 400, 200));
    }

    #[test]
    fn agreement_lets_the_threshold_rise_slowly_never_above_the_start() {
        let mut a = calibrating(0.97);
        for _ in 0..40 {
            a.record(0, false);
        }
        assert!((a.threshold(0) - 1.62).abs() < 1e-5, "{}", a.threshold(0));
        let mut rises = 0;
        // The lower bound over the audits since the last step passes 0.97 after 124 agreeing
        // audits; then one rise per 50.
        for i in 1..=10_000 {
            if let Some(m) = a.record(0, true).moved {
                assert!(m.to > m.from && m.to <= 2.0);
                if rises == 0 {
                    assert!((124..=130).contains(&i), "first rise after {i}");
                }
                rises += 1;
            }
        }
        assert_eq!(a.threshold(0), 2.0);
        // ln(2/1.62)/ln(1.02) = 10.6: 11 rises, the last clamped to the start.
        assert_eq!(rises, 11);
    }

    #[test]
    fn without_a_target_thresholds_stay_and_agreement_is_still_measured() {
        let mut a = Auditor::new(AuditConfig::default(), 2.0, 1);
        for i in 0..300 {
            assert_eq!(a.record(0, i % 10 != 0), Recorded::default());
        }
        assert_eq!(a.threshold(0), 2.0);
        let g = a.agreements()[0];
        assert_eq!((g.audits, g.agree, g.window), (300, 270, 200));
        assert!((g.agreement - 0.9).abs() < 0.01 && g.low < 0.9 && g.high > 0.9);
    }

    #[test]
    fn draws_follow_the_interval_and_the_seed() {
        let draws = |seed| {
            let mut a = Auditor::new(
                AuditConfig {
                    interval: 50,
                    seed,
                    target: None,
                },
                1.0,
                1,
            );
            (0..100_000).map(|_| a.draw()).collect::<Vec<_>>()
        };
        let d = draws(7);
        let n = d.iter().filter(|x| **x).count();
        assert!((1800..2200).contains(&n), "{n} of 100000 at 1/50");
        assert_eq!(d, draws(7), "a seed replays the same draws");
        assert_ne!(d, draws(8));
        let mut off = Auditor::new(
            AuditConfig {
                interval: 0,
                ..AuditConfig::default()
            },
            1.0,
            1,
        );
        assert!(!(0..1000).any(|_| off.draw()));
    }
}
