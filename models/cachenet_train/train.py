"""Training: the full model, then CacheNet's Algorithm 1 (S-InfoVAE + generator, jointly, the
encoder frozen from epoch nu). Both are checkpointed every epoch and resume where they stopped."""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import maths
from .data import Dataset
from .nets import ClassSectorSelector, Generator, ResNet, SInfoVAE

log = logging.getLogger("cachenet_train")


@dataclass
class Config:
    dataset: str = "fashion-mnist"
    k: int = 4
    epochs_full: int = 10
    epochs: int = 10            # CacheNet epochs (Algorithm 1)
    epochs_class: int = 0       # epochs of the class-consistent generator (0: as epochs)
    nu: int = 5                 # epoch from which only the generator is updated
    batch: int = 128
    lr: float = 0.1
    vae_lr: float = 1e-3
    tau: float = 0.3
    gamma: float = 0.3
    alpha: float = 0.5          # mixing of soft and uncertainty codes (eq 16)
    info_alpha: float = 0.0     # InfoVAE alpha (eq 7)
    info_lambda: float = 10.0   # InfoVAE lambda (eq 7)
    angle_noise: float = 0.05   # std of eq 10 noise
    full_widths: tuple = (80, 160, 320)
    full_blocks: int = 2
    sub_widths: tuple = (24, 48, 96)
    label_smoothing: float = 0.1   # full model only
    camera_p: float = 0.5          # share of training images given camera-like augmentation
    erase_p: float = 0.5           # random erasing
    selector: str = "class"        # "vae": the paper's S-InfoVAE angle; "class": class-consistent sectors
    ablation: bool = True          # also train the other selector's generator, for the report
    class_alpha: float = 1.0       # eq 16 mixing for the class selector (soft code only)
    ood_weight: float = 0.5        # class selector: frames outside a submodel's partition -> uniform
    kd_weight: float = 0.0         # class selector: distillation from the full model (0: labels only)
    kd_temp: float = 2.0
    channels_last: bool = True
    dz: int = 32                # S-InfoVAE stage-1 latent
    group_cap: int = 0          # class selector: most classes in one sector's group (0: ceil(2N/K))
    seed: int = 0
    limit: int = 0              # use only this many training images (smoke runs)
    test_limit: int = 0
    threads: int = 0
    bf16: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def sigma(self) -> float:
        return maths.sigma_eq13(self.k, self.gamma, self.tau)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(cfg: Config, dev: torch.device):
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.bf16)


def normalisation(ds: Dataset) -> tuple[list[float], list[float]]:
    x = ds.images.astype(np.float32) / 255.0
    return x.mean(axis=(0, 1, 2)).tolist(), x.std(axis=(0, 1, 2)).tolist()


class Tensors:
    """A dataset as NCHW float pixels in [0, 1] on the training device, with its normalisation."""

    def __init__(self, ds: Dataset, mean, std, dev):
        self.raw = torch.from_numpy(ds.images).permute(0, 3, 1, 2).float().div_(255.0).to(dev)
        self.m = torch.tensor(mean, device=dev).view(1, -1, 1, 1)
        self.s = torch.tensor(std, device=dev).view(1, -1, 1, 1)
        self.y = torch.from_numpy(ds.labels).to(dev)

    def norm(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.m) / self.s

    @property
    def x(self) -> torch.Tensor:
        """The whole set, normalised (what the exported models take)."""
        return self.norm(self.raw)

    def __len__(self):
        return len(self.y)


def _u(n, lo, hi, gen, dev):
    return (lo + (hi - lo) * torch.rand(n, generator=gen)).to(dev)


