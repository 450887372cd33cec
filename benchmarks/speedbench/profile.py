"""``--profile CONFIG``: where one side's epoch goes, phase by phase, in this process.

Each phase (every layer's forward and backward, the loss, the optimizer step, the
batch conversion) is timed per batch; besides the plain sum per epoch, the median
per batch x batches per epoch is shown: on a shared machine the sum swallows
every preemption, the median mostly does not. To time the phases apart, the
numprop profile makes the training step's calls itself rather than through
``Trainer.train_step``, which the benchmark times.
"""

from __future__ import annotations

import contextlib
import cProfile
import pstats
import time

from speedbench.configs import CONFIGS, describe, gemm_flops
from speedbench.data import Data
from speedbench.runner import known, median
from speedbench.sides import SIDES, NumpropSide, TorchSide, matmul_rates

# Phases timed inside another phase (the bf16 conversions inside the Linear layers): shown,
# but left out of the sum and the shares' denominator.
NESTED = "  ↳ "


class Phases:
    """Seconds per call, by phase name."""

    def __init__(self):
        self.seconds: dict[str, list[float]] = {}

    def timed(self, key: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self.seconds.setdefault(key, []).append(time.perf_counter() - t0)
        return out


def numprop_step(side: NumpropSide, phases: Phases):
    """numprop's training step (as Trainer.train_step makes it), each call timed."""
    model, loss, opt = side.model, side.loss, side.opt
    layers, timed = list(model), phases.timed

    def step(xb, yb):
        x = xb
        for j, layer in enumerate(layers):
            x = timed(f"forward  {j}:{type(layer).__name__}", layer.forward, x)
        timed("loss forward", loss.forward, x, yb)
        timed("loss count_correct", loss.count_correct)
        d = timed("loss backward", loss.backward)
        timed("zero_grad", opt.zero_grad)
        with opt.fused_backward():
            for j in range(len(layers) - 1, 0, -1):
                d = timed(f"backward {j}:{type(layers[j]).__name__}", layers[j].backward, d)
            timed(
                f"backward 0:{type(layers[0]).__name__} (weights only)",
                layers[0].backward_params,
                d,
            )
        timed("optimizer step", opt.step)

    return step


def time_bf16_conversions(side: NumpropSide, phases: Phases) -> None:
    """Under BF16 precision: also time every conversion to bf16 (x, W, dout of each Linear),
    by operand; they run inside the layers' forward and backward phases."""
    precision = next(iter(side.model)).precision
    if precision.name != "bf16":
        return
    convert = precision.operand

    def operand(module, key, x):
        return phases.timed(f"{NESTED}to_bf16 {key} {x.shape}", convert, module, key, x)

    precision.operand = operand  # the one object every module of the model shares


def torch_step(side: TorchSide, phases: Phases):
    torch, model, loss, opt, timed = side.torch, side.model, side.loss, side.opt, phases.timed
    autocast = getattr(side, "autocast", contextlib.nullcontext)  # torch-bf16: autocast

    def forward_loss(xt, yt):
        with autocast():
            out = timed("forward (all layers)", model, xt)
            return timed("loss forward", loss, out, yt)

    def step(xb, yb):
        xt, yt = torch.from_numpy(xb), torch.from_numpy(yb)
        timed("zero_grad", opt.zero_grad, True)
        value = forward_loss(xt, yt)
        timed("backward (all layers)", value.backward)
        timed("optimizer step", opt.step)
        timed("loss.item()", value.item)

    return step


def profile(name: str, args) -> None:
    """Print the per-phase times of ``args.profile_side`` on configuration ``name``."""
    cfg = CONFIGS[name]
    data = Data(args.data_dir, args.n_train, cfg["batch"])
    phases = Phases()
    side = SIDES[args.profile_side](cfg, data)
    side.setup()
    if isinstance(side, NumpropSide):
        step = numprop_step(side, phases)
        print(
            f"{name}: {describe(cfg)}; {side.name} {side.info['numprop_version']}, ctypes BLAS "
            f"fast path {side.info['fast_blas']}, numba kernels {side.info['numba_kernels']}, "
            f"precision {next(iter(side.model)).precision!r}"
        )
    else:
        step = torch_step(side, phases)
        print(f"{name}: {describe(cfg)}; {side.name}, torch {side.torch.__version__}")

    side.epoch(-1)  # warm-up
    if isinstance(side, NumpropSide):
        time_bf16_conversions(side, phases)
    walls = []
    for k in range(args.repeats):
        perm = data.permutation(k)
        t_ep = time.perf_counter()
        for i in range(0, data.n, cfg["batch"]):
            xb, yb = phases.timed(
                "data: gather + standardise", data.batch, perm[i : i + cfg["batch"]]
            )
            step(xb, yb)
        walls.append(time.perf_counter() - t_ep)
    print_phases(
        phases,
        walls,
        cfg,
        data,
        args.repeats,
        median(matmul_rates(5)) * 1e9 if isinstance(side, NumpropSide) else float("nan"),
    )
    if args.cprofile:
        prof = cProfile.Profile()
        prof.enable()
        side.epoch(99)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)


def print_phases(
    phases: Phases, walls: list[float], cfg: dict, data: Data, repeats: int, peak_flops: float
) -> None:
    n_batches = data.n_batches(cfg["batch"])
    summed = sum(
        median(v) * n_batches for k, v in phases.seconds.items() if not k.startswith(NESTED)
    )
    floor = (
        f"; GEMM floor {gemm_flops(cfg['sizes'], data.n) / peak_flops:.3f}s "
        f"({peak_flops / 1e9:.0f} GFLOP/s)"
        if known(peak_flops)
        else ""
    )
    print(
        f"epoch wall: median {median(walls):.3f}s of {[f'{w:.2f}' for w in walls]}; "
        f"sum of per-batch medians {summed:.3f}s{floor}"
    )
    print(f"{'phase':45s} {'sum s/ep':>9s} {'median x batches':>17s} {'share':>6s}")
    for key, v in phases.seconds.items():
        per_batch = len(v) / (repeats * n_batches)  # a conversion may run more than once
        m = median(v) * n_batches * per_batch
        print(f"{key:45s} {sum(v) / repeats:9.3f} {m:17.3f} {100 * m / summed:5.1f}%")
