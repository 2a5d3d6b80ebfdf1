//! The engine's own plan for plain convolutional classifiers (the shape of every CacheNet
//! classifier: 2-D convolutions, ReLU, residual additions, global average pooling, flatten and
//! one dense layer, batch 1).
//!
//! tract runs these graphs 2.4-3.1x slower than onnxruntime on one thread: its convolution
//! packs the image lazily for small images (28x28 and below), about a third of a run. This
//! plan holds images pixel-major (the channels of a pixel adjacent) and lowers each convolution
//! to one matrix product of an im2col buffer (one row per output pixel, copied a pixel's
//! channels at a time) with the weights, or for 3x3 stride-1 layers to Winograd's F(2x2, 3x3),
//! the weights laid out at load for the CPU's kernel (see [`super::gemm`]). The
//! large buffers (values, im2col, Winograd tiles) live in a per-plan scratch pool, reused from
//! run to run and freed with the model.
//!
//! A graph with anything else (another operator, grouped or dilated convolution, broadcasting
//! addition, external weights, several outputs) is not taken: [`DirectPlan::build`] says why and
//! the engine runs the graph with tract's plan instead.

use std::collections::HashMap;
use std::sync::Mutex;

use tract_onnx::pb;

use super::gemm::Weights;

/// A graph lowered to a list of steps over numbered values.
#[derive(Debug)]
pub(super) struct DirectPlan {
    steps: Vec<Step>,
    /// Number of values (the input is value 0).
    values: usize,
    output: usize,
    input_len: usize,
    scratch: Mutex<Vec<Scratch>>,
}

#[derive(Debug, Default)]
struct Scratch {
    values: Vec<Vec<f32>>,
    col: Vec<f32>,
    wino: Wino,
}

/// The buffers of a Winograd convolution, reused from run to run.
#[derive(Debug, Default)]
struct Wino {
    /// The input zero-padded to whole tiles (pixel-major like every image value).
    padded: Vec<f32>,
    /// `d B` of one tile (16 channel vectors), then `A^T m` of one tile (8).
    part: Vec<f32>,
    /// The transformed tiles `V` (16 matrices of tiles x cin) and their products `M` with the
    /// weights (16 matrices of tiles x cout).
    tiles: Vec<f32>,
    products: Vec<f32>,
}

#[derive(Debug)]
struct Conv {
    cin: usize,
    cout: usize,
    /// Input height and width.
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: [usize; 2],
    /// Top, left padding (bottom and right follow from the output size).
    pad: [usize; 2],
    ho: usize,
    wo: usize,
    weights: Lowering,
    bias: Vec<f32>,
}

/// How a convolution runs, with its weights in the form that needs.
#[derive(Debug)]
enum Lowering {
    /// One product of the im2col buffer with the `(kh * kw * cin) x cout` weights.
    Im2col(Weights),
    /// For a 3x3, stride 1, pad 1 convolution: Winograd's F(2x2, 3x3), with the 16 transformed
    /// weight matrices (`cout x cin` each, see [`Conv::winograd`]).
    Winograd(Vec<Weights>),
}

#[derive(Debug)]
enum Step {
    Conv {
        x: usize,
        y: usize,
        conv: Box<Conv>,
        relu: bool,
    },
    Add {
        a: usize,
        b: usize,
        y: usize,
        relu: bool,
    },
    Relu {
        x: usize,
        y: usize,
    },
    /// Mean of each of `channels` planes.
    GlobalAveragePool {
        x: usize,
        y: usize,
        channels: usize,
    },
    Copy {
        x: usize,
        y: usize,
    },
    /// An image from ONNX's channel-major order to the plan's pixel-major one, or back.
    Transpose {
        x: usize,
        y: usize,
        /// Rows and columns of the source, seen as a matrix.
        rows: usize,
        cols: usize,
    },
    /// `y = alpha * W x + beta * bias` with `W` stored `n x k`.
    Dense {
        x: usize,
        y: usize,
        k: usize,
        n: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
        relu: bool,
    },
}

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn ints(node: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn int(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map(|a| a.i).unwrap_or(default)
}

fn float(node: &pb::NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map(|a| a.f).unwrap_or(default)
}

/// The dimensions and f32 values of a tensor.
type Tensor = (Vec<usize>, Vec<f32>);

/// The f32 values and dimensions of an initializer stored inside the file, taken out of it (an
/// initializer read twice is refused the second time, and the graph goes to tract).
fn tensor_f32(t: &mut pb::TensorProto) -> Result<Tensor, String> {
    const FLOAT: i32 = 1;
    if t.data_type != FLOAT {
        return Err(format!("initializer {} is not f32", t.name));
    }
    if t.data_location.unwrap_or(0) != 0 {
        return Err(format!("initializer {} is stored outside the file", t.name));
    }
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| format!("initializer {} has dims {:?}", t.name, t.dims))
        })
        .collect::<Result<_, _>>()?;
    let n: usize = dims.iter().product();
    let values: Vec<f32> = if !t.raw_data.is_empty() {
        std::mem::take(&mut t.raw_data)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        std::mem::take(&mut t.float_data)
    };
    if values.len() != n {
        return Err(format!(
            "initializer {} holds {} values for dims {dims:?}",
            t.name,
            values.len()
        ));
    }
    Ok((dims, values))
}

