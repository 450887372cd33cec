"""Where a recipe's training step goes (``best`` unless ``--recipe``): seconds per epoch by component.

Builds the recipe's exact run as ``experiment.train`` does (``recipe_config``,
``make_batches``, ``make_model``, ``make_optimizer``, the EMA and Diagnostics
callbacks) on real CIFAR-10, then runs ``--steps`` training steps with a timer
around every layer's forward and backward, the loss, the optimizer step, each
callback and the making of each (mixed) batch. Times are medians per step,
scaled to the epoch's steps; the step's wall time is measured too.

    NUMPROP_DATA_DIR=/work/shared/datasets python benchmarks/recipe_profile.py --steps 30
    python benchmarks/recipe_profile.py --kernels numpy   # the plain NumPy path
    python benchmarks/recipe_profile.py --cprofile        # also cProfile's top functions

Residual rows hold the add of the skip connection only: the block's layers
have rows of their own.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import time

import numpy as np


def _timed(times: dict, key: str, fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            times.setdefault(key, []).append(time.perf_counter() - t0)

    return wrapper


def instrument(model, times: dict) -> dict:
    """Time every leaf layer's forward/backward, and each Residual's own add (minus its block)."""
    from numprop.nn.layers import Linear, Residual
    from numprop.nn.module import Sequential

    names = {}

    def label(m):
        if isinstance(m, Linear):
            return f"Linear {m.in_features}->{m.out_features}"
        return type(m).__name__

    def walk(m, path):
        if isinstance(m, Sequential):
            for i, child in enumerate(m):
                walk(child, f"{path}.{i}" if path else str(i))
            return
        if isinstance(m, Residual):
            walk(m.inner, path + ".inner")
        names[path] = label(m)
        # The model's first layer is called through backward_params; the others through
        # backward (which, for a Linear, calls backward_params: timed once, not twice).
        for method in ("forward", "backward_params" if path == "0" else "backward"):
            setattr(m, method, _timed(times, f"{method[:8]}|{path}", getattr(m, method)))

    walk(model, "")
    return names


def build(recipe: str = "best"):
    """The recipe's config, training batches, model, loss, optimizer and callbacks."""
    from numprop.nn.precision import resolve
    from numprop.training import experiment as ex
    from numprop.training.callbacks import EMA
    from numprop.training.diagnostics import Diagnostics

    cfg = ex.recipe_config(recipe)
    rng = np.random.default_rng(cfg.seed)
    data = ex.load_config_data(cfg)
    splits = ex.split_data(data, cfg, rng)
    pre = ex.make_preprocessing(data, cfg).fit(splits.x[splits.train_idx])
    precision = resolve(cfg.precision)
    train, _, _ = ex.make_batches(data, splits, pre, cfg, rng, bf16=precision.name == "bf16")
    model = ex.make_model(cfg, pre.output_dim, data.n_classes, rng)
    model.set_precision(precision)
    loss, opt = ex.make_loss(cfg), ex.make_optimizer(cfg, model)
    callbacks = [Diagnostics()] + ([EMA(cfg.ema, cfg.ema_every)] if cfg.ema else [])
    return cfg, train, model, loss, opt, callbacks, precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps (after 5 warm-up)")
    parser.add_argument("--kernels", choices=("auto", "numpy"), default="auto")
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--recipe", default="best", help="the recipe to profile")
    args = parser.parse_args()
    from numprop import config as npconfig
    from numprop.training.trainer import Trainer

    with npconfig.override(kernels=args.kernels):
        cfg, train, model, loss, opt, callbacks, precision = build(args.recipe)
        trainer = Trainer(model, loss, opt, None, callbacks)
        trainer.steps_per_epoch = len(train)
        for cb in callbacks:
            cb.on_train_begin(trainer)
            cb.on_epoch_begin(trainer, 0)
        times: dict[str, list[float]] = {}
        names = instrument(model, times)
        batches = iter(())

        def take_batch():  # a new pass (epoch) when one runs out
            nonlocal batches
            for batch in batches:
                return batch
            batches = iter(train)
            return next(batches)

        next_batch = _timed(times, "batch: gather, augment, mix", take_batch)
        hooks = {
            (cb, h): _timed(times, f"callback {type(cb).__name__}.{h}", getattr(cb, h))
            for cb in callbacks
            for h in ("on_batch_begin", "on_batch_end")
        }
        pieces = {
            "loss": _timed(
                times,
                "loss forward+backward",
                lambda o, y: (loss.forward(o, y), loss.count_correct(), loss.backward()),
            ),
            "zero": _timed(times, "optimizer zero_grad", opt.zero_grad),
            "step": _timed(times, f"optimizer step ({type(opt).__name__})", opt.step),
        }
        walls = []
        prof = cProfile.Profile() if args.cprofile else None
        for i in range(5 + args.steps):
            if i == 5:
                times.clear()
                if prof:
                    prof.enable()
            t0 = time.perf_counter()
            x, y = next_batch()
            for cb in callbacks:
                hooks[cb, "on_batch_begin"](trainer, i)
            out = model.forward(x)
            value, _, d = pieces["loss"](out, y)
            pieces["zero"]()
            with opt.fused_backward():
                model.backward_params(d)
            pieces["step"]()
            for cb in callbacks:
                hooks[cb, "on_batch_end"](trainer, i, value, len(y))
            if i >= 5:
                walls.append(time.perf_counter() - t0)
        if prof:
            prof.disable()

    steps = len(train)
    wall = statistics.median(walls) * steps
    print(
        f"{args.recipe} recipe, {steps} steps/epoch of batch {cfg.batch_size}, precision {precision.name}, "
        f"kernels={args.kernels}, {args.steps} timed steps; OMP/MKL threads "
        f"{os.environ.get('OMP_NUM_THREADS', 'default')}"
    )
    print(f"step wall: median {1e3 * statistics.median(walls):.1f} ms -> {wall:.1f} s/epoch")

    def seconds(key):
        return statistics.median(times[key]) * steps * len(times[key]) / len(walls)

    # Leaves: inclusive time; Residuals: their own add only (inclusive minus the block's layers).
    rows = []  # (row label, group label, seconds per epoch)
    for key in times:
        kind, _, path = key.partition("|")
        s = seconds(key)
        if not path:
            rows.append((key, key, s))
            continue
        if names[path] == "Residual":
            for other in times:
                k2, _, p2 = other.partition("|")
                if k2 == kind and p2.startswith(path + ".inner"):
                    s -= seconds(other)
        group = f"{names[path].split()[0]} {kind}"
        rows.append((f"{kind:8s} {path:10s} {names[path]}", group, s))
    total = sum(s for _, _, s in rows)
    print(f"{'component':44s} {'s/epoch':>8s} {'share':>6s}")
    for label, _, s in sorted(rows, key=lambda r: -r[2]):
        print(f"{label:44s} {s:8.2f} {100 * s / total:5.1f}%")
    print(f"{'sum of components':44s} {total:8.2f}")
    groups: dict[str, float] = {}
    for _, group, s in rows:
        groups[group] = groups.get(group, 0.0) + s
    print("\nby kind:")
    for group, s in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {group:42s} {s:8.2f} {100 * s / total:5.1f}%")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
