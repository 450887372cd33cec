"""bf16 matrix products on the CPU's matrix units (MKL) against float32 ones, bf16
conversions, and MKL's threads beside OpenBLAS's.

Three measurements:

1. GFLOP/s of a Linear layer's three products, forward ``X (B, 3072) @ W (3072, H)``,
   input gradient ``dY (B, H) @ W.T``, weight gradient ``X.T @ dY`` accumulated
   (beta = 1), for B in {128, 512} and H in {1000, 4000}, on: OpenBLAS float32
   (numprop's ``blas.gemm``, what NumPy's matmul calls), MKL float32 and MKL bf16
   (``numprop._fast.mkl``, "pool" threading: sequential MKL calls on OpenBLAS's
   threads), MKL bf16 on one thread, PyTorch float32 and bf16 matmul (2 threads).
   In one process, the sides alternate (a warm-up call, then timed calls, the
   order rotating every round); medians. MKL bf16 with MKL's own threads
   (libgomp, libiomp5) comes from child processes: MKL fixes its threading
   layer once per process.
2. Thread pools: in a child process per MKL threading (and wait policy), the
   runtimes loaded (threadpoolctl), and the time of a bf16 product, of
   elementwise work on OpenBLAS's threads (numprop's compiled ReLU and bf16
   conversion) and of an OpenBLAS sgemm, alone and alternating. Alternating
   slower than the sum of the two alone means pools fighting over the cores.
3. bf16 conversions: GB/s (bytes read + written) of numprop's compiled twin,
   its NumPy reference and PyTorch's ``copy_`` into a bf16 tensor (what
   ``.to(torch.bfloat16)`` does, minus the allocation), and whether the bits
   agree (``--exhaustive``: all 2**32 float32 inputs).

    python benchmarks/bf16_gemm.py                        # print the tables
    python benchmarks/bf16_gemm.py --exhaustive --write   # and write BF16_GEMM.md

Needs the ``mkl`` wheel (``pip install mkl``), torch and threadpoolctl (the
``bench`` extra). The other processes' CPU use during the run is measured and
written too: on a shared machine, rerun when it is high.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from numprop._fast import bf16, blas, kernels, mkl

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "BF16_GEMM.md"
D = 3072  # CIFAR-10's input width: the first Linear layer of the speed benchmark's MLPs
BATCHES, WIDTHS = (128, 512), (1000, 4000)
THREADS = 2

# Child processes for the thread-pool study: (label, MKL threading, extra environment).
# The environment variables are the OpenMP runtimes' own wait policies, read when
# they load; numprop itself reads no environment outside numprop.config.
POOL_CONFIGS = [
    ("pool", "pool", {}),
    ("sequential", "sequential", {}),
    ("gnu", "gnu", {}),
    ("gnu, OMP_WAIT_POLICY=PASSIVE", "gnu", {"OMP_WAIT_POLICY": "PASSIVE"}),
    ("intel", "intel", {}),
    ("intel, KMP_BLOCKTIME=0", "intel", {"KMP_BLOCKTIME": "0"}),
    ("tbb", "tbb", {}),
]


# -- timing ------------------------------------------------------------------------------


def alternate(
    sides: dict[str, Callable[[], object]], rounds: int, calls: int, pause: float = 0.25
) -> dict[str, np.ndarray]:
    """Seconds per call of each side, (rounds, calls): per round, each side (in an
    order rotating by one every round) gets a pause, a warm-up call, then ``calls``
    timed ones.

    The pause: BLAS and OpenMP workers spin for up to ~0.2 s after their last
    job, and would take a core from the next side (what the thread-pool study
    measures on purpose, and the other tables must not).
    """
    times = {name: np.zeros((rounds, calls)) for name in sides}
    names = list(sides)
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            run = sides[name]
            time.sleep(pause)
            run()
            for i in range(calls):
                start = time.perf_counter()
                run()
                times[name][r, i] = time.perf_counter() - start
    return times


def median(t: np.ndarray) -> float:
    """Median seconds per call over every round."""
    return float(np.median(t))


def best(t: np.ndarray) -> float:
    """The fastest round's median: this machine's vCPUs run AMX code at full speed
    or at about half for seconds at a time (the host's doing), and the best round
    estimates the speed without the host's other guests."""
    return float(np.min(np.median(t, axis=1)))


class OtherLoad:
    """CPU time other processes used while the block ran, as a share of all cores.

    /proc/stat's busy time minus our own (and our children's) CPU time; the
    hypervisor's steal is reported apart.
    """

    def _read(self):
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
        user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
        own = os.times()
        mine = own.user + own.system + own.children_user + own.children_system
        return (user + nice + system + irq + softirq) / hz, steal / hz, mine, time.perf_counter()

    def __enter__(self):
        self.start = self._read()
        return self

    def __exit__(self, *exc):
        busy0, steal0, mine0, t0 = self.start
        busy1, steal1, mine1, t1 = self._read()
        capacity = (t1 - t0) * (os.cpu_count() or 1)
        self.others = max(0.0, (busy1 - busy0) - (mine1 - mine0)) / capacity
        self.steal = (steal1 - steal0) / capacity
        self.seconds = t1 - t0

    def __str__(self):
        return (
            f"other processes {100 * self.others:.0f}% of the CPUs, steal "
            f"{100 * self.steal:.0f}%, over {self.seconds:.0f} s"
        )


def busy(seconds: float) -> float:
    """Share of all CPUs busy (with anyone's work) over the next ``seconds``."""

    def read():
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return sum(fields[:8]) - fields[3] - fields[4], sum(fields[:8])

    busy0, total0 = read()
    time.sleep(seconds)
    busy1, total1 = read()
    return (busy1 - busy0) / max(1, total1 - total0)


_waited = {"seconds": 0.0, "gave_up": 0, "retries": 0}


def wait_for_quiet(limit: float = 600.0, threshold: float = 0.1) -> None:
    """Wait (up to ``limit`` s) until the other processes leave the CPUs idle (< 10% busy
    over a second): on a shared machine, measuring beside another job measures the job."""
    start = time.perf_counter()
    while busy(1.0) >= threshold:
        if time.perf_counter() - start > limit:
            _waited["gave_up"] += 1
            break
    _waited["seconds"] += time.perf_counter() - start


def quietly(measure: Callable[[], object], tries: int = 8, threshold: float = 0.1):
    """(``measure()``, its OtherLoad), measured while the other processes leave the CPUs
    alone: wait for quiet, measure, and measure again (up to ``tries`` times in all)
    when they took more than ``threshold`` of the CPUs meanwhile."""
    for attempt in range(tries):
        wait_for_quiet()
        with OtherLoad() as load:
            result = measure()
        if load.others < threshold:
            break
        if attempt + 1 < tries:
            _waited["retries"] += 1
    return result, load


# -- 1. the products -----------------------------------------------------------------------


def linear_operands(batch: int, width: int, seed: int = 0) -> dict:
    """float32 and bf16 copies of a Linear layer's X (B, D), W (D, H), dY (B, H)."""
    rng = np.random.default_rng(seed)
    f32 = {
        "x": rng.standard_normal((batch, D), dtype=np.float32),
        "w": rng.standard_normal((D, width), dtype=np.float32) * np.float32(0.02),
        "dy": rng.standard_normal((batch, width), dtype=np.float32),
    }
    return {"f32": f32, "bf16": {k: bf16.to_bf16(v) for k, v in f32.items()}}


# (name, a, b, out shape, beta) of each product, from the operands' names.
PRODUCTS = [
    ("forward X @ W", lambda o: (o["x"], o["w"]), 0.0),
    ("input grad dY @ W.T", lambda o: (o["dy"], o["w"].T), 0.0),
    ("weight grad X.T @ dY, beta 1", lambda o: (o["x"].T, o["dy"]), 1.0),
]


def product_sides(batch: int, width: int, torch) -> dict[str, dict[str, Callable]]:
    """product name -> side name -> a call computing it, for one (B, H)."""
    ops = linear_operands(batch, width)
    lib = mkl.library()
    sides: dict[str, dict[str, Callable]] = {}
    for name, pick, beta in PRODUCTS:
        a32, b32 = pick(ops["f32"])
        a16, b16 = pick(ops["bf16"])
        out = np.zeros((a32.shape[0], b32.shape[1]), np.float32)
        s = {
            "OpenBLAS f32": lambda a=a32, b=b32, o=out, be=beta: blas.gemm(a, b, o, beta=be),
            "MKL f32": lambda a=a32, b=b32, o=out, be=beta: mkl.gemm_f32(a, b, o, beta=be),
            "MKL bf16": lambda a=a16, b=b16, o=out, be=beta: mkl.gemm_bf16(a, b, o, beta=be),
            "MKL bf16, 1 thread": lambda a=a16, b=b16, o=out, be=beta: mkl._call(
                lib, "bf16", a, b, o, 1.0, be
            ),
        }
        if torch is not None:
            for label, dtype in (("torch f32", torch.float32), ("torch bf16", torch.bfloat16)):
                ta = torch.from_numpy(
                    np.ascontiguousarray(a32.T if a32.flags.f_contiguous else a32)
                )
                tb = torch.from_numpy(
                    np.ascontiguousarray(b32.T if b32.flags.f_contiguous else b32)
                )
                ta = (ta.T if a32.flags.f_contiguous else ta).to(dtype)
                tb = (tb.T if b32.flags.f_contiguous else tb).to(dtype)
                tout = torch.zeros(out.shape, dtype=dtype)
                if beta:
                    s[label] = lambda a=ta, b=tb, o=tout: o.addmm_(a, b)
                else:
                    s[label] = lambda a=ta, b=tb, o=tout: torch.mm(a, b, out=o)
        sides[name] = s
    return sides


def measure_products(torch, rounds: int, calls: int) -> list[dict]:
    rows = []
    for batch in BATCHES:
        for width in WIDTHS:
            for name, sides in product_sides(batch, width, torch).items():
                m, k = (batch, D) if "forward" in name else (batch, width)
                if "weight" in name:
                    m, k = D, batch
                n = width if "input" not in name else D
                seconds, load = quietly(lambda sides=sides: alternate(sides, rounds, calls))
                flop = 2 * m * n * k / 1e9
                gflops = {side: (flop / median(t), flop / best(t)) for side, t in seconds.items()}
                rows.append(
                    {"product": name, "B": batch, "H": width, "load": load.others, **gflops}
                )
                values = " ".join(f"{a:5.0f}/{b:5.0f}" for a, b in gflops.values())
                print(f"{name:30s} B={batch:4d} H={width:5d} {values}  ({load})")
    return rows


# -- 2. thread pools (child processes) ---------------------------------------------------


def child(threading: str, rounds: int, calls: int) -> None:
    """One MKL threading, measured alone and beside OpenBLAS's pool; JSON on stdout."""
    import threadpoolctl

    mkl.configure(threading=threading)
    result: dict = {"describe": mkl.describe(), "why_not": mkl.why_not(), "gemm": {}}
    if not mkl.available():
        print(json.dumps(result))
        return
    # bf16 products alone, every shape
    for batch in BATCHES:
        for width in WIDTHS:
            ops = linear_operands(batch, width)["bf16"]
            for name, pick, beta in PRODUCTS:
                a, b = pick(ops)
                out = np.zeros((a.shape[0], b.shape[1]), np.float32)

                def run(a=a, b=b, out=out, beta=beta):
                    mkl.gemm_bf16(a, b, out, beta=beta)

                t = alternate({"g": run}, rounds, calls, pause=0.0)["g"]
                flop = 2 * a.shape[0] * a.shape[1] * b.shape[1] / 1e9
                result["gemm"][f"{name}|{batch}|{width}"] = (flop / median(t), flop / best(t))
    # alternating with OpenBLAS-threaded work, at the forward shape B = 512, H = 1000
    rng = np.random.default_rng(0)
    ops = linear_operands(512, 1000)
    x32, xb, wb = ops["f32"]["x"], ops["bf16"]["x"], ops["bf16"]["w"]
    y = np.zeros((512, 1000), np.float32)
    act = rng.standard_normal((512, 4096), dtype=np.float32)  # 8 MB: ReLU on the pool
    act_out = np.empty_like(act)
    s_a = rng.standard_normal((256, 1000), dtype=np.float32)
    s_b = rng.standard_normal((1000, 1000), dtype=np.float32)
    s_out = np.empty((256, 1000), np.float32)

    def gemm():
        mkl.gemm_bf16(xb, wb, y)

    def elementwise():  # numprop's own elementwise work on OpenBLAS's threads
        assert kernels.relu(act, act_out)
        bf16.to_bf16(x32, xb)

    def sgemm():
        blas.gemm(s_a, s_b, s_out)

    def gemm_then_elementwise():
        gemm()
        elementwise()

    def gemm_then_sgemm():
        gemm()
        sgemm()

    times = alternate(
        {
            "gemm": gemm,
            "elementwise": elementwise,
            "sgemm": sgemm,
            "gemm+elementwise": gemm_then_elementwise,
            "gemm+sgemm": gemm_then_sgemm,
        },
        rounds,
        calls * 2,
    )
    result["alone_vs_alternating"] = {mode: median(t) for mode, t in times.items()}
    # Slowdown of alternating over the sum alone, per round (adjacent in time, so
    # mostly in one of the host's speed regimes), then the median over rounds.
    per_round = {mode: np.median(t, axis=1) for mode, t in times.items()}
    for other in ("elementwise", "sgemm"):
        ratio = per_round[f"gemm+{other}"] / (per_round["gemm"] + per_round[other])
        result[f"slowdown+{other}"] = float(np.median(ratio)) - 1
    result["pools"] = [
        f"{p['internal_api']} {p['num_threads']} threads ({os.path.basename(p['filepath'])})"
        for p in threadpoolctl.threadpool_info()
    ]
    result["describe"] = mkl.describe()
    print(json.dumps(result))


def measure_pools(rounds: int, calls: int) -> list[dict]:
    rows = []
    for label, threading, extra in POOL_CONFIGS:
        env = {**os.environ, **extra}
        command = [sys.executable, __file__, "--child", threading]
        command += ["--rounds", str(rounds), "--calls", str(calls)]
        done, load = quietly(
            lambda command=command, env=env: subprocess.run(
                command, env=env, capture_output=True, text=True
            )
        )
        if done.returncode != 0:
            rows.append({"label": label, "error": done.stderr.strip()[-300:]})
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result.update(label=label, load=load.others)
        rows.append(result)
        t = result.get("alone_vs_alternating", {})
        print(label, {k: round(v * 1e3, 2) for k, v in t.items()}, load)
    return rows


# -- 3. conversions ------------------------------------------------------------------------


def measure_conversions(torch, rounds: int, calls: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for label, shape in (("activations X, B=512", (512, D)), ("weights W, H=4000", (D, 4000))):
        x = rng.standard_normal(shape, dtype=np.float32)
        xb = np.empty(shape, np.uint16)
        back = np.empty(shape, np.float32)
        tx, tb = torch.from_numpy(x), torch.empty(shape, dtype=torch.bfloat16)
        tback = torch.from_numpy(back)
        bf16.to_bf16(x, xb)
        down = {
            "numba (OpenBLAS's threads)": lambda x=x, xb=xb: bf16.to_bf16_compiled(x, xb),
            "NumPy reference": lambda x=x, xb=xb: bf16.to_bf16_numpy(x, xb),
            "torch copy_": lambda tb=tb, tx=tx: tb.copy_(tx),
        }
        up = {
            "numba (OpenBLAS's threads)": lambda xb=xb, back=back: bf16.to_float32_compiled(
                xb, back
            ),
            "NumPy reference": lambda xb=xb, back=back: bf16.to_float32_numpy(xb, back),
            "torch copy_": lambda tback=tback, tb=tb: tback.copy_(tb),
        }
        for direction, sides in (("float32 -> bf16", down), ("bf16 -> float32", up)):
            seconds = alternate(sides, rounds, calls, pause=0.05)
            rate = {side: x.size * 6 / median(t) / 1e9 for side, t in seconds.items()}
            rows.append({"what": f"{label} {shape}", "direction": direction, **rate})
            print(label, direction, {k: round(v, 1) for k, v in rate.items()})
    return rows


def torch_bits(torch, x: np.ndarray) -> np.ndarray:
    return torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def check_bits(torch, exhaustive: bool) -> list[str]:
    """numba == NumPy reference, and both against torch (NaNs: both NaN), on random bits
    or on every float32; bf16 -> float32 on every bf16 against torch."""
    lines = []
    chunk = 1 << 24
    if exhaustive:
        starts, what = range(0, 1 << 32, chunk), "all 2**32 float32 bit patterns"
    else:
        starts, what = [None] * 4, f"{4 * chunk:,} random float32 bit patterns"
    rng = np.random.default_rng(0)
    numba_diff = torch_diff = nan_count = 0
    torch_nans: set[int] = set()
    ref, fast = np.empty(chunk, np.uint16), np.empty(chunk, np.uint16)
    started = time.perf_counter()
    for start in starts:
        if start is None:
            bits = rng.integers(0, 1 << 32, chunk, dtype=np.uint32)
        else:
            bits = np.arange(start, start + chunk, dtype=np.uint32)
        x = bits.view(np.float32)
        bf16.to_bf16_numpy(x, ref)
        assert bf16.to_bf16_compiled(x, fast)
        numba_diff += int(np.count_nonzero(ref != fast))
        theirs = torch_bits(torch, x)
        nan = np.isnan(x)
        nan_count += int(nan.sum())
        torch_diff += int(np.count_nonzero((ref != theirs) & ~nan))
        torch_nan_out = theirs[nan]
        torch_diff += int(np.count_nonzero((torch_nan_out & 0x7FFF) <= 0x7F80))  # NaN must stay NaN
        torch_nans.update(int(v) for v in np.unique(torch_nan_out)[:8])
    lines.append(
        f"float32 -> bf16 on {what} ({time.perf_counter() - started:.0f} s): "
        f"numba vs NumPy reference: {numba_diff} different; "
        f"torch `.to(torch.bfloat16)` vs reference: {torch_diff} different among non-NaNs "
        f"(and NaNs not NaN); the {nan_count:,} NaNs: ours keep sign and payload with the "
        f"quiet bit set, torch gives {', '.join(hex(v) for v in sorted(torch_nans)[:6])}"
    )
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    ours = bf16.to_float32(every)
    theirs = torch.from_numpy(every.view(np.int16)).view(torch.bfloat16).float().numpy()
    diff = int(np.count_nonzero(ours.view(np.uint32) != theirs.view(np.uint32)))
    lines.append(f"bf16 -> float32 on all 65,536 bf16 patterns: {diff} different from torch")
    return lines


# -- the report ------------------------------------------------------------------------------


def machine() -> list[str]:
    model, flags = "?", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    wanted = ["avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]
    versions = []
    for package in ("numpy", "numba", "mkl", "intel-openmp", "tbb", "torch", "threadpoolctl"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} (none)")
    return [
        f"- CPU: {model}, {os.cpu_count()} CPUs, "
        f"flags {' '.join(f for f in wanted if f in flags)}; {platform.platform()}",
        f"- Python {platform.python_version()}; {', '.join(versions)}",
        f"- {mkl.describe()}",
        f"- OpenBLAS: {blas.library().path if blas.library() else 'none'}, "
        f"{blas.library().threads() if blas.library() else 0} threads",
    ]


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def report(args, products, pools, conversions, bits) -> str:
    conversions, conversion_load = conversions
    sides = [k for k in products[0] if k not in ("product", "B", "H", "load")]
    by_label = {p["label"]: p for p in pools}
    layer_columns = [c for c in ("gnu", "intel") if by_label.get(c, {}).get("gemm")]
    header = ["product", "B", "H", *sides, *(f"MKL bf16, {c} threads †" for c in layer_columns)]
    header.append("others' CPU")
    rows = []
    for r in products:
        key = f"{r['product']}|{r['B']}|{r['H']}"
        cells = [f"{r[s][0]:.0f} / {r[s][1]:.0f}" for s in sides]
        cells += [
            f"{by_label[c]['gemm'][key][0]:.0f} / {by_label[c]['gemm'][key][1]:.0f}"
            for c in layer_columns
        ]
        rows.append([r["product"], str(r["B"]), str(r["H"]), *cells, f"{100 * r['load']:.0f}%"])
    gemm_table = table(header, rows)

    pool_rows = []
    for p in pools:
        if "error" in p or "alone_vs_alternating" not in p:
            pool_rows.append([p["label"], p.get("error") or p.get("why_not") or "?", *[""] * 6])
            continue
        t = {k: v * 1e3 for k, v in p["alone_vs_alternating"].items()}
        pool_rows.append(
            [
                p["label"],
                "; ".join(p["pools"]),
                f"{t['gemm']:.2f}",
                f"{t['elementwise']:.2f}",
                f"{t['gemm+elementwise']:.2f} ({100 * p['slowdown+elementwise']:+.0f}%)",
                f"{t['sgemm']:.2f}",
                f"{t['gemm+sgemm']:.2f} ({100 * p['slowdown+sgemm']:+.0f}%)",
                f"{100 * p['load']:.0f}%",
            ]
        )
    pool_table = table(
        [
            "MKL threading",
            "thread pools in the process (threadpoolctl)",
            "bf16 GEMM alone, ms",
            "elementwise alone, ms",
            "GEMM then elementwise, ms (vs sum)",
            "OpenBLAS sgemm alone, ms",
            "GEMM then sgemm, ms (vs sum)",
            "others' CPU",
        ],
        pool_rows,
    )
    conv_sides = [k for k in conversions[0] if k not in ("what", "direction")]
    conv_table = table(
        ["array", "direction", *(f"{s}, GB/s" for s in conv_sides)],
        [[c["what"], c["direction"], *(f"{c[s]:.1f}" for s in conv_sides)] for c in conversions],
    )
    command = "python benchmarks/bf16_gemm.py " + " ".join(sys.argv[1:])
    return f"""Written by `benchmarks/bf16_gemm.py` on {datetime.datetime.now():%Y-%m-%d %H:%M}.

Command (from the repository root): `{command.strip()}`

### Machine

{chr(10).join(machine())}
- Background: a shared machine. Each measurement below waited for the other
  processes to leave the CPUs idle (under 10% busy for a second), and was
  repeated when they took over 10% of the CPUs while it ran (up to 8 tries):
  {_waited["seconds"]:.0f} s waited in all, {_waited["retries"]} repeats,
  {_waited["gave_up"]} waits given up after 10 minutes. The "others' CPU"
  columns give their share during each kept measurement; the conversions: {conversion_load}.

### Products, GFLOP/s (2·M·N·K / time): median / best round

Each cell: GFLOP/s at the median time over all calls / at the fastest round's
median. The host runs this VM's 2 vCPUs at one of two speeds for seconds at a
time (one thread's bf16 GEMM: about 700 or about 330 GFLOP/s, whatever the
process does); the median mixes both, the best round is the fast one.
{args.rounds} rounds × {args.calls} timed calls per side (after a 0.25 s pause, so that
the previous side's spinning workers are asleep, and a warm-up call), sides
alternating in one process, order rotating per round; numprop's sides
are MKL with "pool" threading (sequential MKL calls on OpenBLAS's 2 threads),
PyTorch has `torch.set_num_threads({THREADS})`; torch bf16 writes a bf16 result
(`torch.mm(out=)`, `addmm_`), the others float32.
† MKL's own threads (libgomp / libiomp5, 2 threads), each in a child process, alone.

{gemm_table}

### Thread pools: MKL beside OpenBLAS's pool

One child process per MKL threading. "elementwise" is numprop's compiled ReLU
on a (512, 4096) array and the bf16 conversion of X (512, 3072), both on
OpenBLAS's threads (`parallel_for_kernel`); "sgemm" is an OpenBLAS float32
product (256, 1000) @ (1000, 1000); the bf16 GEMM is the forward product at
B = 512, H = 1000. Times: medians of {args.rounds} rounds × {2 * args.calls} calls, the five
modes alternating (with a 0.25 s pause before each).
The percentages: per round, the "GEMM then ..." time over the sum of the two
alone, minus one; the median over rounds. Above zero: pools in each other's way.

{pool_table}

### bf16 conversions, GB/s (4 bytes read + 2 written per element, or back)

{conv_table}

{chr(10).join("- " + line for line in bits)}
"""


def write(section: str) -> Path:
    sys.path.insert(0, str(HERE))
    from results_md import update_section

    if not OUTPUT.exists():
        OUTPUT.write_text(
            "# bf16 matrix products on the CPU (MKL) against float32\n\n"
            "The measured part is written by `benchmarks/bf16_gemm.py --write`; "
            "the conclusions below it are written by hand.\n"
        )
    return update_section("bf16_gemm.py", section, path=OUTPUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=3, help="timed calls per side and round")
    parser.add_argument("--exhaustive", action="store_true", help="convert all 2**32 float32s")
    parser.add_argument("--write", action="store_true", help="write BF16_GEMM.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.rounds, args.calls)
        return
    import torch

    torch.set_num_threads(THREADS)
    if not mkl.available():
        sys.exit(f"MKL is needed: {mkl.why_not()}")
    products = measure_products(torch, args.rounds, args.calls)
    pools = measure_pools(args.rounds, args.calls)
    conversions, load = quietly(lambda: measure_conversions(torch, args.rounds, args.calls * 2))
    bits = check_bits(torch, args.exhaustive)
    for line in bits:
        print(line)
    section = report(args, products, pools, (conversions, load), bits)
    if args.write:
        print("wrote", write(section))
    else:
        print(section)


if __name__ == "__main__":
    main()