/// Input `i` of `node` as an f32 initializer, taken out of `weights`; None when the input is
/// absent or empty.
fn initializer(
    node: &pb::NodeProto,
    i: usize,
    weights: &mut HashMap<String, pb::TensorProto>,
) -> Result<Option<Tensor>, String> {
    let Some(name) = node.input.get(i).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let t = weights
        .get_mut(name.as_str())
        .ok_or_else(|| format!("{} input {name} is not an initializer", node.op_type))?;
    tensor_f32(t).map(Some)
}

impl DirectPlan {
    /// Lower `model` for an input of `input_shape` (batch 1), or say why it is not taken. The
    /// weights are moved out of `model` as they are converted, so that a large model is not
    /// held twice; a model that is not taken must be read again for tract.
    pub(super) fn build(
        model: &mut pb::ModelProto,
        input_shape: [usize; 4],
        output_len: usize,
    ) -> Result<DirectPlan, String> {
        let graph = model.graph.as_mut().ok_or("no graph")?;
        let mut weights: HashMap<String, pb::TensorProto> = std::mem::take(&mut graph.initializer)
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        let graph = &*graph;
        if input_shape[0] != 1 {
            return Err("batch is not 1".into());
        }
        if graph
            .node
            .iter()
            .any(|n| !n.domain.is_empty() && n.domain != "ai.onnx")
        {
            return Err("an operator outside the default domain".into());
        }
        let inputs: Vec<&pb::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !weights.contains_key(i.name.as_str()))
            .collect();
        if inputs.len() != 1 || graph.output.len() != 1 {
            return Err("not one input and one output".into());
        }
        // Value ids and shapes (batch dropped: [c, h, w] or [n]).
        // Images are held pixel-major (`h x w x c`, the channels of a pixel adjacent) so that
        // every loop of a convolution runs along the channels; ONNX's channel-major input is
        // transposed on the way in, and back wherever the graph flattens an image or outputs one.
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let mut shapes: Vec<Vec<usize>> = vec![input_shape[1..].to_vec()];
        let mut steps: Vec<Step> = Vec::new();
        let [c0, h0, w0] = input_shape[1..] else {
            unreachable!("four dimensions")
        };
        if c0 > 1 && h0 * w0 > 1 {
            steps.push(Step::Transpose {
                x: 0,
                y: 1,
                rows: c0,
                cols: h0 * w0,
            });
            shapes.push(shapes[0].clone());
        }
        ids.insert(inputs[0].name.as_str(), shapes.len() - 1);
        // How many nodes read each value (a ReLU folds into the step before it only when it is
        // that value's one reader and the value is not the graph's output).
        let mut readers: HashMap<&str, usize> = HashMap::new();
        for n in &graph.node {
            for i in &n.input {
                *readers.entry(i.as_str()).or_default() += 1;
            }
        }
        let out_name = graph.output[0].name.as_str();
        let mut fused: HashMap<&str, usize> = HashMap::new(); // relu output name -> value id
        for node in &graph.node {
            if let Some(&id) = fused.get(node.output.first().map(|s| s.as_str()).unwrap_or("")) {
                // This ReLU was folded into the step that produced its input.
                ids.insert(node.output[0].as_str(), id);
                continue;
            }
            let value = |name: &str| -> Result<usize, String> {
                ids.get(name).copied().ok_or_else(|| {
                    format!(
                        "{} reads {name}, which is not computed before it",
                        node.op_type
                    )
                })
            };
            if node.output.len() != 1 {
                return Err(format!(
                    "{} has {} outputs",
                    node.op_type,
                    node.output.len()
                ));
            }
            let y = shapes.len();
            // A ReLU that alone reads this node's output is folded into it.
            let relu_after = |name: &str| -> Option<&pb::NodeProto> {
                if name == out_name || readers.get(name) != Some(&1) {
                    return None;
                }
                graph.node.iter().find(|n| {
                    n.op_type == "Relu" && n.input.first().map(|s| s.as_str()) == Some(name)
                })
            };
            let out = node.output[0].as_str();
            // Fold the ReLU that alone reads this node's output into this node's step.
            let mut fold_relu = || match relu_after(out) {
                Some(r) => {
                    fused.insert(r.output[0].as_str(), y);
                    true
                }
                None => false,
            };
            match node.op_type.as_str() {
                "Conv" => {
                    let x = value(&node.input[0])?;
                    let [cin, h, w] = shapes[x][..] else {
                        return Err("Conv on a value that is not an image".into());
                    };
                    let (wd, weight) =
                        initializer(node, 1, &mut weights)?.ok_or("Conv without weights")?;
                    let [cout, wcin, kh, kw] = wd[..] else {
                        return Err("Conv is not 2-D".into());
                    };
                    if wcin != cin || int(node, "group", 1) != 1 {
                        return Err("grouped Conv".into());
                    }
                    if ints(node, "dilations").is_some_and(|d| d.iter().any(|&d| d != 1)) {
                        return Err("dilated Conv".into());
                    }
                    if attr(node, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET") {
                        return Err("Conv with auto_pad".into());
                    }
                    if ints(node, "kernel_shape").is_some_and(|k| k != [kh as i64, kw as i64]) {
                        return Err("Conv kernel_shape disagrees with its weights".into());
                    }
                    let stride = ints(node, "strides").unwrap_or(vec![1, 1]);
                    let pads = ints(node, "pads").unwrap_or(vec![0, 0, 0, 0]);
                    let (&[sh, sw], &[pt, pl, pb, pr]) = (&stride[..], &pads[..]) else {
                        return Err("Conv strides or pads are not 2-D".into());
                    };
                    if sh < 1 || sw < 1 || [pt, pl, pb, pr].iter().any(|p| !(0..16).contains(p)) {
                        return Err("Conv strides or pads out of range".into());
                    }
                    let (sh, sw, pt, pl) = (sh as usize, sw as usize, pt as usize, pl as usize);
                    let (hp, wp) = (h + pt + pb as usize, w + pl + pr as usize);
                    if hp < kh || wp < kw {
                        return Err("Conv kernel larger than its padded input".into());
                    }
                    let (ho, wo) = ((hp - kh) / sh + 1, (wp - kw) / sw + 1);
                    let bias = match initializer(node, 2, &mut weights)? {
                        None => vec![0.0; cout],
                        Some((_, b)) if b.len() == cout => b,
                        Some(_) => return Err("Conv bias length".into()),
                    };
                    let relu = fold_relu();
                    // A Winograd convolution keeps only its transformed weights.
                    let lowering = if kh == 3
                        && kw == 3
                        && [sh, sw] == [1, 1]
                        && [pt, pl, pb as usize, pr as usize] == [1, 1, 1, 1]
                        && cin >= WINOGRAD_MIN_CHANNELS
                    {
                        let u = winograd_weights(&weight, cout, cin);
                        drop(weight);
                        Lowering::Winograd(
                            u.chunks_exact(cin * cout)
                                .map(|u| Weights::new(u.to_vec(), cin, cout))
                                .collect(),
                        )
                    } else {
                        // ONNX's cout x cin x kh x kw as (kh, kw, cin) x cout, the order of
                        // the im2col columns.
                        let k = kh * kw * cin;
                        let mut wt = vec![0.0; k * cout];
                        for (i, &v) in weight.iter().enumerate() {
                            let (co, ci, ky, kx) = (
                                i / (cin * kh * kw),
                                i / (kh * kw) % cin,
                                i / kw % kh,
                                i % kw,
                            );
                            wt[((ky * kw + kx) * cin + ci) * cout + co] = v;
                        }
                        drop(weight);
                        Lowering::Im2col(Weights::new(wt, k, cout))
                    };
                    shapes.push(vec![cout, ho, wo]);
                    steps.push(Step::Conv {
                        x,
                        y,
                        relu,
                        conv: Box::new(Conv {
                            cin,
                            cout,
                            h,
                            w,
                            kh,
                            kw,
                            stride: [sh, sw],
                            pad: [pt, pl],
                            ho,
                            wo,
                            weights: lowering,
                            bias,
                        }),
                    });
                }
                "Add" => {
                    let (a, b) = (value(&node.input[0])?, value(&node.input[1])?);
                    if shapes[a] != shapes[b] {
                        return Err("Add with broadcasting".into());
                    }
                    let relu = fold_relu();
                    shapes.push(shapes[a].clone());
                    steps.push(Step::Add { a, b, y, relu });
                }
                "Relu" => {
                    let x = value(&node.input[0])?;
                    shapes.push(shapes[x].clone());
                    steps.push(Step::Relu { x, y });
                }
                "GlobalAveragePool" => {
                    let x = value(&node.input[0])?;
                    let [c, _, _] = shapes[x][..] else {
                        return Err("GlobalAveragePool on a value that is not an image".into());
                    };
                    shapes.push(vec![c, 1, 1]);
                    steps.push(Step::GlobalAveragePool { x, y, channels: c });
                }
                "Flatten" => {
                    let x = value(&node.input[0])?;
                    if int(node, "axis", 1) != 1 {
                        return Err("Flatten on an axis other than 1".into());
                    }
                    shapes.push(vec![shapes[x].iter().product()]);
                    steps.push(match shapes[x][..] {
                        [c, h, w] if c > 1 && h * w > 1 => Step::Transpose {
                            x,
                            y,
                            rows: h * w,
                            cols: c,
                        },
                        _ => Step::Copy { x, y },
                    });
                }
                "Gemm" => {
                    let x = value(&node.input[0])?;
                    let [k] = shapes[x][..] else {
                        return Err("Gemm on a value that is not flat".into());
                    };
                    if int(node, "transA", 0) != 0 {
                        return Err("Gemm with transA".into());
                    }
                    let (wd, wv) =
                        initializer(node, 1, &mut weights)?.ok_or("Gemm without weights")?;
                    let trans_b = int(node, "transB", 0) != 0;
                    let n = match (&wd[..], trans_b) {
                        (&[n, kk], true) if kk == k => n,
                        (&[kk, n], false) if kk == k => n,
                        _ => return Err("Gemm weights disagree with its input".into()),
                    };
                    let (alpha, beta) = (float(node, "alpha", 1.0), float(node, "beta", 1.0));
                    let mut weight = vec![0.0; n * k];
                    for o in 0..n {
                        for i in 0..k {
                            let v = if trans_b {
                                wv[o * k + i]
                            } else {
                                wv[i * n + o]
                            };
                            weight[o * k + i] = alpha * v;
                        }
                    }
                    let bias = match initializer(node, 2, &mut weights)? {
                        None => vec![0.0; n],
                        Some((_, b)) if b.len() == 1 => vec![beta * b[0]; n],
                        Some((_, b)) if b.len() == n => b.iter().map(|v| beta * v).collect(),
                        Some(_) => return Err("Gemm bias length".into()),
                    };
                    let relu = fold_relu();
                    shapes.push(vec![n]);
                    steps.push(Step::Dense {
                        x,
                        y,
                        k,
                        n,
                        weight,
                        bias,
                        relu,
                    });
                }
                other => return Err(format!("operator {other}")),
            }
            if ids.insert(out, y).is_some() || weights.remove(out).is_some() {
                return Err(format!("value {out} is defined twice"));
            }
        }
        let mut output = *ids
            .get(out_name)
            .ok_or("the graph's output is not computed")?;
        if let [c, h, w] = shapes[output][..]
            && c > 1
            && h * w > 1
        {
            steps.push(Step::Transpose {
                x: output,
                y: shapes.len(),
                rows: h * w,
                cols: c,
            });
            output = shapes.len();
            shapes.push(vec![c, h, w]);
        }
        let len: usize = shapes[output].iter().product();
        if len != output_len {
            return Err(format!("output has {len} values, expected {output_len}"));
        }
        Ok(DirectPlan {
            steps,
            values: shapes.len(),
            output,
            input_len: input_shape.iter().product(),
            scratch: Mutex::new(Vec::new()),
        })
    }

    /// Run on `input` (checked by the caller to hold the input's values) into `out`.
    pub(super) fn run_into(&self, input: &[f32], out: &mut Vec<f32>) {
        debug_assert_eq!(input.len(), self.input_len);
        let mut s = self
            .scratch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        s.values.resize_with(self.values, Vec::new);
        s.values[0].clear();
        s.values[0].extend_from_slice(input);
        for step in &self.steps {
            step.run(&mut s);
        }
        out.clear();
        out.extend_from_slice(&s.values[self.output]);
        self.scratch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(s);
    }
}

