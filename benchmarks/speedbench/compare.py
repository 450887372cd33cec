"""Another commit's numprop against this tree's, alternated in one run (``--compare-with REV``).

The other commit's ``src/`` is extracted with ``git archive REV src`` into a folder
of the temporary directory (nothing in the repository changes: not its index, not
its working tree), and the same numprop side runs on it: its worker's PYTHONPATH
starts with that ``src/``, so ``import numprop`` gets the old library. The side
only uses names that both layouts have (``speedbench.compat``). The folder is kept
and reused by later runs, with the numba cache that the first run writes there;
either way the warm-up epoch absorbs the compilation.

Sides: "numprop" (this tree), "old" (REV) and, if selected, "torch"; each
configuration alternates them epoch by epoch like the speed benchmark does.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from speedbench.configs import REPO, describe
from speedbench.machine import cpu_line, env_line, git, numprop_line, tree_state, versions_line
from speedbench.report import command_line, data_line, now, num
from speedbench.runner import (
    Log,
    alternate,
    check_rel,
    epoch_call,
    known,
    median,
    start_workers,
    stop_workers,
)

SIDES = ("numprop", "old", "torch")  # "numprop" is this tree's, "old" the other commit's
TOLERANCE = 0.03  # "within 3%": |new / old - 1| <= TOLERANCE


class CompareError(RuntimeError):
    pass


def resolve(rev: str) -> str:
    """The full commit id of ``rev``."""
    sha = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if not sha:
        raise CompareError(f"{rev!r} is not a commit of {REPO}")
    return sha


def extract_src(sha: str) -> Path:
    """The ``src/`` folder of commit ``sha``, extracted once under the temporary directory."""
    root = Path(tempfile.gettempdir()) / f"numprop-{sha[:12]}"
    marker = root / ".extracted"
    if marker.exists() and marker.read_text() == sha:
        return root / "src"
    partial = Path(tempfile.mkdtemp(prefix=f"numprop-{sha[:12]}.", dir=root.parent))
    archive = subprocess.Popen(
        ["git", "-C", str(REPO), "archive", "--format=tar", sha, "src"], stdout=subprocess.PIPE
    )
    try:
        with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # 3.11.4+
            tar.extractall(partial, **safe)
    finally:
        archive.stdout.close()
        failed = archive.wait() != 0
    if failed or not (partial / "src" / "numprop" / "__init__.py").exists():
        shutil.rmtree(partial, ignore_errors=True)
        raise CompareError(f"git archive {sha} src gave no src/numprop")
    (partial / ".extracted").write_text(sha)
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    return root / "src"


def check_sources(ready: dict, sources: dict[str, Path]) -> None:
    """Fail unless every numprop worker imported numprop from the src/ it was given."""
    for label, src in sources.items():
        where = Path(ready[label]["info"]["numprop_file"]).resolve()
        if src.resolve() not in where.parents:
            raise CompareError(f"the {label} worker imported numprop from {where}, not {src}")


def run_config(name: str, cfg: dict, args, log: Log, old_src: Path) -> dict:
    """One configuration: new and old numprop (and PyTorch) alternated; medians and ratios."""
    timed = list(args.sides)
    kinds = {s: "torch" if s == "torch" else "numprop" for s in timed}
    log(f"\n== {name}: {describe(cfg)}")
    sources = {"numprop": REPO / "src", "old": old_src}
    workers, ready = start_workers(kinds, cfg, args, sources)
    try:
        check_sources(ready, sources)
        res = {"name": name, "cfg": cfg, "ready": ready, "check": {}}
        log_checks(res, log)
        for w in workers.values():  # warm-up: also numba's compilation on a fresh tree
            w.call(op="epoch", k=-1)
        calls = {s: epoch_call(workers[s]) for s in timed}
        replies = alternate(calls, args.repeats, log)
        for w in workers.values():
            w.close()
    finally:
        stop_workers(workers)
    res["epochs"] = {s: [rep["seconds"] for rep in reps] for s, reps in replies.items()}
    summarise(res)
    log(
        f"  median epoch: new {res['new_s']:.2f}s, old {res['old_s']:.2f}s; new / old: median "
        f"of the repeats' ratios {res['ratio']:.3f} (quartiles {res['ratio_q'][0]:.3f}-"
        f"{res['ratio_q'][1]:.3f}), ratio of medians {res['ratio_of_medians']:.3f} "
        f"({within_text(res['ratio'])})"
        + (
            f"; torch {res['torch_s']:.2f}s: new / torch {res['new_torch']:.2f}, old / torch "
            f"{res['old_torch']:.2f}"
            if known(res["torch_s"])
            else ""
        )
    )
    return res


def log_checks(res: dict, log: Log) -> None:
    """Loss before / after one identical step on every side, and how far apart they are."""
    ready = res["ready"]
    checks = {s: ready[s]["check"] for s in ready}
    res["check"]["old"] = check_rel(checks["numprop"], checks["old"])
    res["check"]["torch"] = check_rel(checks["numprop"], checks.get("torch"))
    text = ", ".join(f"{s} {c[0]:.6f} / {c[1]:.6f}" for s, c in checks.items())
    diffs = f"new vs old max rel diff {res['check']['old']:.1e}"
    if known(res["check"]["torch"]):
        diffs += f", new vs torch {res['check']['torch']:.1e}"
    bad = max(v for v in res["check"].values() if known(v)) > 1e-4
    log(
        f"  check (loss before / after one identical step, dropout off): {text}; {diffs} "
        + ("!!! MISMATCH: the sides do NOT compute the same thing !!!" if bad else "OK")
    )


def summarise(res: dict) -> None:
    """Medians, and new / old as the median of the repeats' own ratios.

    The two sides of one repeat run back to back, so their ratio cancels the
    machine's slow drifts (seen here: the same side's epoch moving by 20% from
    one repeat to the next); the median of those ratios is the headline, with
    their quartiles beside it, and the ratio of the medians is shown too.
    """
    epochs = res["epochs"]
    res["new_s"], res["old_s"] = median(epochs["numprop"]), median(epochs["old"])
    paired = sorted(n / o for n, o in zip(epochs["numprop"], epochs["old"]))
    res["ratio"] = median(paired)
    res["ratio_q"] = (paired[len(paired) // 4], paired[(3 * len(paired)) // 4])
    res["ratio_of_medians"] = res["new_s"] / res["old_s"]
    res["torch_s"] = median(epochs.get("torch", []))
    res["new_torch"] = res["new_s"] / res["torch_s"]
    res["old_torch"] = res["old_s"] / res["torch_s"]


def within_text(ratio: float) -> str:
    if abs(ratio - 1) <= TOLERANCE:
        return "yes"
    return "no, new slower" if ratio > 1 else "no, new faster"


# --- report --------------------------------------------------------------------------


def ratio_table(results: list[dict]) -> str:
    rows = [
        "| config | new s | old s | new / old (median of repeats' ratios) | quartiles "
        "| ratio of medians | within 3% | loss check new vs old (rel) |",
        "|---|---:|---:|---:|---|---:|---|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r['name']} ({describe(r['cfg'])}) | {r['new_s']:.2f} | {r['old_s']:.2f} "
            f"| **{r['ratio']:.3f}** | {r['ratio_q'][0]:.3f}-{r['ratio_q'][1]:.3f} "
            f"| {r['ratio_of_medians']:.3f} | {within_text(r['ratio'])} "
            f"| {r['check']['old']:.1e} |"
        )
    return "\n".join(rows)


def torch_table(results: list[dict]) -> str:
    rows = [
        "| config | PyTorch s | new numprop s | new / PyTorch | old numprop s | old / PyTorch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r['name']} | {num(r['torch_s'])} | {r['new_s']:.2f} "
            f"| **{num(r['new_torch'])}** | {r['old_s']:.2f} | **{num(r['old_torch'])}** |"
        )
    return "\n".join(rows)


def verdict(results: list[dict]) -> str:
    worst = max(results, key=lambda r: abs(r["ratio"] - 1))
    ok = all(abs(r["ratio"] - 1) <= TOLERANCE for r in results)
    slower = [r["name"] for r in results if r["ratio"] > 1 + TOLERANCE]
    text = (
        f"- new within 3% of old in every configuration: **{'YES' if ok else 'NO'}** "
        f"(furthest {worst['name']}: new / old {worst['ratio']:.3f})"
    )
    if slower:
        text += "\n- new more than 3% slower in: **" + ", ".join(slower) + "**"
    return text


def compare_machine(results: list[dict], rev: str, sha: str, old_src: Path) -> str:
    ready = results[0]["ready"]
    new, old = ready["numprop"]["info"], ready["old"]["info"]
    lines = [
        cpu_line(),
        versions_line(ready),
        f"- new: numprop {new['numprop_version']} from this tree's src/ ({tree_state()})",
        numprop_line(ready["numprop"], "new"),
        (
            f"- old: numprop {old['numprop_version']} from `{rev}` (commit {sha[:12]}), "
            f"`git archive` into {old_src}"
        ),
        numprop_line(ready["old"], "old"),
        env_line(),
    ]
    return "\n".join(lines)


def markdown(results: list[dict], args, text_log: str, rev: str, sha: str, old_src: Path) -> str:
    with_torch = any(known(r["torch_s"]) for r in results)
    torch_part = (
        f"\n\nAgainst PyTorch, timed in the same alternation:\n\n{torch_table(results)}"
        if with_torch
        else ""
    )
    return f"""# numprop before and after: this tree against `{rev}`

