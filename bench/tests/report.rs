//! Report maths on recorded gst-launch output.

use cachenet_bench::report::{Usage, markdown, parse_messages, summarize};

const LOG: &str = r#"Setting pipeline to PAUSED ...
Got message #30 from element "cachenetclassify0" (element): cachenet-result, label=(string)black, class-id=(int)0, confidence=(double)1, entropy=(double)0.01, source=(string)device, hit=(boolean)true, submodel=(int)0, degraded=(boolean)false, latency-us=(guint64)1000, inference-us=(guint64)900, pts=(guint64)0, frame=(guint64)0;
Got message #31 from element "cachenetclassify0" (element): cachenet-result, label=(string)white, class-id=(int)3, confidence=(double)1, entropy=(double)0.2, source=(string)edge, hit=(boolean)false, submodel=(int)1, degraded=(boolean)false, latency-us=(guint64)5000, inference-us=(guint64)4800, pts=(guint64)33333333, frame=(guint64)1;
Got message #32 from element "cachenetclassify0" (element): cachenet-result, label=(string)white, class-id=(int)3, confidence=(double)1, entropy=(double)0.0, source=(string)device, hit=(boolean)true, submodel=(int)1, degraded=(boolean)false, latency-us=(guint64)1000, inference-us=(guint64)800, pts=(guint64)66666666, frame=(guint64)2;
Got message #33 from element "cachenetclassify0" (element): cachenet-result, label=(string)light, class-id=(int)2, confidence=(double)0.5, entropy=(double)0.7, source=(string)device, hit=(boolean)false, submodel=(int)1, degraded=(boolean)true, latency-us=(guint64)3000, inference-us=(guint64)2500, pts=(guint64)99999999, frame=(guint64)3;
Execution ended after 0:00:00.1"#;

#[test]
fn parses_every_result_line() {
    let m = parse_messages(LOG);
    assert_eq!(m.len(), 4);
    assert_eq!(
        (m[1].class_id, m[1].source.as_str(), m[1].hit, m[1].submodel),
        (3, "edge", false, 1)
    );
    assert_eq!(
        (m[3].degraded, m[3].latency_us, m[3].inference_us),
        (true, 3000, 2500)
    );
}

#[test]
fn summary_numbers() {
    let m = parse_messages(LOG);
    let labels = [0, 3, 3, 3];
    let reference = [0, 3, 3, 2];
    let usage = Usage {
        wall_s: 2.0,
        cpu_s: 0.5,
        peak_rss_kb: 51200,
    };
    let r = summarize(
        "cachenet",
        Some(0.6),
        &m,
        &labels,
        Some(&reference),
        usage,
        (1000, 2000),
    );
    assert_eq!(r.frames, 4);
    assert!(
        (r.fps_element - 4.0 / 0.010).abs() < 1e-9,
        "4 frames in 10 ms of element time"
    );
    assert!(
        (r.fps - 2.0).abs() < 1e-9,
        "the headline is the wall clock: 4 frames in 2 s"
    );
    let r = r.with_edge_cpu(0.2);
    assert!((r.edge_cpu_s_per_1000 - 50.0).abs() < 1e-9);
    assert!((r.cameras_per_edge_core.unwrap() - 1000.0 / 30.0 / 50.0).abs() < 1e-9);
    assert!((r.accuracy - 0.75).abs() < 1e-9);
    assert!((r.agreement.unwrap() - 1.0).abs() < 1e-9);
    assert!((r.hit_rate - 0.5).abs() < 1e-9);
    assert!((r.cpu_percent - 25.0).abs() < 1e-9);
    assert!((r.peak_rss_mb - 50.0).abs() < 1e-9);
    assert!((r.edge_time_s - 0.005).abs() < 1e-12 && (r.device_time_s - 0.005).abs() < 1e-12);
    assert_eq!(
        (r.swaps, r.degraded, r.bytes_up, r.bytes_down),
        (1, 1, 1000, 2000)
    );
    assert!((r.overhead - (1.0 - 9.0 / 10.0)).abs() < 1e-9);
    let md = markdown(&[r]);
    assert!(
        md.contains(
            "| cachenet (T = 0.6) | 2.0 | 400.0 | 75.00 % | 100.00 % | 50.0 % | 25 % | 50 MB |"
        ),
        "{md}"
    );
}

#[test]
fn swap_messages_and_medians() {
    let text = "\
Got message #1 from element \"cachenetclassify0\" (element): cachenet-swap, submodel=(uint)2, fetched=(boolean)true, bytes=(guint64)1000, download-us=(guint64)300, verify-us=(guint64)10, store-us=(guint64)0, parse-us=(guint64)500, optimise-us=(guint64)900, first-run-us=(guint64)90, cpu-us=(guint64)1200, wait-us=(guint64)2000;
Got message #2 from element \"cachenetclassify0\" (element): cachenet-swap, submodel=(uint)1, fetched=(boolean)false, bytes=(guint64)0, download-us=(guint64)0, verify-us=(guint64)0, store-us=(guint64)0, parse-us=(guint64)0, optimise-us=(guint64)0, first-run-us=(guint64)0, wait-us=(guint64)5;
";
    let s = cachenet_bench::report::parse_swaps(text);
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].submodel, s[0].fetched, s[0].parse_us), (2, true, 500));
    let m = cachenet_bench::report::summarize_swaps(&s);
    assert_eq!((m.fetched, m.plan_reuses), (1, 1));
    assert_eq!(m.median_device_work_us, 10 + 500 + 900 + 90);
    assert_eq!((s[0].cpu_us, m.median_device_cpu_us), (1200, 1200));
    assert_eq!(m.median_wait_us, 2000);
}