/// Below this many input channels a 3x3 convolution stays on im2col: its matrix product is
/// too thin for the transforms to pay (a first layer of one or three channels).
const WINOGRAD_MIN_CHANNELS: usize = 8;

/// Winograd's weight transform `U = G g G^T` for every (output, input) channel pair, laid out
/// as 16 matrices of `cin x cout`.
fn winograd_weights(weight: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    const G: [[f32; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let mut u = vec![0.0; 16 * cout * cin];
    for (pair, g) in weight.chunks_exact(9).enumerate() {
        let (co, ci) = (pair / cin, pair % cin);
        // G g (4x3), then (G g) G^T (4x4).
        let mut gg = [[0f32; 3]; 4];
        for (i, row) in gg.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (0..3).map(|k| G[i][k] * g[k * 3 + j]).sum();
            }
        }
        for i in 0..4 {
            for j in 0..4 {
                u[((i * 4 + j) * cin + ci) * cout + co] = (0..3).map(|k| gg[i][k] * G[j][k]).sum();
            }
        }
    }
    u
}

/// Four disjoint runs of `len` values of `buf`, at `start(0) < start(1) < start(2) <
/// start(3)` (each at least `len` after the one before).
fn four_mut(buf: &mut [f32], start: impl Fn(usize) -> usize, len: usize) -> [&mut [f32]; 4] {
    let (_, rest) = buf.split_at_mut(start(0));
    let (a, rest) = rest.split_at_mut(start(1) - start(0));
    let (b, rest) = rest.split_at_mut(start(2) - start(1));
    let (c, d) = rest.split_at_mut(start(3) - start(2));
    [&mut a[..len], &mut b[..len], &mut c[..len], &mut d[..len]]
}