Written by `benchmarks/speed.py` on {now()}.

Command (from the repository root): `{command_line()}`

## Machine

{compare_machine(results, rev, sha, old_src)}
{data_line(results[0]["ready"]["numprop"]["random_data"], args.n_train)}

## Method

The same benchmark code trains numprop from this tree ("new") and from commit
`{rev}` ("old", its src/ extracted with `git archive`, imported through
PYTHONPATH){" and PyTorch" if with_torch else ""}, each in its own subprocess, with the same
network, initial weights, optimizer, batches and data order, and times one epoch of
`Trainer.train_step(x, y)` calls per repeat (the batch conversion with numprop's
`affine_rows` included). After a warm-up epoch each (numba compiles a fresh tree's
kernels then), {args.repeats} timed epoch(s) per side alternate (listed order on odd
repeats, reversed on even ones), each after a 0.25 s pause; the numbers are medians.
"within 3%": |new / old - 1| ≤ 0.03. The loss check is one identical step from the
initial weights (dropout off): the two numprops must compute the same thing.
Epochs marked `*` in the raw log ran with under 1.5 cores busy: another process had
the CPU, and the ratios of that configuration are doubtful.

## Results

{ratio_table(results)}

{verdict(results)}{torch_part}

## Raw log

```
{text_log}
```
"""


def prepare(rev: str, log: Log) -> tuple[str, Path]:
    """The commit id of ``rev`` and its extracted src/."""
    sha = resolve(rev)
    old_src = extract_src(sha)
    log(f"old numprop: {rev} = {sha[:12]}, src/ in {old_src}")
    return sha, old_src
