//! The engine's own plan against tract's on the same files: the shipped model set, the test
//! fixture set, and small graphs built here that exercise every case the plan takes (strides,
//! asymmetric pads, rectangular and 1x1 kernels, folded and unfolded ReLUs, Gemm attributes),
//! plus graphs it must leave to tract.

use std::path::{Path, PathBuf};

use cachenet_core::engine::{Backend, BackendChoice, Engine, Model};
use cachenet_core::manifest::{Manifest, read_verified};
use prost::Message;
use tract_onnx::pb;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn on(backend: BackendChoice) -> Engine {
    Engine {
        backend,
        ..Engine::default()
    }
}

/// Load `bytes` on both plans and compare their outputs on a few inputs. `want`: the plan
/// `auto` takes; when it is tract's, the report says why the own plan refused the graph, and
/// `backend=direct` is an error that says it too.
fn agree(name: &str, bytes: &[u8], shape: [usize; 4], out: usize, want: Backend) {
    let (direct, _) = Model::load(name, bytes, shape, out, &on(BackendChoice::Auto)).unwrap();
    let (tract, _) = Model::load(name, bytes, shape, out, &on(BackendChoice::Tract)).unwrap();
    assert_eq!(direct.backend(), want, "{name}: plan taken");
    assert_eq!(tract.backend(), Backend::Tract);
    assert_eq!(tract.plan().refused, None, "tract was asked for");
    match want {
        Backend::Tract => {
            let why = direct.plan().refused.clone().expect("the reason");
            assert!(direct.plan().to_string().contains(&why));
            let e = Model::load(name, bytes, shape, out, &on(BackendChoice::Direct))
                .unwrap_err()
                .to_string();
            assert!(e.contains("refuses") && e.contains(&why), "{e}");
        }
        _ => assert_eq!(direct.plan().refused, None),
    }
    let n: usize = shape.iter().product();
    for seed in 0..4 {
        let x = values(n, seed);
        let (a, b) = (direct.run(&x).unwrap(), tract.run(&x).unwrap());
        assert_eq!(a.len(), out);
        let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * scale,
                "{name} seed {seed} output {i}: engine {a} vs tract {b}"
            );
        }
    }
    // A reused output buffer and a wrong input length.
    let mut buf = vec![9.0; 3];
    direct.run_into(&values(n, 9), &mut buf).unwrap();
    assert_eq!(buf.len(), out);
    let e = direct.run(&values(n + 1, 0)).unwrap_err().to_string();
    assert!(e.contains("input has"), "{e}");
}

fn check_set(dir: &Path) {
    let m = Manifest::load(dir).unwrap();
    let mut files = vec![(m.full_model.model_file(), m.full_input())];
    files.extend(
        m.submodels
            .iter()
            .map(|s| (s.model_file(), m.submodel_input(s.id))),
    );
    for (f, input) in files {
        let bytes = read_verified(dir, &f).unwrap();
        agree(
            &f.file,
            &bytes,
            input.shape(),
            m.labels.len(),
            Backend::Direct,
        );
    }
}

#[test]
fn shipped_models_run_on_the_engines_plan_and_agree_with_tract() {
    check_set(&repo().join("models/fashion-mnist"));
}

#[test]
fn fixture_models_run_on_the_engines_plan_and_agree_with_tract() {
    check_set(&repo().join("tests/fixtures/tiny"));
}

// --- small graphs ---------------------------------------------------------------------------

fn init(name: &str, dims: &[usize], seed: u64) -> pb::TensorProto {
    let n: usize = dims.iter().product();
    pb::TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: 1,
        raw_data: values(n, seed)
            .iter()
            .flat_map(|v| (v * 0.5).to_le_bytes())
            .collect(),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: 7,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: 2,
        i: v,
        ..Default::default()
    }
}