/// Winograd's `B^T` (4x4) applied to four channel vectors, `o = B^T i`: `i0 - i2`, `i1 + i2`,
/// `i2 - i1`, `i1 - i3`. (Separate `&mut` arguments, so that the compiler knows the
/// outputs overlap nothing and vectorises the loop.)
fn transform_in(o0: &mut [f32], o1: &mut [f32], o2: &mut [f32], o3: &mut [f32], i: [&[f32]; 4]) {
    let n = o0.len();
    let (o1, o2, o3) = (&mut o1[..n], &mut o2[..n], &mut o3[..n]);
    let (i0, i1, i2, i3) = (&i[0][..n], &i[1][..n], &i[2][..n], &i[3][..n]);
    for c in 0..n {
        o0[c] = i0[c] - i2[c];
        o1[c] = i1[c] + i2[c];
        o2[c] = i2[c] - i1[c];
        o3[c] = i1[c] - i3[c];
    }
}

/// Winograd's `A^T` (2x4) applied to four channel vectors: `first = m0 + m1 + m2`, `second =
/// m1 - m2 - m3` (when there is one), each plus the bias and through the ReLU if asked.
fn transform_out(
    first: &mut [f32],
    second: Option<&mut [f32]>,
    m: [&[f32]; 4],
    bias: Option<&[f32]>,
    relu: bool,
) {
    let n = first.len();
    let (m0, m1, m2, m3) = (&m[0][..n], &m[1][..n], &m[2][..n], &m[3][..n]);
    let finish = |v: f32, c: usize| {
        let v = v + bias.map_or(0.0, |b| b[c]);
        if relu { v.max(0.0) } else { v }
    };
    if let Some(b) = bias {
        assert!(b.len() >= n, "bias too short");
    }
    for c in 0..n {
        first[c] = finish(m0[c] + m1[c] + m2[c], c);
    }
    if let Some(second) = second {
        let second = &mut second[..n];
        for c in 0..n {
            second[c] = finish(m1[c] - m2[c] - m3[c], c);
        }
    }
}

