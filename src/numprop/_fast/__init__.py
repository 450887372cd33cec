"""Speed plumbing: BLAS calls NumPy does not expose, and compiled elementwise kernels.

Nothing in here is needed to understand a layer: every operation it speeds
up has its plain NumPy reference in ``numprop.nn.ops`` (or beside its caller),
and both give the same numbers.
"""