fn float(name: &str, v: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: 1,
        f: v,
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], out: &str, attrs: Vec<pb::AttributeProto>) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: out.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[usize]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(dimension::Value::DimValue(d as i64)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn model(
    input: [usize; 4],
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    out: &str,
) -> Vec<u8> {
    pb::ModelProto {
        ir_version: 7,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            name: "g".into(),
            node: nodes,
            initializer: inits,
            input: vec![value_info("x", &input)],
            output: vec![pb::ValueInfoProto {
                name: out.into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn conv(
    x: &str,
    w: &str,
    b: Option<&str>,
    out: &str,
    strides: [i64; 2],
    pads: [i64; 4],
) -> pb::NodeProto {
    let mut inputs = vec![x, w];
    inputs.extend(b);
    node(
        "Conv",
        &inputs,
        out,
        vec![ints("strides", &strides), ints("pads", &pads)],
    )
}

/// Every convolution shape the plan takes, ReLUs folded and not, residual additions, and a
/// Gemm with alpha, beta and an untransposed weight.
#[test]
fn convolution_cases_agree_with_tract() {
    let nodes = vec![
        conv("x", "w1", Some("b1"), "c1", [1, 1], [1, 1, 1, 1]),
        node("Relu", &["c1"], "r1", vec![]), // folds into c1
        conv("r1", "w2", None, "c2", [1, 1], [1, 1, 1, 1]),
        node("Add", &["c2", "r1"], "a2", vec![]),
        node("Relu", &["a2"], "r2", vec![]), // folds into the addition
        conv("r2", "w3", Some("b3"), "c3", [2, 2], [2, 1, 0, 2]), // 5x5, asymmetric pads
        conv("c3", "w4", Some("b4"), "c4", [1, 1], [0, 0, 0, 0]), // plain 1x1
        node("Relu", &["c4"], "r4", vec![]),
        node("Add", &["r4", "c3"], "a4", vec![]), // c3 read twice: no fold
        conv("a4", "w5", Some("b5"), "c5", [2, 1], [0, 0, 0, 0]), // 2x3, strides 2 and 1
        node("Relu", &["c5"], "r5", vec![]),
        node("Relu", &["r5"], "r6", vec![]), // a ReLU of a folded ReLU: a step of its own
        node("GlobalAveragePool", &["r6"], "g", vec![]),
        node("Flatten", &["g"], "f", vec![int("axis", 1)]),
        node(
            "Gemm",
            &["f", "wd", "bd"],
            "y",
            vec![float("alpha", 0.5), float("beta", 2.0)],
        ),
    ];
    let inits = vec![
        init("w1", &[4, 3, 3, 3], 1),
        init("b1", &[4], 2),
        init("w2", &[4, 4, 3, 3], 3),
        init("w3", &[6, 4, 5, 5], 4),
        init("b3", &[6], 5),
        init("w4", &[6, 6, 1, 1], 6),
        init("b4", &[6], 7),
        init("w5", &[5, 6, 2, 3], 8),
        init("b5", &[5], 9),
        init("wd", &[5, 7], 10),
        init("bd", &[7], 11),
    ];
    let bytes = model([1, 3, 13, 11], nodes, inits, "y");
    agree("cases.onnx", &bytes, [1, 3, 13, 11], 7, Backend::Direct);
}

/// A flattened image into a transposed Gemm whose ReLU is the graph's output.
#[test]
fn dense_head_on_a_flattened_image_agrees_with_tract() {
    let nodes = vec![
        conv("x", "w1", Some("b1"), "c1", [2, 2], [1, 1, 1, 1]),
        node("Flatten", &["c1"], "f", vec![]),
        node("Gemm", &["f", "wd", "bd"], "d", vec![int("transB", 1)]),
        node("Relu", &["d"], "y", vec![]),
    ];
    let inits = vec![
        init("w1", &[3, 1, 3, 3], 1),
        init("b1", &[3], 2),
        init("wd", &[4, 3 * 4 * 4], 3),
        init("bd", &[4], 4),
    ];
    let bytes = model([1, 1, 8, 7], nodes, inits, "y");
    agree("dense.onnx", &bytes, [1, 1, 8, 7], 4, Backend::Direct);
}

/// A graph whose output is an image (channels first, as ONNX lays it out) from a
/// multi-channel input through a Winograd convolution and a strided one.
#[test]
fn image_output_agrees_with_tract() {
    let nodes = vec![
        conv("x", "w1", Some("b1"), "c1", [1, 1], [1, 1, 1, 1]),
        conv("c1", "w2", Some("b2"), "y", [2, 1], [0, 1, 1, 0]),
    ];
    let inits = vec![
        init("w1", &[9, 8, 3, 3], 1),
        init("b1", &[9], 2),
        init("w2", &[5, 9, 3, 2], 3),
        init("b2", &[5], 4),
    ];
    let bytes = model([1, 8, 7, 6], nodes, inits, "y");
    // 7x6 -> 7x6 (Winograd), then stride 2x1, pads top 0 left 1 bottom 1 right 0, kernel
    // 3x2: 3 x 6 outputs of 5 channels.
    agree(
        "image.onnx",
        &bytes,
        [1, 8, 7, 6],
        5 * 3 * 6,
        Backend::Direct,
    );
}

/// Graphs with an operator or attribute the plan does not take run on tract's plan.
#[test]
fn other_graphs_run_on_tracts_plan() {
    let pool = vec![
        conv("x", "w1", None, "c1", [1, 1], [1, 1, 1, 1]),
        node(
            "MaxPool",
            &["c1"],
            "p",
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        ),
        node("GlobalAveragePool", &["p"], "g", vec![]),
        node("Flatten", &["g"], "y", vec![]),
    ];
    let bytes = model([1, 1, 8, 8], pool, vec![init("w1", &[3, 1, 3, 3], 1)], "y");
    agree("maxpool.onnx", &bytes, [1, 1, 8, 8], 3, Backend::Tract);

    let grouped = vec![
        node(
            "Conv",
            &["x", "w1"],
            "c1",
            vec![int("group", 2), ints("pads", &[1, 1, 1, 1])],
        ),
        node("GlobalAveragePool", &["c1"], "g", vec![]),
        node("Flatten", &["g"], "y", vec![]),
    ];
    let bytes = model(
        [1, 2, 6, 6],
        grouped,
        vec![init("w1", &[4, 1, 3, 3], 1)],
        "y",
    );
    agree("grouped.onnx", &bytes, [1, 2, 6, 6], 4, Backend::Tract);

    let dilated = vec![
        node(
            "Conv",
            &["x", "w1"],
            "c1",
            vec![ints("dilations", &[2, 2]), ints("pads", &[2, 2, 2, 2])],
        ),
        node("GlobalAveragePool", &["c1"], "g", vec![]),
        node("Flatten", &["g"], "y", vec![]),
    ];
    let bytes = model(
        [1, 1, 7, 7],
        dilated,
        vec![init("w1", &[2, 1, 3, 3], 1)],
        "y",
    );
    agree("dilated.onnx", &bytes, [1, 1, 7, 7], 2, Backend::Tract);

    let broadcast = vec![
        conv("x", "w1", None, "c1", [1, 1], [1, 1, 1, 1]),
        node("Add", &["c1", "k"], "a", vec![]),
        node("GlobalAveragePool", &["a"], "g", vec![]),
        node("Flatten", &["g"], "y", vec![]),
    ];
    let bytes = model(
        [1, 1, 5, 5],
        broadcast,
        vec![init("w1", &[2, 1, 3, 3], 1), init("k", &[1, 2, 1, 1], 2)],
        "y",
    );
    agree("broadcast.onnx", &bytes, [1, 1, 5, 5], 2, Backend::Tract);

    // One initializer read by two convolutions.
    let shared = vec![
        conv("x", "w1", None, "c1", [1, 1], [1, 1, 1, 1]),
        conv("c1", "w1", None, "c2", [1, 1], [1, 1, 1, 1]),
        node("GlobalAveragePool", &["c2"], "g", vec![]),
        node("Flatten", &["g"], "y", vec![]),
    ];
    let bytes = model(
        [1, 2, 5, 5],
        shared,
        vec![init("w1", &[2, 2, 3, 3], 1)],
        "y",
    );
    agree("shared.onnx", &bytes, [1, 2, 5, 5], 2, Backend::Tract);
}

/// 3x3, stride 1, pad 1 convolutions with enough input channels run by Winograd's F(2x2, 3x3):
/// odd sizes (tiles cropped at the bottom and right), with and without a folded ReLU.
#[test]
fn winograd_convolutions_agree_with_tract() {
    let nodes = vec![
        conv("x", "w1", Some("b1"), "c1", [1, 1], [1, 1, 1, 1]),
        node("Relu", &["c1"], "r1", vec![]),
        conv("r1", "w2", Some("b2"), "c2", [1, 1], [1, 1, 1, 1]),
        conv("c2", "w3", None, "c3", [1, 1], [1, 1, 1, 1]),
        node("Add", &["c3", "c2"], "a3", vec![]),
        node("Flatten", &["a3"], "y", vec![]),
    ];
    let inits = vec![
        init("w1", &[10, 9, 3, 3], 1),
        init("b1", &[10], 2),
        init("w2", &[8, 10, 3, 3], 3),
        init("b2", &[8], 4),
        init("w3", &[8, 8, 3, 3], 5),
    ];
    let bytes = model([1, 9, 7, 5], nodes, inits, "y");
    agree(
        "winograd.onnx",
        &bytes,
        [1, 9, 7, 5],
        8 * 7 * 5,
        Backend::Direct,
    );
}
