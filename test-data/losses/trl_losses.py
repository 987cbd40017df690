#!/usr/bin/env python3
"""Golden table for dev.spo4j.loss.TrlLossTableTest: TRL's pairwise preference losses in float64
NumPy, transcribed from TRL's expressions (not from spo4j's code), with their gradients by
central differences.

Source read (src/site/markdown/LOSSES.md pins it): DPOTrainer.dpo_loss of TRL's
trl/trainer/dpo_trainer.py for sigmoid, robust, exo_pair, hinge, ipo, bco_pair, sppo_hard,
nca_pair, aot_pair, aot, apo_zero, apo_down, discopop; CPOTrainer.cpo_loss of
trl/trainer/cpo_trainer.py for simpo and (reference-free) sigmoid, which spo4j names cpo.
The per-loss expressions below follow TRL's variable names:
  chosen_logratios = pc - rc, rejected_logratios = pr - rr, logits = (pc - pr) - (rc - rr)
TRL's loss is losses.mean() over the batch; the gradients here are of that mean with respect
to pc and pr (the policy's log-probs), as spo4j's PreferenceLoss returns them. bco_pair keeps
TRL's RunningMoments: mean 0 and count 1e-24 at the start, updated with each batch's mean
reward before the loss reads it, and detached (so it is held fixed in the differences).
Each (loss, setting) runs two batches in sequence so that bco_pair's running mean spans steps.

Usage (NumPy only, deterministic):
  python3 test-data/losses/trl_losses.py        # writes test-data/losses/trl_losses.csv
Columns: loss,setting,batch,pair,beta,eps,tau,gamma,pc,pr,rc,rr,loss_pair,mean_loss,grad_c,grad_r
(loss_pair: TRL's losses[pair], in TRL's order: aot and aot_pair give them by sorted position).
"""
import csv
import os

import numpy as np


def logsigmoid(x):
    return -np.logaddexp(0.0, -x)


def sigmoid(x):
    return np.exp(logsigmoid(x))


class RunningMoments:
    """TRL's RunningMoments on one process: only the mean is read by bco_pair."""

    def __init__(self):
        self.mean, self.var, self.count = 0.0, 1.0, 1e-24

    def update(self, xs):
        xs = np.atleast_1d(xs)
        xs_count = xs.size
        xs_mean, xs_var = xs.mean(), xs.var()
        delta = xs_mean - self.mean
        tot_count = self.count + xs_count
        new_sum = xs_var * xs_count
        old_sum = self.var * self.count + delta ** 2 * self.count * xs_count / tot_count
        self.mean += delta * xs_count / tot_count
        self.var = (old_sum + new_sum) / tot_count
        self.count = tot_count


def trl_losses(kind, s, pc, pr, rc, rr, delta):
    """TRL's per-example losses for one batch; delta is bco_pair's running mean (fixed)."""
    beta, eps = s["beta"], s["eps"]
    chosen_logratios = pc - rc
    rejected_logratios = pr - rr
    logits = (pc - pr) - (rc - rr)
    if kind == "sigmoid":
        return -logsigmoid(beta * logits) * (1 - eps) - logsigmoid(-beta * logits) * eps
    if kind == "robust":
        return (-logsigmoid(beta * logits) * (1 - eps) + logsigmoid(-beta * logits) * eps) / (1 - 2 * eps)
    if kind == "exo_pair":
        e = 1e-3 if eps == 0 else eps
        return sigmoid(beta * logits) * (logsigmoid(beta * logits) - np.log(1 - e)) + \
            sigmoid(-beta * logits) * (logsigmoid(-beta * logits) - np.log(e))
    if kind == "hinge":
        return np.maximum(0.0, 1 - beta * logits)
    if kind == "ipo":
        return (logits - 1 / (2 * beta)) ** 2
    if kind == "bco_pair":
        return -logsigmoid(beta * chosen_logratios - delta) - logsigmoid(-(beta * rejected_logratios - delta))
    if kind == "sppo_hard":
        return (chosen_logratios - 0.5 / beta) ** 2 + (rejected_logratios + 0.5 / beta) ** 2
    if kind == "nca_pair":
        cr, rj = chosen_logratios * beta, rejected_logratios * beta
        return -logsigmoid(cr) - 0.5 * logsigmoid(-cr) - 0.5 * logsigmoid(-rj)
    if kind == "aot_pair":
        d = np.sort(chosen_logratios) - np.sort(rejected_logratios)
        return -logsigmoid(beta * d) * (1 - eps) - logsigmoid(-beta * d) * eps
    if kind == "aot":
        d = np.sort(pc - pr) - np.sort(rc - rr)
        return -logsigmoid(beta * d) * (1 - eps) - logsigmoid(-beta * d) * eps
    if kind == "apo_zero":
        return (1 - sigmoid(beta * chosen_logratios)) + sigmoid(beta * rejected_logratios)
    if kind == "apo_down":
        return sigmoid(beta * chosen_logratios) + (1 - sigmoid(beta * (chosen_logratios - rejected_logratios)))
    if kind == "discopop":
        x = logits * beta
        w = sigmoid(x / s["tau"])
        return -logsigmoid(x) * (1 - w) + np.exp(-x) * w
    # CPOTrainer: reference-free, pc and pr are the (length-averaged for simpo) policy log-probs
    cpo_logits = pc - pr
    if kind == "simpo":
        cpo_logits = cpo_logits - s["gamma"] / beta
        return -logsigmoid(beta * cpo_logits) * (1 - eps) - logsigmoid(-beta * cpo_logits) * eps
    if kind == "cpo":
        return -logsigmoid(beta * cpo_logits) * (1 - eps) - logsigmoid(-beta * cpo_logits) * eps
    raise ValueError(kind)