def augment(raw: torch.Tensor, gen: torch.Generator, camera_p: float = 0.0, erase_p: float = 0.0) -> torch.Tensor:
    """Per-image augmentation of pixels in [0, 1] on the device: shift (+-2 px) and horizontal
    flip for all; for a share camera_p, what cameras deliver: object scale and aspect (0.6-1),
    position, brightness gain, a background level with a smooth texture behind the object, and
    sensor noise; then random erasing for a share erase_p."""
    b, c, h, w = raw.shape
    dev = raw.device
    cam = (torch.rand(b, generator=gen) < camera_p).to(dev)
    sx = torch.where(cam, _u(b, 0.6, 1.0, gen, dev), torch.ones(b, device=dev))
    sy = torch.where(cam, sx * _u(b, 0.8, 1.25, gen, dev), torch.ones(b, device=dev)).clamp(max=1.0)
    room_x, room_y = (1 - sx) + 4.0 / w, (1 - sy) + 4.0 / h
    tx = (torch.rand(b, generator=gen).to(dev) * 2 - 1) * room_x
    ty = (torch.rand(b, generator=gen).to(dev) * 2 - 1) * room_y
    flip = torch.where(torch.rand(b, generator=gen).to(dev) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = flip / sx
    theta[:, 0, 2] = -tx / sx
    theta[:, 1, 1] = 1 / sy
    theta[:, 1, 2] = -ty / sy
    grid = F.affine_grid(theta, (b, c, h, w), align_corners=False)
    x = F.grid_sample(raw, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # Background behind the object, brightness, noise (camera share only).
    alpha = (x * 6).clamp(0, 1)
    level = _u(b, 0.0, 0.6, gen, dev).view(b, 1, 1, 1)
    tex = F.interpolate(torch.rand(b, 1, 4, 4, generator=gen).to(dev), size=(h, w), mode="bilinear",
                        align_corners=False)
    bg = (level * (0.75 + 0.5 * tex)).clamp(0, 1)
    gain = _u(b, 0.6, 1.2, gen, dev).view(b, 1, 1, 1)
    noise = torch.randn(x.shape, generator=gen).to(dev) * _u(b, 0.0, 0.04, gen, dev).view(b, 1, 1, 1)
    camx = (alpha * x * gain + (1 - alpha) * bg + noise).clamp(0, 1)
    x = torch.where(cam.view(b, 1, 1, 1), camx, x)
    if erase_p > 0:
        er = (torch.rand(b, generator=gen) < erase_p).to(dev).view(b, 1, 1, 1)
        eh = (_u(b, 0.2, 0.5, gen, dev) * h).long().view(b, 1, 1, 1)
        ew = (_u(b, 0.2, 0.5, gen, dev) * w).long().view(b, 1, 1, 1)
        y0 = (torch.rand(b, generator=gen).to(dev).view(b, 1, 1, 1) * (h - eh + 1)).long()
        x0 = (torch.rand(b, generator=gen).to(dev).view(b, 1, 1, 1) * (w - ew + 1)).long()
        yy = torch.arange(h, device=dev).view(1, 1, h, 1)
        xx = torch.arange(w, device=dev).view(1, 1, 1, w)
        box = (yy >= y0) & (yy < y0 + eh) & (xx >= x0) & (xx < x0 + ew) & er
        x = torch.where(box, torch.rand(x.shape, generator=gen).to(dev), x)
    return x


def batches(n: int, size: int, gen: torch.Generator, shuffle=True):
    idx = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    for i in range(0, n, size):
        yield idx[i:i + size]


def _cl(cfg: Config, x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


def _ckpt(path: str, **state):
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def predict(model, x: torch.Tensor, cfg: Config, bs: int = 512) -> torch.Tensor:
    model.eval()
    dev = x.device
    outs = []
    for i in range(0, len(x), bs):
        with autocast(cfg, dev):
            outs.append(model(_cl(cfg, x[i:i + bs]) if x.dim() == 4 else x[i:i + bs]).float())
    return torch.cat(outs)


def train_full(cfg: Config, train: Tensors, test: Tensors, classes: int, out: str, history: dict) -> ResNet:
    dev = train.raw.device
    model = ResNet(train.raw.shape[1], classes, cfg.full_widths, cfg.full_blocks).to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    steps = cfg.epochs_full * ((len(train) + cfg.batch - 1) // cfg.batch)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=max(steps, 8), pct_start=0.25)
    path = os.path.join(out, "checkpoints", "full.pt")
    start = 0
    if os.path.exists(path):
        st = torch.load(path, map_location=dev, weights_only=False)
        model.load_state_dict(st["model"])
        if "opt" in st:   # the last epoch's checkpoint keeps the weights only
            opt.load_state_dict(st["opt"]); sched.load_state_dict(st["sched"])
        start = st["epoch"]; history["full"] = st["history"]
        log.info("full model: resumed after epoch %d", start)
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * start)
    for epoch in range(start, cfg.epochs_full):
        model.train()
        t0, tot, n = time.time(), 0.0, 0
        bar = tqdm(list(batches(len(train), cfg.batch, gen)), desc=f"full {epoch + 1}/{cfg.epochs_full}",
                   leave=False, mininterval=5)
        for idx in bar:
            x = _cl(cfg, train.norm(augment(train.raw[idx], gen, cfg.camera_p, cfg.erase_p)))
            with autocast(cfg, dev):
                loss = F.cross_entropy(model(x), train.y[idx], label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step(); sched.step()
            tot += loss.item() * len(idx); n += len(idx)
            bar.set_postfix(loss=f"{tot / n:.3f}")
        acc = (predict(model, test.x, cfg).argmax(1) == test.y).float().mean().item()
        history["full"].append({"epoch": epoch + 1, "loss": tot / n, "test_acc": acc, "seconds": time.time() - t0})
        log.info("full epoch %d: loss %.4f test acc %.4f (%.0f s)", epoch + 1, tot / n, acc, time.time() - t0)
        resume = {} if epoch + 1 == cfg.epochs_full else {"opt": opt.state_dict(), "sched": sched.state_dict()}
        _ckpt(path, model=model.state_dict(), epoch=epoch + 1, history=history["full"], **resume)
    return model


def cachenet_step(cfg: Config, vae: SInfoVAE, gen_net: Generator, x, xa, y, noise_gen=None):
    """One batch of Algorithm 1 (the paper): returns (J, parts, mask). x is the clean batch
    (encoder input), xa the augmented one (submodels' input), both normalised."""
    # Stage 1: x -> z (eq 7); stage 2: z -> z-bar, 2-D (eq 8).
    l1, l2, mu2 = vae.losses(x.flatten(1), cfg.info_alpha, cfg.info_lambda)
    # Polar soft codes (eqs 9-12) on the noisy angle of the 2-D mean.
    theta = maths.noisy_angle_eq10(maths.angle_eq9(mu2.detach().float()), cfg.angle_noise, noise_gen)
    soft = maths.soft_code_eq12(theta, cfg.k, cfg.sigma)
    # Submodels (generator) on every sample.
    logits = gen_net.forward_all(xa).float()               # [K, B, C]
    ent = maths.entropy_eq14(logits.detach()).T            # [B, K]
    unc = maths.uncertainty_code_eq15(ent, cfg.tau)        # eq 15
    mask = maths.partition_eq16(soft, unc, cfg.tau, cfg.alpha)  # eq 16, [B, K]
    ce = torch.stack([F.cross_entropy(lg, y, reduction="none") for lg in logits], 1)  # [B, K]
    jf = (ce * mask).sum(1).mean()                         # eq 17
    return jf + l1 + l2, {"J_F": jf.item(), "L1": l1.item(), "L2": l2.item()}, mask


def class_step(cfg: Config, table: torch.Tensor, gen_net: Generator, xa, y, noise_gen=None,
               teacher_logits=None):
    """One batch of the class-consistent variant. The 2-D point of a training image is its class's
    point on the circle (`table` [N, 2]; with a teacher, the teacher's posterior mapped onto the
    class points, as the edge's selector does at run time); partitions by eqs 9-12 and 16 on that
    point; each submodel learns its partition (cross-entropy, plus distillation when a teacher is
    given) and answers frames outside it with a flat posterior, so that they miss (high entropy)."""
    if teacher_logits is not None:
        point = torch.softmax(teacher_logits.float(), 1) @ table
    else:
        point = table[y]
    theta = maths.noisy_angle_eq10(maths.angle_eq9(point), cfg.angle_noise, noise_gen)
    soft = maths.soft_code_eq12(theta, cfg.k, cfg.sigma)
    logits = gen_net.forward_all(xa).float()               # [K, B, C]
    ent = maths.entropy_eq14(logits.detach()).T
    unc = maths.uncertainty_code_eq15(ent, cfg.tau)
    mask = maths.partition_eq16(soft, unc, cfg.tau, cfg.class_alpha).float()
    ce = torch.stack([F.cross_entropy(lg, y, reduction="none") for lg in logits], 1)
    per = ce
    if teacher_logits is not None and cfg.kd_weight > 0:
        t = cfg.kd_temp
        pt = torch.softmax(teacher_logits.float() / t, 1)
        kd = torch.stack([(pt * (pt.clamp_min(1e-8).log() - torch.log_softmax(lg / t, 1))).sum(1) * t * t
                          for lg in logits], 1)
        per = ce + cfg.kd_weight * kd
    ood = torch.stack([-torch.log_softmax(lg, 1).mean(1) for lg in logits], 1)   # CE to uniform
    jf = (per * mask).sum(1).mean()
    jo = (ood * (1 - mask)).sum(1).mean() * cfg.ood_weight
    return jf + jo, {"J_F": jf.item(), "J_OOD": jo.item()}, mask


def _run_epochs(cfg, name, path, train, nets: dict, opts: dict, sched, history_key, history, epochs, step_fn):
    """The shared epoch loop of both CacheNet variants, with per-epoch checkpoints and resume."""
    start = 0
    if os.path.exists(path):
        st = torch.load(path, map_location=train.raw.device, weights_only=False)
        for k2, n in nets.items():
            n.load_state_dict(st[k2])
        if "sched" in st:   # the last epoch's checkpoint keeps the weights only
            for k2, o in opts.items():
                o.load_state_dict(st[k2])
            sched.load_state_dict(st["sched"])
        start = st["epoch"]; history[history_key] = st["history"]
        log.info("%s: resumed after epoch %d", name, start)
    g = torch.Generator().manual_seed(cfg.seed + 7 + 1000 * start)
    for epoch in range(start, epochs):
        t0 = time.time()
        sums: dict = {}
        counts = torch.zeros(cfg.k)
        n = 0
        bar = tqdm(list(batches(len(train), cfg.batch, g)), desc=f"{name} {epoch + 1}/{epochs}",
                   leave=False, mininterval=5)
        for idx in bar:
            J, parts, mask = step_fn(epoch, idx, g)
            b = len(idx)
            sums["J"] = sums.get("J", 0.0) + J * b
            for kk, v in parts.items():
                sums[kk] = sums.get(kk, 0.0) + v * b
            counts += mask.sum(0).float().cpu()
            n += b
        rec = {k2: v / n for k2, v in sums.items()}
        rec.update(epoch=epoch + 1, joint=epoch < cfg.nu, seconds=time.time() - t0,
                   samples_per_submodel=counts.tolist())
        history[history_key].append(rec)
        log.info("%s epoch %d: %s per-submodel %s (%.0f s)", name, epoch + 1,
                 " ".join(f"{k2} {v:.3f}" for k2, v in rec.items() if isinstance(v, float) and k2 != "seconds"),
                 [int(c) for c in counts.tolist()], rec["seconds"])
        state = {k2: n_.state_dict() for k2, n_ in nets.items()}
        if epoch + 1 < epochs:
            state.update({k2: o.state_dict() for k2, o in opts.items()}, sched=sched.state_dict())
        _ckpt(path, epoch=epoch + 1, history=history[history_key], **state)


def _generator(cfg, train, classes, epochs=None):
    dev = train.raw.device
    gen_net = Generator(train.raw.shape[1], classes, cfg.k, cfg.sub_widths).to(dev)
    if cfg.channels_last:
        gen_net = gen_net.to(memory_format=torch.channels_last)
    steps = (epochs or cfg.epochs) * ((len(train) + cfg.batch - 1) // cfg.batch)
    opt_g = torch.optim.SGD(gen_net.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt_g, cfg.lr, total_steps=max(steps, 8), pct_start=0.25)
    return gen_net, opt_g, sched


def train_cachenet(cfg: Config, train: Tensors, test: Tensors, classes: int, out: str, history: dict):
    """The paper's Algorithm 1: S-InfoVAE and generator jointly until epoch nu, then the
    generator alone. Returns (vae, generator)."""
    dev = train.raw.device
    vae = SInfoVAE(train.raw[0].numel(), cfg.dz).to(dev)
    gen_net, opt_g, sched = _generator(cfg, train, classes)
    opt_v = torch.optim.Adam(vae.parameters(), lr=cfg.vae_lr)

    def step(epoch, idx, g):
        joint = epoch < cfg.nu          # Algorithm 1: kappa until nu, then chi only
        vae.train(joint); gen_net.train()
        for p in vae.parameters():
            p.requires_grad_(joint)
        x = train.norm(train.raw[idx])
        xa = _cl(cfg, train.norm(augment(train.raw[idx], g, cfg.camera_p, 0.0)))
        with autocast(cfg, dev):
            J, parts, mask = cachenet_step(cfg, vae, gen_net, x, xa, train.y[idx], g)
        opt_g.zero_grad(set_to_none=True); opt_v.zero_grad(set_to_none=True)
        J.backward()
        opt_g.step(); sched.step()
        if joint:
            opt_v.step()
        return J.item(), parts, mask

    history.setdefault("cachenet", [])
    _run_epochs(cfg, "cachenet", os.path.join(out, "checkpoints", "cachenet.pt"), train,
                {"vae": vae, "gen": gen_net}, {"opt_g": opt_g, "opt_v": opt_v}, sched, "cachenet", history,
                cfg.epochs, step)
    return vae.eval(), gen_net.eval()


@torch.no_grad()
def class_groups(cfg: Config, full, train: Tensors, classes: int, held_out: int = 10000) -> list[list[int]]:
    """Group the classes into K sectors so that the classes the full model confuses share one:
    agglomerative merging on the symmetric confusion counts of the full model on `held_out`
    training images (largest confusion between two groups first; a group holds at most
    ceil(2N/K) classes). A frame the full model is unsure about then still selects the one
    submodel that knows every class it could be."""
    g = torch.Generator().manual_seed(cfg.seed + 99)
    idx = torch.randperm(len(train), generator=g)[:held_out].to(train.raw.device)
    pred = predict(full, train.norm(train.raw[idx]), cfg).argmax(1)
    conf = torch.zeros(classes, classes, dtype=torch.float64)
    for t, p in zip(train.y[idx].cpu().tolist(), pred.cpu().tolist()):
        conf[t, p] += 1
    sym = conf + conf.T
    groups = [[c] for c in range(classes)]
    cap = cfg.group_cap or -(-2 * classes // cfg.k)
    while len(groups) > cfg.k:
        best = None
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                if len(groups[i]) + len(groups[j]) > cap:
                    continue
                w = sum(float(sym[a, b]) for a in groups[i] for b in groups[j])
                if best is None or w > best[0]:
                    best = (w, i, j)
        if best is None:   # nothing fits under the cap: merge the two smallest
            order = sorted(range(len(groups)), key=lambda i: len(groups[i]))
            best = (0.0, order[0], order[1])
        _, i, j = best
        groups[i] = sorted(groups[i] + groups[j])
        del groups[j]
    return sorted(groups, key=lambda gr: gr[0])


def class_angles(cfg: Config, groups: list[list[int]], classes: int) -> list[float]:
    """Group k's classes sit within +-0.1 sector widths of sector k's midpoint (eq 11)."""
    width = maths.TWO_PI / cfg.k
    ang = [0.0] * classes
    for k, grp in enumerate(groups):
        mid = width * (k + 0.5)
        for j, c in enumerate(grp):
            ang[c] = mid + (0.0 if len(grp) == 1 else (j / (len(grp) - 1) - 0.5) * 0.2 * width)
    return ang


def train_class_generator(cfg: Config, train: Tensors, classes: int, out: str, history: dict, full, angles,
                          init=None):
    """The class-consistent extension: a generator trained on the partitions of the class
    points (with cfg.kd_weight > 0 the full model is also the teacher: partitions by its
    posterior, plus distillation)."""
    dev = train.raw.device
    epochs = cfg.epochs_class or cfg.epochs
    gen_net, opt_g, sched = _generator(cfg, train, classes, epochs)
    if init is not None:
        # Start from the paper's generator (its features; the partitions are re-learnt).
        gen_net.load_state_dict(init.state_dict())
    table = ClassSectorSelector(angles).table.to(dev)
    full.eval()

    def step(epoch, idx, g):
        gen_net.train()
        xa = _cl(cfg, train.norm(augment(train.raw[idx], g, cfg.camera_p, 0.0)))
        teacher = None
        if cfg.kd_weight > 0:
            with torch.no_grad(), autocast(cfg, dev):
                teacher = full(xa).float()
        with autocast(cfg, dev):
            J, parts, mask = class_step(cfg, table, gen_net, xa, train.y[idx], g, teacher)
        opt_g.zero_grad(set_to_none=True)
        J.backward()
        opt_g.step(); sched.step()
        return J.item(), parts, mask

    history.setdefault("class", [])
    _run_epochs(cfg, "class-generator", os.path.join(out, "checkpoints", "class.pt"), train,
                {"gen": gen_net}, {"opt_g": opt_g}, sched, "class", history, epochs, step)
    return gen_net.eval()


def fit(cfg: Config, train_ds: Dataset, test_ds: Dataset, out: str):
    """Train everything. Returns a dict: full, vae, gen (the paper's generator, or None when not
    trained), class_gen and angles (the extension's, or None), mean, std, history, test."""
    os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.limit:
        train_ds = train_ds.subset(cfg.limit, cfg.seed)
    if cfg.test_limit:
        test_ds = test_ds.subset(cfg.test_limit, cfg.seed)
    dev = device()
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    mean, std = normalisation(train_ds)
    train, test = Tensors(train_ds, mean, std, dev), Tensors(test_ds, mean, std, dev)
    with open(os.path.join(out, "checkpoints", "config.json"), "w") as f:
        json.dump(asdict(cfg), f, indent=2)
    history = {"full": [], "cachenet": [], "class": []}
    n_cls = len(train_ds.classes)
    log.info("training on %s: %d train / %d test images, K=%d, sigma=%.4f, selector %s", dev, len(train),
             len(test), cfg.k, cfg.sigma, cfg.selector)
    full = train_full(cfg, train, test, n_cls, out, history).eval()
    # The S-InfoVAE (and the paper's generator) are trained in both variants: the class variant
    # takes the order of its classes around the circle from the encoder.
    vae, gen_net = train_cachenet(cfg, train, test, n_cls, out, history)
    class_gen = angles = groups = None
    if cfg.selector == "class" or cfg.ablation:
        groups = class_groups(cfg, full, train, n_cls)
        log.info("class groups (one per sector, from the full model's confusions): %s",
                 [[train_ds.classes[c] for c in grp] for grp in groups])
        angles = class_angles(cfg, groups, n_cls)
        class_gen = train_class_generator(cfg, train, n_cls, out, history, full, angles, init=gen_net)
    return {"full": full, "vae": vae, "gen": gen_net, "class_gen": class_gen, "angles": angles,
            "groups": groups if angles is not None else None,
            "mean": mean, "std": std, "history": history, "test": test, "train": train}
