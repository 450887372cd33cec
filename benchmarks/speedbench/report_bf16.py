"""The mixed-precision report: ``--precision bf16`` (or bf16 sides in ``--sides``) -> BF16.md.

numprop in bf16 (``model.set_precision(BF16())``: bf16 operands, float32 sums) against
PyTorch's ``torch.autocast("cpu", dtype=torch.bfloat16)``, both beside their float32
selves, from the same alternated run as ``runner.run_config`` makes. Reads the fields of
``runner.summarise_bf16``; a side that did not run shows as "–".
"""

from __future__ import annotations

from pathlib import Path

from speedbench.configs import BENCHMARKS, INFER_BATCH, SETTLE_S, THREADS, describe
from speedbench.machine import speed_machine
from speedbench.report import command_line, data_line, now, num
from speedbench.runner import BF16_CHECK_TOL, known

DEFAULT_OUTPUT = BENCHMARKS / "BF16.md"
# The targets: numprop bf16 <= 0.90 x PyTorch autocast bf16 on these configs,
TORCH_TARGET, TORCH_CONFIGS = (
    0.90,
    ("h1000-b128", "h1000-b512", "h4000-b128", "h4000-b512", "bn3x1024-b512", "adam-h1000-b512"),
)
# numprop bf16 <= 0.5 x numprop fp32 on this one, and inference no slower than PyTorch's.
FP32_TARGET, FP32_CONFIGS = 0.5, ("h1000-b512",)