/// The first `len` values of a scratch buffer shared by layers of several sizes: it only
/// grows (shrinking it would make the next larger layer zero it again), and what it holds
/// is left for the caller to overwrite.
fn grow(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// Take value `y` out of the table to write it while the others are read.
fn take(values: &mut [Vec<f32>], y: usize, len: usize) -> Vec<f32> {
    let mut v = std::mem::take(&mut values[y]);
    v.resize(len, 0.0);
    v
}

impl Step {
    fn run(&self, s: &mut Scratch) {
        match self {
            Step::Conv { x, y, conv, relu } => {
                let mut out = take(&mut s.values, *y, conv.cout * conv.ho * conv.wo);
                match &conv.weights {
                    Lowering::Winograd(u) => {
                        conv.winograd(u, &s.values[*x], &mut s.wino, &mut out, *relu)
                    }
                    Lowering::Im2col(a) => conv.run(a, &s.values[*x], &mut s.col, &mut out, *relu),
                }
                s.values[*y] = out;
            }
            Step::Add { a, b, y, relu } => {
                let len = s.values[*a].len();
                let mut out = take(&mut s.values, *y, len);
                for ((o, a), b) in out.iter_mut().zip(&s.values[*a]).zip(&s.values[*b]) {
                    let v = a + b;
                    *o = if *relu { v.max(0.0) } else { v };
                }
                s.values[*y] = out;
            }
            Step::Relu { x, y } => {
                let len = s.values[*x].len();
                let mut out = take(&mut s.values, *y, len);
                for (o, v) in out.iter_mut().zip(&s.values[*x]) {
                    *o = v.max(0.0);
                }
                s.values[*y] = out;
            }
            Step::GlobalAveragePool { x, y, channels } => {
                let mut out = take(&mut s.values, *y, *channels);
                out.fill(0.0);
                let pixels = s.values[*x].chunks_exact(*channels);
                let count = pixels.len() as f32;
                for px in pixels {
                    out.iter_mut().zip(px).for_each(|(o, v)| *o += v);
                }
                out.iter_mut().for_each(|o| *o /= count);
                s.values[*y] = out;
            }
            Step::Copy { x, y } => {
                let mut out = take(&mut s.values, *y, 0);
                out.extend_from_slice(&s.values[*x]);
                s.values[*y] = out;
            }
            Step::Transpose { x, y, rows, cols } => {
                let mut out = take(&mut s.values, *y, rows * cols);
                for (r, src) in s.values[*x].chunks_exact(*cols).enumerate() {
                    for (c, &v) in src.iter().enumerate() {
                        out[c * rows + r] = v;
                    }
                }
                s.values[*y] = out;
            }
            Step::Dense {
                x,
                y,
                k,
                n,
                weight,
                bias,
                relu,
            } => {
                let mut out = take(&mut s.values, *y, *n);
                let xv = &s.values[*x];
                for ((o, w), b) in out.iter_mut().zip(weight.chunks_exact(*k)).zip(bias) {
                    let v = w.iter().zip(xv).map(|(w, x)| w * x).sum::<f32>() + b;
                    *o = if *relu { v.max(0.0) } else { v };
                }
                s.values[*y] = out;
            }
        }
    }
}

impl Conv {
    /// `out = conv(x) + bias`, then ReLU if asked; `x` and `out` pixel-major.
    fn run(&self, w: &Weights, x: &[f32], col: &mut Vec<f32>, out: &mut [f32], relu: bool) {
        let plain = self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pad == [0, 0];
        let a: &[f32] = if plain {
            x
        } else {
            self.im2col(x, col);
            col
        };
        w.product(a, self.ho * self.wo, out, Some(&self.bias), relu);
    }

    /// One row per output pixel, one column per (kernel row, kernel column, input channel):
    /// each run of `cin` columns is one input pixel (zero outside the image).
    fn im2col(&self, x: &[f32], col: &mut Vec<f32>) {
        let (cin, h, w) = (self.cin, self.h, self.w);
        let [sh, sw] = self.stride;
        let [pt, pl] = self.pad;
        let k = self.kh * self.kw * cin;
        for (p, row) in grow(col, self.ho * self.wo * k)
            .chunks_exact_mut(k)
            .enumerate()
        {
            let (oy, ox) = (p / self.wo, p % self.wo);
            for (t, dst) in row.chunks_exact_mut(cin).enumerate() {
                let (iy, ix) = ((oy * sh + t / self.kw), (ox * sw + t % self.kw));
                if iy < pt || iy - pt >= h || ix < pl || ix - pl >= w {
                    dst.fill(0.0);
                } else if let [d] = dst {
                    // One channel (a first layer): a store, not a call to memcpy.
                    *d = x[(iy - pt) * w + ix - pl];
                } else {
                    dst.copy_from_slice(&x[((iy - pt) * w + ix - pl) * cin..][..cin]);
                }
            }
        }
    }

    /// The same convolution (3x3, stride 1, pad 1) by Winograd's F(2x2, 3x3): each 2x2 output
    /// tile from a 4x4 input tile with 16 multiplications per channel pair instead of 36, as
    /// 16 matrix products `V[k] (tiles x cin) x U[k] (cin x cout)`. Every transform is a sum
    /// of whole channel vectors.
    fn winograd(&self, u: &[Weights], x: &[f32], s: &mut Wino, out: &mut [f32], relu: bool) {
        let (h, w, cin, cout) = (self.h, self.w, self.cin, self.cout);
        let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
        let t = th * tw;
        // The input with one zero row and column before it and enough after it for whole
        // tiles (2 th + 2 rows of 2 tw + 2 pixels).
        // Only the border is zeroed: the buffer is shared by layers of other sizes.
        let pw = 2 * tw + 2;
        let mut rows = grow(&mut s.padded, (2 * th + 2) * pw * cin).chunks_exact_mut(pw * cin);
        rows.next().expect("top row").fill(0.0);
        for (src, row) in x.chunks_exact(w * cin).zip(&mut rows) {
            row[..cin].fill(0.0);
            row[cin..][..w * cin].copy_from_slice(src);
            row[(w + 1) * cin..].fill(0.0);
        }
        rows.for_each(|row| row.fill(0.0));
        grow(&mut s.tiles, 16 * t * cin);
        grow(&mut s.part, 16 * cin.max(cout));
        for ti in 0..t {
            let (ty, tx) = (ti / tw, ti % tw);
            // d B along each tile row (columns a, b, c, e: a - c, b + c, c - b, b - e), into
            // `part` column-major (slot j * 4 + i).
            for i in 0..4 {
                let [q0, q1, q2, q3] = four_mut(&mut s.part, |j| (j * 4 + i) * cin, cin);
                let d = |j: usize| &s.padded[((2 * ty + i) * pw + 2 * tx + j) * cin..][..cin];
                transform_in(q0, q1, q2, q3, [d(0), d(1), d(2), d(3)]);
            }
            // B^T (d B) down each column, into row `ti` of V[i * 4 + j].
            for j in 0..4 {
                let q = |i: usize| &s.part[(j * 4 + i) * cin..][..cin];
                let [v0, v1, v2, v3] =
                    four_mut(&mut s.tiles, |i| ((i * 4 + j) * t + ti) * cin, cin);
                transform_in(v0, v1, v2, v3, [q(0), q(1), q(2), q(3)]);
            }
        }
        grow(&mut s.products, 16 * t * cout);
        for (k, u) in u.iter().enumerate() {
            u.product(
                &s.tiles[k * t * cin..][..t * cin],
                t,
                &mut s.products[k * t * cout..][..t * cout],
                None,
                false,
            );
        }
        // A^T m A per tile, plus the bias, then the ReLU, cropped to the output.
        for ti in 0..t {
            let (ty, tx) = (ti / tw, ti % tw);
            let m = |i: usize, j: usize| &s.products[((i * 4 + j) * t + ti) * cout..][..cout];
            // A^T m: the top (rows 0 + 1 + 2) and bottom (rows 1 - 2 - 3) of each column.
            for j in 0..4 {
                let (top, bottom) = s.part[2 * j * cout..][..2 * cout].split_at_mut(cout);
                let m = [m(0, j), m(1, j), m(2, j), m(3, j)];
                transform_out(top, Some(bottom), m, None, false);
            }
            // (A^T m) A along each row: left (0 + 1 + 2), right (1 - 2 - 3).
            for a in 0..2 {
                let oy = 2 * ty + a;
                if oy >= h {
                    break;
                }
                let r = |j: usize| &s.part[(2 * j + a) * cout..][..cout];
                let (left, right) = out[(oy * w + 2 * tx) * cout..].split_at_mut(cout);
                let right = (2 * tx + 1 < w).then(|| &mut right[..cout]);
                let m = [r(0), r(1), r(2), r(3)];
                transform_out(left, right, m, Some(&self.bias), relu);
            }
        }
    }
}