KINDS = ["sigmoid", "robust", "exo_pair", "hinge", "ipo", "bco_pair", "sppo_hard", "nca_pair", "aot_pair",
         "aot", "apo_zero", "apo_down", "discopop", "simpo", "cpo"]
SETTINGS = [dict(beta=0.1, eps=0.0, tau=0.05, gamma=0.5), dict(beta=0.5, eps=0.2, tau=1.5, gamma=-0.3)]
B = 6


def main():
    rng = np.random.default_rng(20240617)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trl_losses.csv")
    rows = []
    for kind in KINDS:
        for si, s in enumerate(SETTINGS):
            running = RunningMoments()
            for batch in range(2):
                f32 = lambda a: a.astype(np.float32).astype(np.float64)  # exactly representable inputs
                if kind in ("simpo", "cpo"):  # reference-free: mean token log-probs, ref 0
                    pc, pr = f32(rng.uniform(-3, -0.2, B)), f32(rng.uniform(-3, -0.2, B))
                    rc, rr = np.zeros(B), np.zeros(B)
                else:
                    pc, pr = f32(rng.uniform(-90, -20, B)), f32(rng.uniform(-90, -20, B))
                    rc, rr = f32(pc + 4 * rng.standard_normal(B)), f32(pr + 4 * rng.standard_normal(B))
                if kind == "hinge":  # keep clear of the kink: |1 - beta h| >= 0.05
                    h = (pc - pr) - (rc - rr)
                    bad = np.abs(1 - s["beta"] * h) < 0.05
                    pc = np.where(bad, f32(pc + 1.0), pc)
                delta = 0.0
                if kind == "bco_pair":
                    rewards = np.concatenate([s["beta"] * (pc - rc), s["beta"] * (pr - rr)]).mean()
                    running.update(rewards)
                    delta = running.mean
                losses = trl_losses(kind, s, pc, pr, rc, rr, delta)
                step = 1e-5
                gc, gr = np.zeros(B), np.zeros(B)
                for i in range(B):
                    for arr, g in ((pc, gc), (pr, gr)):
                        keep = arr[i]
                        arr[i] = keep + step
                        up = trl_losses(kind, s, pc, pr, rc, rr, delta).mean()
                        arr[i] = keep - step
                        down = trl_losses(kind, s, pc, pr, rc, rr, delta).mean()
                        arr[i] = keep
                        g[i] = (up - down) / (2 * step)
                for i in range(B):
                    rows.append([kind, si, batch, i, s["beta"], s["eps"], s["tau"], s["gamma"],
                                 repr(float(pc[i])), repr(float(pr[i])), repr(float(rc[i])), repr(float(rr[i])),
                                 repr(float(losses[i])), repr(float(losses.mean())),
                                 repr(float(gc[i])), repr(float(gr[i]))])
    with open(out, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["loss", "setting", "batch", "pair", "beta", "eps", "tau", "gamma", "pc", "pr", "rc", "rr",
                    "loss_pair", "mean_loss", "grad_c", "grad_r"])
        w.writerows(rows)
    print("wrote %d rows to %s" % (len(rows), out))


if __name__ == "__main__":
    main()