def epoch_table(results: list[dict]) -> str:
    rows = [
        (
            "| config | numprop fp32 s | numprop bf16 s | PyTorch fp32 s | PyTorch bf16 s "
            "| numprop-bf16 / PyTorch-bf16 | numprop-bf16 / numprop-fp32 "
            "| PyTorch-bf16 / PyTorch-fp32 | numprop-bf16 / PyTorch-fp32 "
            "| numprop-bf16 batch conversion s | loss check bf16 (rel) |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r['name']} ({describe(r['cfg'])}) | {num(r['np_s'])} | {num(r['np_bf16_s'])} "
            f"| {num(r['torch_s'])} | {num(r['torch_bf16_s'])} "
            f"| **{num(r['ratio_bf16_torch'])}** | **{num(r['ratio_bf16_fp32'])}** "
            f"| {num(r['ratio_torch_bf16_fp32'])} | {num(r['np_bf16_s'] / r['torch_s'])} "
            f"| {num(r['prep_bf16_s'])} | {num(r['check_rel_bf16'], '.1e')} |"
        )
    return "\n".join(rows)


def inference_table(results: list[dict]) -> str:
    rows = [
        (
            "| config | numprop fp32 s | numprop bf16 s | PyTorch fp32 s | PyTorch bf16 s "
            "| numprop-bf16 / PyTorch-bf16 (time) | numprop bf16 img/s | PyTorch bf16 img/s |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        t = r["infer_s"]
        cells = [num(t.get(s), ".3f") for s in ("numprop", "numprop-bf16", "torch", "torch-bf16")]
        rows.append(
            f"| {r['name']} | "
            + " | ".join(cells)
            + f" | **{num(r['infer_ratio_bf16'])}** | {num(r['ips'].get('numprop-bf16'), ',.0f')} "
            f"| {num(r['ips'].get('torch-bf16'), ',.0f')} |"
        )
    return "\n".join(rows)


def section(results: list[dict]) -> str:
    return (
        "### Training: one epoch (median)\n\n"
        + epoch_table(results)
        + "\n\n### Inference: the 10,000 test images, eval mode (median)\n\n"
        + inference_table(results)
        + "\n\n### Targets\n\n"
        + targets(results)
    )


def _verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def _target(results, configs, key, limit, text) -> list[str]:
    run = [r for r in results if r["name"] in configs and known(r[key])]
    if not run:
        return [f"- {text}: not measured (none of {', '.join(configs)} ran with both sides)"]
    ok = [r for r in run if r[key] <= limit]
    cells = "; ".join(f"{r['name']} {r[key]:.2f}" for r in run)
    line = f"- {text}: **{_verdict(len(ok) == len(run))}** ({len(ok)} of {len(run)}: {cells})"
    missing = [c for c in configs if c not in {r["name"] for r in run}]
    if missing:
        line += f"; not run: {', '.join(missing)}"
    return [line]


def targets(results: list[dict]) -> str:
    lines = _target(
        results,
        TORCH_CONFIGS,
        "ratio_bf16_torch",
        TORCH_TARGET,
        f"numprop bf16 epoch ≤ {TORCH_TARGET:.2f} × PyTorch autocast-bf16 epoch",
    )
    lines += _target(
        results,
        FP32_CONFIGS,
        "ratio_bf16_fp32",
        FP32_TARGET,
        f"numprop bf16 epoch ≤ {FP32_TARGET} × numprop fp32 epoch",
    )
    lines += _target(
        results,
        [r["name"] for r in results],
        "infer_ratio_bf16",
        1.0,
        "inference in bf16 at least as fast as PyTorch's (numprop time / PyTorch time ≤ 1)",
    )
    checked = [r for r in results if known(r["check_rel_bf16"])]
    if checked:
        bad = [r["name"] for r in checked if r["check_rel_bf16"] > BF16_CHECK_TOL]
        worst = max(r["check_rel_bf16"] for r in checked)
        lines.append(
            f"- same computation in bf16 (loss before and after one identical step within "
            f"{BF16_CHECK_TOL:.0e} relative): "
            + (
                "**MISMATCH in " + ", ".join(bad) + "**"
                if bad
                else f"**OK** in every config (worst {worst:.1e})"
            )
        )
    return "\n".join(lines)


def method(args) -> str:
    return f"""The speed benchmark's method (see [SPEED.md](SPEED.md)), with the sides
`numprop`, `torch` (float32, as in SPEED.md), `numprop-bf16` and `torch-bf16`, each in a
subprocess of its own, {THREADS} threads, alternated epoch by epoch in one run
({args.repeats} timed epochs per side after a warm-up epoch each, medians; a {SETTLE_S} s
pause before every timed call). Same network, initial weights (numprop's, seed 0, copied
into torch), optimizer, batch size and data order on every side; every side converts its
uint8 batches to standardised float32 inside its timed epoch.

- **numprop-bf16**: the numprop side (`Trainer.train_step` on every batch) after
  `model.set_precision(numprop.nn.precision.BF16())`: every Linear's forward and backward
  products read bf16 operands (x, W and dout rounded to nearest even) and sum in float32
  (MKL's `cblas_gemm_bf16bf16f32`, AMX); weights, gradients, optimizer state, loss,
  BatchNorm and Dropout stay float32.
- **torch-bf16**: PyTorch's automatic mixed precision on the CPU, as its docs recommend:
  `with torch.autocast("cpu", dtype=torch.bfloat16): loss = criterion(model(x), y)`, then
  `loss.backward()` and `optimizer.step()` outside autocast (float32 weights and optimizer;
  no grad scaler, which bf16 does not need).
- **Inference**: eval mode over the 10,000 test images in batches of {INFER_BATCH}, median
  of {args.infer_repeats}, alternated: numprop `model.predict` (eval-mode `forward`) in the
  model's precision; PyTorch under `torch.inference_mode()` and the same autocast.
- **Loss check (bf16)**: from the same weights, one step on the same batch, loss before
  and after (dropout off), largest relative difference numprop-bf16 vs torch-bf16. The two
  do not round exactly the same values (autocast also rounds each Linear's output and
  the gradients it passes back to bf16; numprop keeps those float32), so the check's bound
  is {BF16_CHECK_TOL:.0e} rather than float32's 1e-4.

The machine is shared and noisy: compare the ratios, not the seconds."""


def bf16_line(res: dict) -> str:
    info = res.get("numprop-bf16", {}).get("info", {})
    torch = res.get("torch-bf16", {}).get("info", {})
    return (
        f"- bf16: numprop's `bf16_supported()`: {info.get('bf16_supported', '–')} "
        f"({info.get('bf16_reason', '–')}); PyTorch autocast {torch.get('autocast', '–')}, "
        f"oneDNN {torch.get('mkldnn', '–')}"
    )


def write_md(results: list[dict], args, text_log: str, path: Path) -> None:
    """BF16.md (or ``path``); SPEED.md and RESULTS.md are left alone."""
    n_note = (
        ""
        if args.n_train >= 50000
        else f"\n**Note: shortened epochs of {args.n_train:,} images (not the full 50,000).**\n"
    )
    path.write_text(
        f"""# numprop mixed precision (bf16) speed benchmark

Written by `benchmarks/speed.py` (its bf16 sides) on {now()}.

Command (from the repository root): `{command_line()}`
{n_note}
## Machine

{speed_machine(results[0])}
{bf16_line(results[0])}
{data_line(results[0]["numprop"]["random_data"], args.n_train)}

## Method

{method(args)}

## Results

{section(results)}

## Raw log

```
{text_log}
```
"""
    )
