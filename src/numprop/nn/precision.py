"""What the matrix products compute in: float32 (the default) or bf16 operands with float32 sums.

A ``Precision`` turns an array into the operand the products read:
``FP32`` passes it through; ``BF16`` rounds it to bf16 (the operands of
forward and backward products alike), so the products run on the CPU's bf16
matrix units (AMX, AVX512-BF16) through MKL while every sum stays float32.
The weights themselves, their gradients, the optimizer state, the loss and
the softmax stay float32: bf16 is only how the products see them.

``model.set_precision(BF16())`` switches a model; ``PRECISIONS`` turns the
names "fp32" and "bf16" into objects, and ``resolve("auto")`` picks bf16
only where this machine has the hardware and the library for it.
"""

from __future__ import annotations

import numpy as np

from numprop.nn import ops
from numprop.registry import Registry

__all__ = ["Precision", "FP32", "BF16", "PRECISIONS", "bf16_supported", "resolve", "describe"]


class Precision:
    """The operands of the matrix products: the arrays themselves (float32)."""

    name = "fp32"
    float32_only = False  # True where the operands are derived from float32 bits

    def operand(self, module, key: str, x: np.ndarray) -> np.ndarray:
        """``x`` as the products read it (here: ``x`` itself).

        Parameters
        ----------
        module : Module
            Owns the buffer a converted operand is written into.
        key : str
            Names that buffer among the module's work arrays.
        x : ndarray, float
        """
        return x

    def weight(self, module, param) -> np.ndarray:
        """A Parameter of ``module`` as the products read it: ``operand`` of its data.

        Subclasses may keep the converted copy with the Parameter instead (``BF16``).
        """
        return self.operand(module, "weight_op", param.data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


FP32 = Precision


class BF16(Precision):
    """bf16 operands (rounded to nearest even), float32 sums: the CPU's matrix units."""

    name = "bf16"
    float32_only = True

    def operand(self, module, key: str, x: np.ndarray) -> np.ndarray:
        """``x`` rounded to bf16, as uint16 bits, in a buffer of ``module`` (bits pass as they are)."""
        if x.dtype == np.uint16:  # already bf16: a batch made as bf16 (BatchLoader(bf16=True))
            return x
        return ops.to_bf16(x, out=module._buf(key, x.shape, np.uint16))

    def weight(self, module, param) -> np.ndarray:
        """``param.bf16``, the Parameter's bf16 copy, rounded again only if ``data`` changed.

        The optimizer's update keeps the copy fresh (it writes it in the same
        pass as the weights), so training rounds a weight once per step, not
        once per forward, and inference rounds it once. In eval mode the
        copy comes packed for MKL's product (``ops.pack_bf16``), also once.
        """
        data = param.data
        if param.bf16 is None or param.bf16.shape != data.shape:
            param.bf16 = np.empty(data.shape, np.uint16)
            param.bf16_fresh = False
        if not param.bf16_fresh:
            ops.to_bf16(data, out=param.bf16)
            param.bf16_fresh = True
            param.bf16_packed = None
        if module.training:
            return param.bf16
        # Inference: the weight stays the same call after call, so it is packed
        # for MKL once (until it changes) instead of inside every product.
        if param.bf16_packed is None:
            param.bf16_packed = ops.pack_bf16(param.bf16)
        return param.bf16_packed


PRECISIONS = Registry("precision")
PRECISIONS.add("fp32", FP32)
PRECISIONS.add("bf16", BF16)


def bf16_supported() -> tuple[bool, str]:
    """Whether bf16 products run fast here, and why (not): the CPU and the library.

    Returns
    -------
    ok : bool
        True when the CPU has AMX-BF16 or AVX512-BF16 and MKL is installed.
    reason : str
        What was found, for ``numprop info`` and the training banner.
    """
    from numprop import config
    from numprop._fast import mkl

    flags = set(config.cpu_extensions())
    units = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    if not units:
        return False, "the CPU has no bf16 matrix instructions (AMX-BF16, AVX512-BF16)"
    if not mkl.available():
        return False, f"MKL is not available ({mkl.why_not()}); pip install 'numprop[mkl]'"
    return True, f"{' and '.join(units)} through MKL"


def resolve(name: str, dtype=np.float32) -> Precision:
    """The precision called ``name`` for a model of ``dtype``.

    "auto" is bf16 for a float32 model where ``bf16_supported()``, else fp32
    (float64 models, e.g. for gradient checks, stay exact).
    """
    if name == "auto":
        return BF16() if np.dtype(dtype) == np.float32 and bf16_supported()[0] else FP32()
    return PRECISIONS.create(name)


def describe(precision: Precision, requested: str = "auto") -> str:
    """What the products run in and on, for banners: "bf16 products (amx_bf16 through MKL)"."""
    if precision.name == "bf16":
        return f"bf16 products ({bf16_supported()[1]})"
    from numprop._fast import blas

    library = "OpenBLAS" if blas.available() else "NumPy's matmul"
    if precision.name == "fp32" and requested == "auto":
        ok, why = bf16_supported()
        if not ok:
            return f"fp32 products ({library}; bf16 not used: {why})"
    return f"{precision.name} products ({library})"
