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
from .nets import Generator, ResNet, SInfoVAE

log = logging.getLogger("cachenet_train")


@dataclass
class Config:
    dataset: str = "fashion-mnist"
    k: int = 4
    epochs_full: int = 10
    epochs: int = 10            # CacheNet epochs (Algorithm 1)
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
    full_widths: tuple = (32, 64, 128)
    sub_widths: tuple = (16, 32, 64)
    dz: int = 32
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
    """A dataset as a normalised NCHW float tensor on the training device."""

    def __init__(self, ds: Dataset, mean, std, dev):
        x = torch.from_numpy(ds.images).permute(0, 3, 1, 2).float().div_(255.0)
        m = torch.tensor(mean).view(1, -1, 1, 1)
        s = torch.tensor(std).view(1, -1, 1, 1)
        self.x = ((x - m) / s).to(dev)
        self.y = torch.from_numpy(ds.labels).to(dev)

    def __len__(self):
        return len(self.y)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop (pad 2) and horizontal flip, per batch on the device."""
    b, _, h, w = x.shape
    p = F.pad(x, (2, 2, 2, 2), mode="replicate")
    dx, dy = torch.randint(0, 5, (2,), generator=gen).tolist()
    x = p[:, :, dy:dy + h, dx:dx + w]
    flip = torch.rand(b, generator=gen) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(3), x)


def batches(n: int, size: int, gen: torch.Generator, shuffle=True):
    idx = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    for i in range(0, n, size):
        yield idx[i:i + size]


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
            outs.append(model(x[i:i + bs]).float())
    return torch.cat(outs)


def train_full(cfg: Config, train: Tensors, test: Tensors, classes: int, out: str, history: dict) -> ResNet:
    dev = train.x.device
    model = ResNet(train.x.shape[1], classes, cfg.full_widths).to(dev)
    steps = cfg.epochs_full * ((len(train) + cfg.batch - 1) // cfg.batch)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=max(steps, 8), pct_start=0.25)
    path = os.path.join(out, "checkpoints", "full.pt")
    start = 0
    if os.path.exists(path):
        st = torch.load(path, map_location=dev, weights_only=False)
        model.load_state_dict(st["model"]); opt.load_state_dict(st["opt"]); sched.load_state_dict(st["sched"])
        start = st["epoch"]; history["full"] = st["history"]
        log.info("full model: resumed after epoch %d", start)
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * start)
    for epoch in range(start, cfg.epochs_full):
        model.train()
        t0, tot, n = time.time(), 0.0, 0
        bar = tqdm(list(batches(len(train), cfg.batch, gen)), desc=f"full {epoch + 1}/{cfg.epochs_full}",
                   leave=False, mininterval=5)
        for idx in bar:
            x = augment(train.x[idx], gen)
            with autocast(cfg, dev):
                loss = F.cross_entropy(model(x), train.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step(); sched.step()
            tot += loss.item() * len(idx); n += len(idx)
            bar.set_postfix(loss=f"{tot / n:.3f}")
        acc = (predict(model, test.x, cfg).argmax(1) == test.y).float().mean().item()
        history["full"].append({"epoch": epoch + 1, "loss": tot / n, "test_acc": acc, "seconds": time.time() - t0})
        log.info("full epoch %d: loss %.4f test acc %.4f (%.0f s)", epoch + 1, tot / n, acc, time.time() - t0)
        _ckpt(path, model=model.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(),
              epoch=epoch + 1, history=history["full"])
    return model


def cachenet_step(cfg: Config, vae: SInfoVAE, gen_net: Generator, x, xa, y, noise_gen=None):
    """One batch of Algorithm 1: returns (J, parts, mask). x is the clean batch (encoder input),
    xa the augmented one (submodels' input)."""
    flat = x.flatten(1)
    # Stage 1: x -> z, eq 7.
    z, mu1, lv1, rec1 = vae.s1(flat)
    l1 = maths.infovae_loss_eq7(F.mse_loss(rec1, flat, reduction="none").sum(1).mean(), mu1, lv1, z,
                                cfg.info_alpha, cfg.info_lambda)
    # Stage 2: z -> z-bar (2-D), eq 8, trained stage-wise on the (detached) stage-1 code.
    zin = mu1.detach()
    zb, mu2, lv2, rec2 = vae.s2(zin)
    l2 = maths.infovae_loss_eq7(F.mse_loss(rec2, zin, reduction="none").sum(1).mean(), mu2, lv2, zb,
                                cfg.info_alpha, cfg.info_lambda)
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


def train_cachenet(cfg: Config, train: Tensors, test: Tensors, classes: int, out: str, history: dict):
    dev = train.x.device
    vae = SInfoVAE(train.x[0].numel(), cfg.dz).to(dev)
    gen_net = Generator(train.x.shape[1], classes, cfg.k, cfg.sub_widths).to(dev)
    steps = cfg.epochs * ((len(train) + cfg.batch - 1) // cfg.batch)
    opt_g = torch.optim.SGD(gen_net.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt_g, cfg.lr, total_steps=max(steps, 8), pct_start=0.25)
    opt_v = torch.optim.Adam(vae.parameters(), lr=cfg.vae_lr)
    path = os.path.join(out, "checkpoints", "cachenet.pt")
    start = 0
    if os.path.exists(path):
        st = torch.load(path, map_location=dev, weights_only=False)
        vae.load_state_dict(st["vae"]); gen_net.load_state_dict(st["gen"])
        opt_g.load_state_dict(st["opt_g"]); opt_v.load_state_dict(st["opt_v"]); sched.load_state_dict(st["sched"])
        start = st["epoch"]; history["cachenet"] = st["history"]
        log.info("cachenet: resumed after epoch %d", start)
    g = torch.Generator().manual_seed(cfg.seed + 7 + 1000 * start)
    for epoch in range(start, cfg.epochs):
        joint = epoch < cfg.nu          # Algorithm 1: kappa until nu, then chi only
        vae.train(joint); gen_net.train()
        for p in vae.parameters():
            p.requires_grad_(joint)
        t0 = time.time()
        sums = {"J": 0.0, "J_F": 0.0, "L1": 0.0, "L2": 0.0}
        counts = torch.zeros(cfg.k)
        n = 0
        bar = tqdm(list(batches(len(train), cfg.batch, g)), desc=f"cachenet {epoch + 1}/{cfg.epochs}",
                   leave=False, mininterval=5)
        for idx in bar:
            x = train.x[idx]
            xa = augment(x, g)
            with autocast(cfg, dev):
                J, parts, mask = cachenet_step(cfg, vae, gen_net, x, xa, train.y[idx], g)
            opt_g.zero_grad(set_to_none=True); opt_v.zero_grad(set_to_none=True)
            J.backward()
            opt_g.step(); sched.step()
            if joint:
                opt_v.step()
            b = len(idx)
            sums["J"] += J.item() * b
            for kk, v in parts.items():
                sums[kk] += v * b
            counts += mask.sum(0).float().cpu()
            n += b
            bar.set_postfix(J=f"{sums['J'] / n:.3f}")
        rec = {k2: v / n for k2, v in sums.items()}
        rec.update(epoch=epoch + 1, joint=joint, seconds=time.time() - t0,
                   samples_per_submodel=counts.tolist())
        history["cachenet"].append(rec)
        log.info("cachenet epoch %d (%s): J %.3f J_F %.3f L1 %.2f L2 %.2f per-submodel %s (%.0f s)",
                 epoch + 1, "joint" if joint else "generator only", rec["J"], rec["J_F"], rec["L1"],
                 rec["L2"], [int(c) for c in counts.tolist()], rec["seconds"])
        _ckpt(path, vae=vae.state_dict(), gen=gen_net.state_dict(), opt_g=opt_g.state_dict(),
              opt_v=opt_v.state_dict(), sched=sched.state_dict(), epoch=epoch + 1, history=history["cachenet"])
    return vae, gen_net


def fit(cfg: Config, train_ds: Dataset, test_ds: Dataset, out: str):
    """Train everything; returns (full, vae, generator, mean, std, history)."""
    os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.limit:
        train_ds = train_ds.subset(cfg.limit, cfg.seed)
    if cfg.test_limit:
        test_ds = test_ds.subset(cfg.test_limit, cfg.seed)
    dev = device()
    mean, std = normalisation(train_ds)
    train, test = Tensors(train_ds, mean, std, dev), Tensors(test_ds, mean, std, dev)
    with open(os.path.join(out, "checkpoints", "config.json"), "w") as f:
        json.dump(asdict(cfg), f, indent=2)
    history = {"full": [], "cachenet": []}
    log.info("training on %s: %d train / %d test images, K=%d, sigma=%.4f", dev, len(train), len(test),
             cfg.k, cfg.sigma)
    full = train_full(cfg, train, test, len(train_ds.classes), out, history)
    vae, gen_net = train_cachenet(cfg, train, test, len(train_ds.classes), out, history)
    return full.eval(), vae.eval(), gen_net.eval(), mean, std, history, test
