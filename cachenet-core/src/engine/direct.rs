//! The engine's own plan for plain convolutional classifiers (the shape of every CacheNet
//! classifier: 2-D convolutions, ReLU, residual additions, global average pooling, flatten and
//! one dense layer, batch 1).
//!
//! tract runs these graphs 2.4-3.1x slower than onnxruntime on one thread: its convolution
//! packs the image lazily for small images (28x28 and below), about a third of a run. This
//! plan lowers each convolution to one matrix product on an im2col buffer (copied row by row,
//! contiguous for stride 1), or for 3x3 stride-1 layers to Winograd's F(2x2, 3x3), and runs
//! the products on weights laid out at load for the CPU's kernel (see [`super::gemm`]). The
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
    /// One zero-padded input plane, split into its even and odd columns.
    padded: Vec<f32>,
    /// `B^T d` of one row of tiles (even and odd columns).
    rows: Vec<f32>,
    /// The transformed tiles `V` and their products `M` with the weights.
    tiles: Vec<f32>,
    products: Vec<f32>,
    /// `A^T m` (top and bottom row) and the four outputs of every tile, for one channel.
    outs: Vec<f32>,
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
    /// One product of the `cout x (cin * kh * kw)` weights with the im2col buffer.
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
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let mut shapes: Vec<Vec<usize>> = vec![input_shape[1..].to_vec()];
        ids.insert(inputs[0].name.as_str(), 0);
        // How many nodes read each value (a ReLU folds into the step before it only when it is
        // that value's one reader and the value is not the graph's output).
        let mut readers: HashMap<&str, usize> = HashMap::new();
        for n in &graph.node {
            for i in &n.input {
                *readers.entry(i.as_str()).or_default() += 1;
            }
        }
        let out_name = graph.output[0].name.as_str();
        let mut steps: Vec<Step> = Vec::new();
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
                            u.chunks_exact(cout * cin)
                                .map(|u| Weights::new(u.to_vec(), cout, cin))
                                .collect(),
                        )
                    } else {
                        Lowering::Im2col(Weights::new(weight, cout, cin * kh * kw))
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
                    steps.push(Step::Copy { x, y });
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
        let output = *ids
            .get(out_name)
            .ok_or("the graph's output is not computed")?;
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
/// too thin for the transforms to pay. (Measured on the shipped set, one thread: the full
/// model 12.9 ms with Winograd against 15.7 ms without; the submodels 1.22 against 1.21 ms,
/// the packing of 16 small products eating what the transform saves.)
const WINOGRAD_MIN_CHANNELS: usize = 8;

/// Winograd's weight transform `U = G g G^T` for every (output, input) channel pair, laid out
/// as 16 matrices of `cout x cin`.
fn winograd_weights(weight: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    const G: [[f32; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let mut u = vec![0.0; 16 * cout * cin];
    for (oc, g) in weight.chunks_exact(9).enumerate() {
        // G g (4x3), then (G g) G^T (4x4).
        let mut gg = [[0f32; 3]; 4];
        for (i, row) in gg.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (0..3).map(|k| G[i][k] * g[k * 3 + j]).sum();
            }
        }
        for i in 0..4 {
            for j in 0..4 {
                u[(i * 4 + j) * cout * cin + oc] = (0..3).map(|k| gg[i][k] * G[j][k]).sum();
            }
        }
    }
    u
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
                let plane = s.values[*x].len() / channels;
                for (o, p) in out.iter_mut().zip(s.values[*x].chunks_exact(plane)) {
                    *o = p.iter().sum::<f32>() / plane as f32;
                }
                s.values[*y] = out;
            }
            Step::Copy { x, y } => {
                let mut out = take(&mut s.values, *y, 0);
                out.extend_from_slice(&s.values[*x]);
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
    /// `out = conv(x) + bias`, then ReLU if asked; `out` holds `cout * ho * wo` values.
    fn run(&self, a: &Weights, x: &[f32], col: &mut Vec<f32>, out: &mut [f32], relu: bool) {
        let n = self.ho * self.wo;
        let k = self.cin * self.kh * self.kw;
        let plain = self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pad == [0, 0];
        let b: &[f32] = if plain {
            x
        } else {
            self.im2col(x, col);
            &col[..k * n]
        };
        a.product(b, n, out, Some(&self.bias), relu);
    }

    /// The same convolution (3x3, stride 1, pad 1) by Winograd's F(2x2, 3x3): each 2x2 output
    /// tile from a 4x4 input tile with 16 multiplications per channel pair instead of 36, as
    /// 16 matrix products `U[k] (cout x cin) x V[k] (cin x tiles)`.
    fn winograd(&self, u: &[Weights], x: &[f32], s: &mut Wino, out: &mut [f32], relu: bool) {
        let (h, w, cin, cout) = (self.h, self.w, self.cin, self.cout);
        let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
        let t = th * tw;
        // The input plane zero-padded (one row and column before, enough after for whole
        // tiles: 2 th + 2 rows) and split into its even and odd padded columns (tw + 1 each),
        // so that every step below is a loop over contiguous rows.
        let (ph, hw) = (2 * th + 2, tw + 1);
        s.padded.clear();
        s.padded.resize(2 * ph * hw, 0.0);
        s.tiles.resize(16 * cin * t, 0.0);
        s.rows.resize(8 * hw, 0.0);
        for (c, plane) in x.chunks_exact(h * w).enumerate() {
            let (even, odd) = s.padded.split_at_mut(ph * hw);
            for (r, src) in plane.chunks_exact(w).enumerate() {
                // Padded column 2j is input column 2j - 1, padded column 2j + 1 is input 2j.
                let (e, o) = (
                    &mut even[(r + 1) * hw..][..hw],
                    &mut odd[(r + 1) * hw..][..hw],
                );
                for (j, px) in src.chunks(2).enumerate() {
                    o[j] = px[0];
                    if let Some(&v) = px.get(1) {
                        e[j + 1] = v;
                    }
                }
            }
            let (even, odd) = (&s.padded[..ph * hw], &s.padded[ph * hw..]);
            for ty in 0..th {
                // B^T d over the tile rows, on the even and the odd columns.
                let (te, to) = s.rows.split_at_mut(4 * hw);
                for (half, tr) in [(even, &mut *te), (odd, &mut *to)] {
                    let r = |i: usize| &half[(2 * ty + i) * hw..][..hw];
                    let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
                    let (t0, rest) = tr.split_at_mut(hw);
                    let (t1, rest) = rest.split_at_mut(hw);
                    let (t2, t3) = rest.split_at_mut(hw);
                    for j in 0..hw {
                        t0[j] = r0[j] - r2[j];
                        t1[j] = r1[j] + r2[j];
                        t2[j] = r2[j] - r1[j];
                        t3[j] = r1[j] - r3[j];
                    }
                }
                // (B^T d) B over the tile columns: with a, b, c, d the tile's four columns,
                // a = even[tx], b = odd[tx], c = even[tx + 1], d = odd[tx + 1].
                for i in 0..4 {
                    let (e, o) = (&te[i * hw..][..hw], &to[i * hw..][..hw]);
                    let at = |k: usize| ((i * 4 + k) * cin + c) * t + ty * tw;
                    let (a, cc) = (&e[..tw], &e[1..]);
                    let (b, d) = (&o[..tw], &o[1..]);
                    for (v, (a, cc)) in s.tiles[at(0)..][..tw].iter_mut().zip(a.iter().zip(cc)) {
                        *v = a - cc;
                    }
                    for (v, (b, cc)) in s.tiles[at(1)..][..tw].iter_mut().zip(b.iter().zip(cc)) {
                        *v = b + cc;
                    }
                    for (v, (b, cc)) in s.tiles[at(2)..][..tw].iter_mut().zip(b.iter().zip(cc)) {
                        *v = cc - b;
                    }
                    for (v, (b, d)) in s.tiles[at(3)..][..tw].iter_mut().zip(b.iter().zip(d)) {
                        *v = b - d;
                    }
                }
            }
        }
        s.products.resize(16 * cout * t, 0.0);
        for (k, u) in u.iter().enumerate() {
            u.product(
                &s.tiles[k * cin * t..][..cin * t],
                t,
                &mut s.products[k * cout * t..][..cout * t],
                None,
                false,
            );
        }
        // A^T m A per tile (y00, y01, y10, y11 for every tile), then bias and ReLU, cropped
        // to the output.
        s.outs.resize(12 * t, 0.0);
        for (o, (dst, &bias)) in out.chunks_exact_mut(h * w).zip(&self.bias).enumerate() {
            let m = |i: usize, j: usize| &s.products[((i * 4 + j) * cout + o) * t..][..t];
            let (ys, rest) = s.outs.split_at_mut(4 * t);
            let (top, bottom) = rest.split_at_mut(4 * t);
            // A^T m over the tile rows, elementwise over all tiles.
            for j in 0..4 {
                let (m0, m1, m2, m3) = (m(0, j), m(1, j), m(2, j), m(3, j));
                let (tj, bj) = (&mut top[j * t..][..t], &mut bottom[j * t..][..t]);
                for n in 0..t {
                    tj[n] = m0[n] + m1[n] + m2[n];
                    bj[n] = m1[n] - m2[n] - m3[n];
                }
            }
            // (A^T m) A over the tile columns: y00, y01 from the top row, y10, y11 from the
            // bottom one.
            let (y0, y1) = ys.split_at_mut(2 * t);
            let (y00, y01) = y0.split_at_mut(t);
            let (y10, y11) = y1.split_at_mut(t);
            for (sr, left, right) in [(&*top, y00, y01), (&*bottom, y10, y11)] {
                let q = |j: usize| &sr[j * t..][..t];
                let (q0, q1, q2, q3) = (q(0), q(1), q(2), q(3));
                for n in 0..t {
                    left[n] = q0[n] + q1[n] + q2[n] + bias;
                    right[n] = q1[n] - q2[n] - q3[n] + bias;
                }
            }
            // Interleave the four outputs of each tile into the output rows, with the ReLU.
            let act = |v: f32| if relu { v.max(0.0) } else { v };
            for (oy, row) in dst.chunks_exact_mut(w).enumerate() {
                let (ty, a) = (oy / 2, oy % 2);
                let left = &ys[a * 2 * t + ty * tw..][..tw];
                let right = &ys[(a * 2 + 1) * t + ty * tw..][..tw];
                let mut pairs = row.chunks_exact_mut(2);
                for (p, (l, r)) in (&mut pairs).zip(left.iter().zip(right)) {
                    p[0] = act(*l);
                    p[1] = act(*r);
                }
                if let [last] = pairs.into_remainder() {
                    *last = act(left[tw - 1]);
                }
            }
        }
    }

    /// One row per (input channel, kernel row, kernel column), one column per output pixel.
    fn im2col(&self, x: &[f32], col: &mut Vec<f32>) {
        let (ho, wo, h, w) = (self.ho, self.wo, self.h, self.w);
        let [sh, sw] = self.stride;
        let [pt, pl] = self.pad;
        let n = ho * wo;
        col.resize(self.cin * self.kh * self.kw * n, 0.0);
        let mut rows = col.chunks_exact_mut(n);
        for plane in x.chunks_exact(h * w).take(self.cin) {
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    let row = rows.next().expect("im2col rows");
                    // Output columns whose input column ox * sw + kx - pl lies inside the image.
                    let lo = pl.saturating_sub(kx).div_ceil(sw).min(wo);
                    let hi = if w + pl > kx {
                        ((w + pl - kx - 1) / sw + 1).clamp(lo, wo)
                    } else {
                        lo
                    };
                    for (oy, dst) in row.chunks_exact_mut(wo).enumerate() {
                        let iy = oy * sh + ky;
                        if iy < pt || iy - pt >= h {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = &plane[(iy - pt) * w..][..w];
                        dst[..lo].fill(0.0);
                        dst[hi..].fill(0.0);
                        if hi > lo {
                            let start = lo * sw + kx - pl;
                            if sw == 1 {
                                dst[lo..hi].copy_from_slice(&src[start..start + hi - lo]);
                            } else {
                                for (d, s) in
                                    dst[lo..hi].iter_mut().zip(src[start..].iter().step_by(sw))
                                {
                                    *d = *s;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
