"""The speed benchmark behind ``python benchmarks/speed.py``, in parts.

- ``configs``:  the networks timed, their hyper-parameters, and the run's constants
  (threads, the pause before every timed call).
- ``data``:     CIFAR-10 as uint8 rows, and each side's batch conversion to float32.
- ``sides``:    one class per side (numprop through ``npp.Trainer``, PyTorch,
  scikit-learn, numprop's matrix products alone, numprop and PyTorch in bf16); each
  trains in a subprocess.
- ``compat``:   the few names that moved in numprop's redesign, looked up in either place,
  so the same sides run on an older commit too.
- ``worker``:   the subprocess protocol (JSON lines): the worker loop and the parent's handle.
- ``runner``:   the parent's loop, which alternates the sides epoch by epoch, and the medians.
- ``report``:   tables, targets and SPEED.md / RESULTS.md of the benchmark.
- ``report_bf16``: ``--precision bf16`` (the sides numprop-bf16 and torch-bf16): its
  tables, targets and BF16.md.
- ``compare``:  another commit's numprop against this tree's, alternated in one run.
- ``machine``:  what the report says about the machine and the libraries.
- ``profile``:  ``--profile``: where one side's epoch goes, phase by phase.
- ``cli``:      the command line.

The package is imported from ``benchmarks/`` (``speed.py`` sits next to it), never
from ``src/``: a worker must be able to import another commit's numprop.
"""
