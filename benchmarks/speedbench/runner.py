"""The parent's loop: start the sides' workers, alternate their epochs, take the medians.

On a shared, noisy machine only ratios measured inside one run, as medians over
alternated repeats, mean much. So each configuration starts one worker per side
(one at a time: loading is not what is measured), runs a warm-up epoch on each,
then ``repeats`` rounds in which every timed side trains one epoch, in the listed
order on even rounds and reversed on odd ones, each after a SETTLE_S pause.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from speedbench.configs import N_TEST, REPO, SETTLE_S, describe, gemm_flops
from speedbench.worker import Worker

Log = Callable[[str], None]
NAN = float("nan")
# The timed entries of the speed benchmark in the order of a round; "trainer" is the numprop
# worker's epoch through Trainer.fit, the others are a worker each. The bf16 sides (mixed
# precision: numprop's BF16 products, PyTorch's CPU autocast) run only when asked for.
TIMED_ORDER = ("numprop", "torch", "numprop-bf16", "torch-bf16", "trainer", "products", "sklearn")
BF16_SIDES = ("numprop-bf16", "torch-bf16")
# bf16 rounds the products' operands (and PyTorch's autocast also its outputs): the two
# sides' losses after one identical step need not agree to float32's 1e-4.
BF16_CHECK_TOL = 1e-2


def median(xs) -> float:
    return statistics.median(xs) if xs else NAN


def known(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


# --- pieces shared with the comparison of two commits ------------------------------


def start_workers(kinds: dict[str, str], cfg: dict, args, sources: dict[str, Path]):
    """{label: Worker} and {label: its "ready" reply}; started one at a time.

    ``kinds``: label -> side class (``sides.SIDES``); ``sources``: label -> the src/
    folder its numprop comes from (this tree's unless given)."""
    workers, ready = {}, {}
    try:
        for label, kind in kinds.items():
            src = sources.get(label, REPO / "src")
            workers[label] = Worker(label, kind, cfg, args.data_dir, args.n_train, src)
            ready[label] = workers[label].read()
    except BaseException:
        stop_workers(workers)
        raise
    return workers, ready


def stop_workers(workers: dict[str, Worker]) -> None:
    for w in workers.values():
        w.kill()


def check_rel(a: list[float] | None, b: list[float] | None) -> float:
    """Largest relative difference of two [loss before, loss after] checks (nan: no check)."""
    if not a or not b:
        return NAN
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


def describe_epoch(name: str, rep: dict) -> str:
    """'numprop 0.54s (cpu 1.96x, loss 1.600)'; '*' marks under 1.5 cores busy."""
    busy = rep["cpu"] / rep["seconds"]
    if name == "products":
        extra = f", updates {rep['result']:.2f}s"
    else:
        extra = "" if rep["result"] is None else f", loss {rep['result']:.3f}"
    return f"{name} {rep['seconds']:.2f}s (cpu {busy:.2f}x{'*' if busy < 1.5 else ''}{extra})"


def epoch_call(worker: Worker) -> Callable[[int], dict]:
    """A function of the round number r that runs the worker's epoch r."""
    return lambda r: worker.call(op="epoch", k=r)


def alternate(
    calls: dict[str, Callable[[int], dict]],
    repeats: int,
    log: Log,
    limits: dict[str, int] | None = None,
) -> dict[str, list[dict]]:
    """Time every call once per round, after a SETTLE_S pause each, alternating the order.

    ``calls``: name -> function of the round number that runs one timed epoch and
    returns the worker's reply; ``limits``: at most this many rounds for a name.
    Returns name -> its replies, in round order.
    """
    names, limits = list(calls), limits or {}
    replies: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(repeats):
        parts = []
        for name in names if r % 2 == 0 else names[::-1]:
            if len(replies[name]) >= limits.get(name, repeats):
                continue
            time.sleep(SETTLE_S)
            rep = calls[name](r)
            replies[name].append(rep)
            parts.append(describe_epoch(name, rep))
        log(f"  repeat {r + 1}: " + ", ".join(parts))
    return replies


# --- the speed benchmark ------------------------------------------------------------


def run_config(name: str, cfg: dict, args, log: Log) -> dict:
    """One configuration of the speed benchmark: its measurements, medians and ratios.

    ``args.sides`` holds the timed entries (from TIMED_ORDER; numprop is always there).
    """
    timed = [s for s in TIMED_ORDER if s in args.sides]
    kinds = {s: s for s in timed if s != "trainer"}
    load0 = os.getloadavg()
    log(f"\n== {name}: {describe(cfg)} (load average {load0[0]:.1f})")
    workers, ready = start_workers(kinds, cfg, args, {})
    res = {"name": name, "cfg": cfg, "floor": [], **ready}
    try:
        res["check_rel"] = check_rel(ready["numprop"]["check"], ready.get("torch", {}).get("check"))
        res["check_rel_bf16"] = check_rel(
            ready.get("numprop-bf16", {}).get("check"), ready.get("torch-bf16", {}).get("check")
        )
        log_check(res, log)
        if not ready["numprop"]["info"].get("fast_blas"):
            log("  !!! numprop's BLAS fast path is OFF in its worker (plain NumPy fallback)")
        for w in workers.values():  # warm-up: one full epoch each (sklearn: a small fit)
            w.call(op="epoch", k=-1)
        if "trainer" in timed and not ready["numprop"]["info"].get("has_fit"):
            log("  (no Trainer.fit in this numprop: not timed)")
            timed.remove("trainer")
        res["floor"] += workers["numprop"].call(op="floor", reps=3)["result"]
        replies = alternate(
            speed_calls(timed, workers, res["floor"]),
            args.repeats,
            log,
            {"sklearn": args.sklearn_repeats},
        )
        inferring = [
            s
            for s in kinds
            if s != "products" and not (s == "sklearn" and args.sklearn_repeats < 1)
        ]  # nothing fitted
        res["infer"] = infer_rounds(inferring, workers, args.infer_repeats)
        for s, w in workers.items():
            end = w.close()
            res[s]["peak_rss_kb"], res[s]["hwm_kb"] = end["rss_kb"], end["hwm_kb"]
    finally:
        stop_workers(workers)
    res["loadavg"] = [load0, os.getloadavg()]
    collect(res, replies)
    summarise(res, args.n_train)
    log_summary(res, log)
    return res


def speed_calls(timed: list[str], workers: dict[str, Worker], floor: list[float]) -> dict:
    """name -> function of the round r that times that entry's epoch r.

    numprop's epoch comes right after two matmul-rate measurements in its process
    (appended to ``floor``); "trainer" is an epoch through Trainer.fit in numprop's
    worker, on other permutations (100 + r)."""
    numprop = workers["numprop"]

    def numprop_epoch(r):
        floor.extend(numprop.call(op="floor", reps=2)["result"])
        return numprop.call(op="epoch", k=r)

    def fit_epoch(r):
        return numprop.call(op="fit", k=100 + r)

    special = {"numprop": numprop_epoch, "trainer": fit_epoch}
    return {s: special.get(s) or epoch_call(workers[s]) for s in timed}


def collect(res: dict, replies: dict[str, list[dict]]) -> None:
    """The replies' seconds, CPU seconds and batch-conversion seconds, by side."""
    res["epochs"] = {s: [rep["seconds"] for rep in reps] for s, reps in replies.items()}
    res["cpu"] = {s: [rep["cpu"] for rep in reps] for s, reps in replies.items()}
    res["prep"] = {s: [rep["prep"] for rep in reps] for s, reps in replies.items()}
    res["updates"] = [rep["result"] for rep in replies.get("products", [])]
    res["contended"] = sum(
        rep["cpu"] / rep["seconds"] < 1.5
        for s, reps in replies.items()
        if s != "sklearn"
        for rep in reps
    )


def log_check(res: dict, log: Log) -> None:
    if "numprop-bf16" in res:
        log_check_bf16(res, log)
    if "torch" not in res:
        log(
            f"  check (loss before / after one identical step, dropout off): numprop "
            f"{res['numprop']['check'][0]:.6f} / {res['numprop']['check'][1]:.6f} (no PyTorch "
            f"to compare with)"
        )
        return
    c_np, c_t = res["numprop"]["check"], res["torch"]["check"]
    verdict = (
        "OK"
        if res["check_rel"] <= 1e-4
        else "!!! MISMATCH: the two sides do NOT compute the same thing !!!"
    )
    log(
        f"  check (loss before / after one identical step, dropout off): numprop {c_np[0]:.6f} "
        f"/ {c_np[1]:.6f}, torch {c_t[0]:.6f} / {c_t[1]:.6f}, max rel diff "
        f"{res['check_rel']:.1e} {verdict}"
    )


def log_check_bf16(res: dict, log: Log) -> None:
    c_np = res["numprop-bf16"]["check"]
    line = f"  bf16 check: numprop-bf16 {c_np[0]:.6f} / {c_np[1]:.6f}"
    if "torch-bf16" in res:
        c_t = res["torch-bf16"]["check"]
        ok = res["check_rel_bf16"] <= BF16_CHECK_TOL
        line += (
            f", torch-bf16 {c_t[0]:.6f} / {c_t[1]:.6f}, max rel diff {res['check_rel_bf16']:.1e} "
            + ("OK" if ok else f"!!! over {BF16_CHECK_TOL:.0e}: NOT the same computation !!!")
        )
    log(line)
    if not res["numprop-bf16"]["info"].get("bf16_supported"):
        log(f"  !!! numprop's bf16 products are not fast here: {res['numprop-bf16']['info']}")


def infer_rounds(sides: list[str], workers: dict[str, Worker], repeats: int) -> dict:
    """Inference seconds per side, alternated like the epochs."""
    seconds: dict[str, list[float]] = {s: [] for s in sides}
    for r in range(repeats):
        for s in sides if r % 2 == 0 else sides[::-1]:
            time.sleep(SETTLE_S)
            seconds[s].append(workers[s].call(op="infer")["seconds"])
    return seconds


def summarise(res: dict, n_train: int) -> None:
    """Add the medians and ratios that the tables and targets read (nan where a side is
    missing)."""
    epochs, prep = res["epochs"], res["prep"]
    np_s, t_s = median(epochs["numprop"]), median(epochs.get("torch", []))
    res["np_s"], res["torch_s"] = np_s, t_s
    res["ratio_torch"] = np_s / t_s
    res["trainer_s"] = median(epochs.get("trainer", []))
    res["gflops_peak"] = median(res["floor"])
    res["floor_s"] = gemm_flops(res["cfg"]["sizes"], n_train) / (res["gflops_peak"] * 1e9)
    res["ratio_floor"] = np_s / res["floor_s"]
    # the batch conversion (uint8 -> standardised float32) inside numprop's timed epochs
    res["prep_s"] = median(prep["numprop"])
    res["ratio_floor_noprep"] = (
        median([e - p for e, p in zip(epochs["numprop"], prep["numprop"])]) / res["floor_s"]
    )
    # numprop's mandatory work: its matrix products, and its weight updates (timed apart)
    products = epochs.get("products", [])
    res["work_s"] = median(products)
    res["updates_s"] = median(res["updates"])
    res["products_s"] = median([e - u for e, u in zip(products, res["updates"])])
    res["sk_s"] = median(epochs.get("sklearn", []))
    res["speedup_sk"] = res["sk_s"] / np_s
    res["speedup_sk_noprep"] = res["sk_s"] / (np_s - res["prep_s"])
    res["ips"] = {s: N_TEST / median(v) for s, v in res["infer"].items() if v}
    summarise_bf16(res)


def summarise_bf16(res: dict) -> None:
    """The bf16 sides' medians and ratios (nan where a side did not run)."""
    epochs, infer = res["epochs"], res["infer"]
    res["np_bf16_s"] = median(epochs.get("numprop-bf16", []))
    res["torch_bf16_s"] = median(epochs.get("torch-bf16", []))
    res["ratio_bf16_torch"] = res["np_bf16_s"] / res["torch_bf16_s"]
    res["ratio_bf16_fp32"] = res["np_bf16_s"] / res["np_s"]
    res["ratio_torch_bf16_fp32"] = res["torch_bf16_s"] / res["torch_s"]
    res["prep_bf16_s"] = median(res["prep"].get("numprop-bf16", []))
    res["infer_s"] = {s: median(v) for s, v in infer.items() if v}
    res["infer_ratio_bf16"] = res["infer_s"].get("numprop-bf16", NAN) / res["infer_s"].get(
        "torch-bf16", NAN
    )


def log_summary(res: dict, log: Log) -> None:
    parts = [f"  median epoch: numprop {res['np_s']:.2f}s"]
    if known(res["torch_s"]):
        parts.append(f", torch {res['torch_s']:.2f}s (ratio {res['ratio_torch']:.2f})")
    parts.append(
        f"; floor {res['floor_s']:.2f}s at {res['gflops_peak']:.0f} GFLOP/s (ratio "
        f"{res['ratio_floor']:.2f}; {res['ratio_floor_noprep']:.2f} without the "
        f"{res['prep_s']:.2f}s of batch conversion)"
    )
    if known(res["sk_s"]):
        parts.append(
            f"; sklearn {res['sk_s']:.2f}s (x{res['speedup_sk']:.2f}; "
            f"x{res['speedup_sk_noprep']:.2f} without batch conversion)"
        )
    log("".join(parts))
    if known(res["np_bf16_s"]):
        log(
            f"  bf16: numprop-bf16 {res['np_bf16_s']:.2f}s, torch-bf16 {res['torch_bf16_s']:.2f}s "
            f"(ratio {res['ratio_bf16_torch']:.2f}); numprop-bf16 / numprop fp32 "
            f"{res['ratio_bf16_fp32']:.2f}; inference numprop-bf16 / torch-bf16 "
            f"{res['infer_ratio_bf16']:.2f}"
        )
    if known(res["work_s"]):
        log(
            f"  numprop's matrix products alone: {res['products_s']:.2f}s "
            f"({res['products_s'] / res['floor_s']:.2f} x floor), its weight updates "
            f"{res['updates_s']:.2f}s; the rest of its epoch {res['np_s'] - res['work_s']:.2f}s"
        )
