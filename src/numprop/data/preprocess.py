"""Input preprocessing fitted on the training split.

Per-channel standardisation, mean image, PCA/ZCA whitening.

Every transform takes uint8 images (N, H, W, C) (CIFAR-10: (N, 32, 32, 3);
MNIST: (N, 28, 28, 1)) or already-flat rows (N, H*W*C) in HWC order, and
returns float32 (N, D). For Standardize and MeanImage D = H*W*C and the columns
keep the HWC order, so `x.reshape(N, H, W, C)` gives images back. The channel
count C always comes from the data (or the saved state), never from a constant. A fitted transform is described by
`state()` (NumPy arrays plus JSON-able parameters) so a model can be saved as
.npz + JSON and rebuilt with `preprocessing_from_state`, never with pickle.
"""

from __future__ import annotations

import numbers

import numpy as np

from numprop._fast import blas, kernels
from numprop._fast.grain import GRAIN
from numprop.errors import ConfigError, DataError
from numprop.registry import Registry

__all__ = [
    "Preprocessing",
    "Standardize",
    "StandardizeColumns",
    "MeanImage",
    "PCAWhiten",
    "ZCAWhiten",
    "PREPROCESSING",
    "make_preprocessing",
    "preprocessing_from_state",
]

_FIT_CHUNK = (
    1024  # images per block when fitting, to bound float64 temporaries (~25 MB for CIFAR-10)
)
_TRANSFORM_CHUNK = 512  # rows per block in the whitening transforms


def _as_rows(images: np.ndarray) -> np.ndarray:
    """View images (N, H, W, C) or rows (N, D) as rows (N, D), without copying when possible."""
    if not isinstance(images, np.ndarray):
        images = np.asarray(images)
    if images.ndim == 4:
        return images.reshape(images.shape[0], -1)
    if images.ndim == 2:
        return images
    raise DataError(f"expected images (N, H, W, C) or rows (N, D), got shape {images.shape}")


def _row_blocks(rows: np.ndarray, size: int = _FIT_CHUNK):
    """Yield consecutive blocks of rows as float64, for accurate statistics with bounded memory."""
    for start in range(0, rows.shape[0], size):
        yield rows[start : start + size].astype(np.float64)


def affine_rows(
    source: np.ndarray,
    shift: np.ndarray,
    scale: np.ndarray,
    out: np.ndarray,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """``out[i] = (source[rows[i]] - shift) * scale`` on all cores; rows None: every row.

    Gathering and converting in one pass saves the uint8 batch buffer. A
    non-contiguous source is read in place by the NumPy path, never copied whole.

    Parameters
    ----------
    source : ndarray, shape (N, D), uint8 or float
    shift, scale : ndarray, shape (D,)
        Of out's float dtype.
    out : ndarray, shape (B, D), float
        B = N when ``rows`` is None.
    rows : ndarray of int, shape (B,), optional
        Rows of ``source`` to read; clipped to [0, N), so check them first.

    Returns
    -------
    ndarray, shape (B, D)
        ``out``.

    Raises
    ------
    ConfigError
        If the shapes do not fit together.
    """
    index = np.arange(len(source)) if rows is None else np.asarray(rows, np.int64)
    d = source.shape[1]
    if shift.shape != (d,) or scale.shape != (d,) or out.shape != (len(index), d):
        raise ConfigError(
            f"affine_rows: for rows of {d} values, shift and scale must be ({d},) "
            f"and out ({len(index)}, {d}); got {shift.shape}, {scale.shape}, {out.shape}"
        )
    if source.dtype == np.uint8 and kernels.affine_rows(source, index, shift, scale, out):
        return out

    def piece(lo, hi):
        # The ufunc casts uint8 to float32 in small internal buffers: no (N, D) temporary.
        # (Indexing, not np.take: take would first copy a strided source whole.)
        block = source[lo:hi] if rows is None else source[np.clip(index[lo:hi], 0, len(source) - 1)]
        np.subtract(block, shift, out=out[lo:hi])
        out[lo:hi] *= scale

    blas.parallel_for(len(out), piece, GRAIN.rows(GRAIN.numpy, d))
    return out


class Preprocessing:
    """Base class: fit(images) on training data, then transform(images, out=None).

    ``transform`` returns float32 (N, output_dim). Subclasses set ``name`` (the
    registry name, saved with the model) and fill in the interface below.

    Attributes
    ----------
    name : str
        The registered name ("standardize", "mean_image", "pca", "zca").
    input_dim : int or None
        D, the values per input image (H*W*C); None until fitted.
    """

    name: str = ""

    def __init__(self) -> None:
        self.input_dim: int | None = None

    # -- interface every subclass fills in
    def fit(self, images: np.ndarray) -> Preprocessing:  # pragma: no cover - abstract
        """Estimate the statistics from training images; returns ``self``.

        Parameters
        ----------
        images : ndarray, shape (N, H, W, C) uint8, or rows (N, D)
            N >= 2 training images.

        Raises
        ------
        DataError
            For fewer than 2 images or a shape that is neither of the above.
        """
        raise NotImplementedError

    def transform(
        self, images: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:  # pragma: no cover
        """Map images to float32 rows (N, output_dim).

        Parameters
        ----------
        images : ndarray, shape (N, H, W, C) uint8, or rows (N, D)
            With the D the transform was fitted on; not modified.
        out : ndarray, shape (N, output_dim), float32, optional
            Receives the result; must not overlap ``images``.

        Returns
        -------
        ndarray, shape (N, output_dim), float32
            ``out`` if given, else a new array.

        Raises
        ------
        ConfigError
            If not fitted, or ``out`` has the wrong shape or dtype or overlaps.
        DataError
            If the images do not have D values each.
        """
        raise NotImplementedError

    @property
    def output_dim(self) -> int:  # pragma: no cover - abstract
        """Width of the transformed rows (ConfigError before ``fit``)."""
        raise NotImplementedError

    def state(self) -> tuple[dict[str, np.ndarray], dict]:  # pragma: no cover - abstract
        """The fitted transform as (arrays by name, JSON-able parameters), for saving.

        Raises
        ------
        ConfigError
            If not fitted.
        """
        raise NotImplementedError

    @classmethod
    def from_state(
        cls, arrays: dict[str, np.ndarray], params: dict
    ) -> Preprocessing:  # pragma: no cover
        """Rebuild a fitted instance from what ``state()`` returned.

        Raises
        ------
        ConfigError
            If an array or parameter is missing or malformed.
        """
        raise NotImplementedError

    # -- shared helpers
    def fit_transform(self, images: np.ndarray) -> np.ndarray:
        """Fit on `images` and return their transform, float32 (N, output_dim).

        Parameters
        ----------
        images : ndarray, shape (N, H, W, C) uint8, or rows (N, D)

        Returns
        -------
        ndarray, shape (N, output_dim), float32
        """
        return self.fit(images).transform(images)

    @property
    def fitted(self) -> bool:
        """Whether fit() (or from_state) has run."""
        return self.input_dim is not None

    def _fit_rows(self, images: np.ndarray) -> np.ndarray:
        """Validate training images and return them as rows (N, D)."""
        rows = _as_rows(images)
        if rows.shape[0] < 2:
            raise DataError(
                f"{self.name}: need at least 2 training images to fit, got {rows.shape[0]}"
            )
        return rows

    def _prepare(self, images: np.ndarray, out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Check a transform call; return (rows (N, D), output float32 (N, output_dim))."""
        if not self.fitted:
            raise ConfigError(f"{self.name}: transform() called before fit()")
        rows = _as_rows(images)
        if rows.shape[1] != self.input_dim:
            raise DataError(
                f"{self.name}: fitted on {self.input_dim} values per image, got {rows.shape[1]}"
            )
        shape = (rows.shape[0], self.output_dim)
        if out is None:
            return rows, np.empty(shape, dtype=np.float32)
        if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != shape:
            got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
            raise ConfigError(
                f"{self.name}: out must be a float32 array of shape {shape}, got {got}"
            )
        if np.shares_memory(out, rows):
            raise ConfigError(f"{self.name}: out must not overlap the input")
        return rows, out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({'fitted' if self.fitted else 'unfitted'})"


class _AffinePerValue(Preprocessing):
    """Shared transform of Standardize and MeanImage: out = (x - shift) * scale, float32 (D,)."""

    def __init__(self) -> None:
        super().__init__()
        self._shift: np.ndarray | None = None
        self._scale: np.ndarray | None = None

    @property
    def output_dim(self) -> int:
        """D, the same as the input (ConfigError before ``fit``)."""
        if self.input_dim is None:
            raise ConfigError(f"{self.name}: output_dim is known only after fit()")
        return self.input_dim

    def transform(self, images: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(x - shift) * scale as float32 (N, D), written into `out` when given."""
        rows, out = self._prepare(images, out)
        return affine_rows(rows, self._shift, self._scale, out)

    @property
    def per_value_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(shift, scale), float32 (D,): transform(x) = (x - shift) * scale."""
        if not self.fitted:
            raise ConfigError(f"{self.name}: used before fit()")
        return self._shift, self._scale

    def transform_rows(
        self, images: np.ndarray, rows: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """transform(images[rows]) in one pass, without the gathered copy.

        Parameters
        ----------
        images : ndarray, shape (N, H, W, C) uint8, or rows (N, D)
        rows : ndarray of int, shape (B,)
            Must lie in [0, N): they are not checked here.
        out : ndarray, shape (B, D), float32, optional

        Returns
        -------
        ndarray, shape (B, D), float32
            ``out`` if given, else a new array.
        """
        if not images.flags.c_contiguous:
            # Viewing them as rows, or np.take, would copy them all: index just these.
            return self.transform(images[np.asarray(rows)], out)
        source = _as_rows(images)
        # _prepare checks the fit, the width and `out` against a (len(rows), D) batch.
        _, out = self._prepare(np.broadcast_to(source[:1], (len(rows), source.shape[1])), out)
        return affine_rows(source, self._shift, self._scale, out, rows)


class Standardize(_AffinePerValue):
    """Subtract the per-channel mean and divide by the per-channel std (the default for images).

    Mean and std are over all training pixels of each channel, so
    ``out = (x - mean[c]) / std[c]`` for a value of channel c; a constant
    channel (std 0) is only centred. The output keeps the input's D = H*W*C
    values in HWC order.

    Parameters
    ----------
    channels : int, optional
        C. Taken from the images' last axis when fitting on (N, H, W, C); needed
        only to fit on rows that are already flat (N, H*W*C).
    """

    name = "standardize"

    def __init__(self, channels: int | None = None) -> None:
        super().__init__()
        if channels is not None and (
            isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels < 1
        ):
            raise ConfigError(f"standardize: channels must be a positive integer, got {channels!r}")
        self.channels = channels
        self.mean: np.ndarray | None = None  # (C,) float64, per channel
        self.std: np.ndarray | None = None  # (C,) float64, per channel

    def fit(self, images: np.ndarray) -> Standardize:
        """Compute the per-channel mean and std over all training pixels; returns ``self``.

        Parameters
        ----------
        images : ndarray, shape (N, H, W, C), or rows (N, D) in HWC order
            N >= 2. Rows need ``channels`` and D a multiple of it.

        Raises
        ------
        DataError
            For fewer than 2 images, flat rows without ``channels``, or a
            width that is not whole pixels.
        """
        images = np.asarray(images)
        channels = self.channels
        if images.ndim == 4:
            if channels is not None and images.shape[-1] != channels:
                raise DataError(
                    f"standardize: set up for {channels} channels, got images with {images.shape[-1]}"
                )
            channels = images.shape[-1]
        elif channels is None:
            raise DataError(
                "standardize pools the values of each colour channel: fit it on images "
                "(N, H, W, C), or give Standardize(channels=C) for flat rows; for a table "
                "of features use 'columns'"
            )
        rows = self._fit_rows(images)
        if rows.shape[1] % channels:
            raise DataError(
                f"standardize: {rows.shape[1]} values per image is not a multiple of {channels} channels"
            )
        count = rows.shape[0] * rows.shape[1] // channels
        # Two passes in float64 blocks: accurate, and never a full float64 copy of the data.
        # Summing over images first (contiguous, fast) and folding positions into
        # channels afterwards is much faster than reducing a (-1, C) view.
        total = np.zeros(rows.shape[1])
        for block in _row_blocks(rows):
            total += block.sum(axis=0)
        mean = total.reshape(-1, channels).sum(axis=0) / count
        mean_row = np.tile(mean, rows.shape[1] // channels)
        sq = np.zeros(rows.shape[1])
        for block in _row_blocks(rows):
            block -= mean_row
            block *= block
            sq += block.sum(axis=0)
        std = np.sqrt(sq.reshape(-1, channels).sum(axis=0) / count)
        self._set(mean, std, rows.shape[1])
        return self

    def _set(self, mean: np.ndarray, std: np.ndarray, input_dim: int) -> None:
        """Store the fitted statistics (C,) and the (D,) shift and scale they give."""
        self.mean, self.std, self.input_dim = mean, std, input_dim
        self.channels = mean.shape[0]
        safe_std = np.where(std > 0, std, 1.0)  # a constant channel is only centred
        # HWC rows cycle through the channels fastest, so tiling the (C,) vectors lines them up.
        self._shift = np.tile(mean, input_dim // self.channels).astype(np.float32)
        self._scale = np.tile(1.0 / safe_std, input_dim // self.channels).astype(np.float32)

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Arrays {'mean', 'std'} (C,) and params {'input_dim'}."""
        if not self.fitted:
            raise ConfigError("standardize: state() called before fit()")
        return {"mean": self.mean.copy(), "std": self.std.copy()}, {
            "input_dim": int(self.input_dim)
        }

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], params: dict) -> Standardize:
        """Rebuild a fitted Standardize from state(); C is the length of the saved mean."""
        input_dim = _param_int(params, "input_dim", cls.name)
        mean = arrays.get("mean") if hasattr(arrays, "get") else None
        mean = np.asarray(mean) if mean is not None else None
        if mean is None or mean.ndim != 1 or mean.size == 0:
            raise ConfigError("standardize state: array 'mean' missing or not a vector")
        mean = _state_array(arrays, "mean", mean.shape, cls.name)
        std = _state_array(arrays, "std", mean.shape, cls.name)
        if input_dim % mean.size:
            raise ConfigError(
                f"standardize state: input_dim {input_dim} is not a multiple of {mean.size} channels"
            )
        obj = cls()
        obj._set(mean.astype(np.float64), std.astype(np.float64), input_dim)
        return obj


class StandardizeColumns(_AffinePerValue):
    """Standardise each column of a table on its own: ``out = (x - mean[j]) / std[j]``.

    For features that are not pixels (measurements, counts, one-hot columns):
    each of the D columns gets its own training mean and std, where
    ``Standardize`` pools the values of each colour channel. A constant column
    (std 0) is only centred.
    """

    name = "columns"

    def __init__(self) -> None:
        super().__init__()
        self.mean: np.ndarray | None = None  # (D,) float64
        self.std: np.ndarray | None = None  # (D,) float64

    def fit(self, images: np.ndarray) -> StandardizeColumns:
        """Compute each column's mean and std over the training rows; returns ``self``.

        Parameters
        ----------
        images : ndarray, shape (N, D)
            N >= 2 rows of finite numbers (images are flattened to rows).

        Raises
        ------
        DataError
            For fewer than 2 rows or non-finite values.
        """
        rows = self._fit_rows(images)
        if rows.dtype.kind == "f" and not np.isfinite(rows).all():
            raise DataError("columns: the training rows hold NaN or infinite values")
        total, sq = np.zeros(rows.shape[1]), np.zeros(rows.shape[1])
        for block in _row_blocks(rows):  # float64 blocks: accurate, bounded memory
            total += block.sum(axis=0)
        mean = total / rows.shape[0]
        for block in _row_blocks(rows):
            block -= mean
            block *= block
            sq += block.sum(axis=0)
        self._set(mean, np.sqrt(sq / rows.shape[0]))
        return self

    def _set(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Store the fitted statistics and the (D,) shift and scale they give."""
        self.mean, self.std, self.input_dim = mean, std, mean.shape[0]
        self._shift = mean.astype(np.float32)
        self._scale = (1.0 / np.where(std > 0, std, 1.0)).astype(np.float32)

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Arrays {'mean', 'std'} (D,); no parameters."""
        if not self.fitted:
            raise ConfigError("columns: state() called before fit()")
        return {"mean": self.mean.copy(), "std": self.std.copy()}, {}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], params: dict) -> StandardizeColumns:
        """Rebuild a fitted StandardizeColumns from state()."""
        mean = np.asarray(arrays.get("mean")) if "mean" in arrays else None
        if mean is None or mean.ndim != 1 or mean.size == 0:
            raise ConfigError("columns state: array 'mean' missing or not a vector")
        std = _state_array(arrays, "std", mean.shape, cls.name)
        obj = cls()
        obj._set(
            _state_array(arrays, "mean", mean.shape, cls.name).astype(np.float64),
            std.astype(np.float64),
        )
        return obj


class MeanImage(_AffinePerValue):
    """Subtract the training mean image, then divide by one global std.

    The std is that of the centred training pixels taken all together,
    sqrt(mean over images and positions of (x - mean_image)^2), so the output
    has zero mean at every pixel and unit variance overall, while the relative
    variance of the positions and channels is kept.
    """

    name = "mean_image"

    def __init__(self) -> None:
        super().__init__()
        self.mean: np.ndarray | None = None  # (D,) float64
        self.std: float | None = None

    def fit(self, images: np.ndarray) -> MeanImage:
        """Compute the mean image (D,) and the global std of the centred pixels; returns ``self``.

        Parameters
        ----------
        images : ndarray, shape (N, H, W, C), or rows (N, D)
            N >= 2.

        Raises
        ------
        DataError
            For fewer than 2 images or a shape that is neither of the above.
        """
        rows = self._fit_rows(images)
        total = np.zeros(rows.shape[1])
        for block in _row_blocks(rows):
            total += block.sum(axis=0)
        mean = total / rows.shape[0]
        sq = 0.0
        for block in _row_blocks(rows):
            block -= mean
            block *= block
            sq += float(block.sum())
        self._set(mean, float(np.sqrt(sq / rows.size)), rows.shape[1])
        return self

    def _set(self, mean: np.ndarray, std: float, input_dim: int) -> None:
        """Store the fitted statistics and the (D,) shift and scale they give."""
        self.mean, self.std, self.input_dim = mean, std, input_dim
        self._shift = mean.astype(np.float32)
        self._scale = np.full(input_dim, 1.0 / std if std > 0 else 1.0, np.float32)

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Arrays {'mean' (D,), 'std' ()} and params {'input_dim'}."""
        if not self.fitted:
            raise ConfigError("mean_image: state() called before fit()")
        return {"mean": self.mean.copy(), "std": np.array(self.std)}, {
            "input_dim": int(self.input_dim)
        }

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], params: dict) -> MeanImage:
        """Rebuild a fitted MeanImage from state()."""
        input_dim = _param_int(params, "input_dim", cls.name)
        mean = _state_array(arrays, "mean", (input_dim,), cls.name)
        std = _state_array(arrays, "std", (), cls.name)
        obj = cls()
        obj._set(mean.astype(np.float64), float(std), input_dim)
        return obj


class PCAWhiten(Preprocessing):
    """PCA whitening (or ZCA with zca=True) of pixels scaled to [0, 1] and centred per pixel.

    Fit: x = pixels / 255, centred by the training mean per pixel; covariance
    C = U diag(lam) U^T over at most `max_fit_images` training images drawn
    with `seed`. PCA outputs the top `n_components` coordinates
    (x - mean) U_k diag(1 / sqrt(lam_k + eps)); ZCA rotates back,
    (x - mean) U diag(1 / sqrt(lam + eps)) U^T, so its output keeps the
    input's D values (3,072 for CIFAR-10) and still looks like an image.
    `eps` damps the directions of tiny variance (mostly noise).

    Parameters
    ----------
    n_components : int, optional
        K, the number of leading components kept (PCA only); all D by default.
    zca : bool, default False
        ZCA instead of PCA (then ``n_components`` must be None).
    eps : float, default 1e-2
        Added to the eigenvalues (of pixels scaled to [0, 1]), > 0.
    max_fit_images : int, default 10_000
        At most this many training images estimate the covariance, >= 2.
    seed : int, default 0
        Seed of that sample.

    Attributes
    ----------
    mean : ndarray, shape (D,), float32
        Mean of the training pixels / 255.
    components : ndarray, shape (D, K), float32
        The whitening matrix (K = D for ZCA).
    eigenvalues : ndarray, shape (D,), float64
        Of the covariance, descending.

    Raises
    ------
    ConfigError
        For a bad ``n_components``, ``eps`` or ``max_fit_images``, or
        ``n_components`` with ``zca=True``.
    """

    name = "pca"  # instances built with zca=True say "zca"

    def __init__(
        self,
        n_components: int | None = None,
        zca: bool = False,
        eps: float = 1e-2,
        max_fit_images: int = 10_000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if n_components is not None and (
            isinstance(n_components, bool)
            or not isinstance(n_components, (int, np.integer))
            or n_components < 1
        ):
            raise ConfigError(
                f"n_components must be a positive integer or None, got {n_components!r}"
            )
        if zca and n_components is not None:
            raise ConfigError("zca keeps every dimension: n_components must be None with zca=True")
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
            raise ConfigError(f"eps must be a positive number, got {eps!r}")
        if not isinstance(max_fit_images, (int, np.integer)) or max_fit_images < 2:
            raise ConfigError(f"max_fit_images must be an integer >= 2, got {max_fit_images!r}")
        self.n_components = None if n_components is None else int(n_components)
        self.zca = bool(zca)
        self.eps = float(eps)
        self.max_fit_images = int(max_fit_images)
        self.seed = int(seed)
        self.name = "zca" if self.zca else "pca"
        self.mean: np.ndarray | None = None  # (D,) float32, of pixels / 255
        self.components: np.ndarray | None = None  # (D, output_dim) float32 whitening matrix
        self.eigenvalues: np.ndarray | None = None  # (D,) float64, descending

    @property
    def output_dim(self) -> int:
        """K, the number of components (D for ZCA); ConfigError before ``fit``."""
        if self.components is None:
            raise ConfigError(f"{self.name}: output_dim is known only after fit()")
        return self.components.shape[1]

    def fit(self, images: np.ndarray) -> PCAWhiten:
        """Estimate the mean and whitening matrix from (a seeded sample of) the training images.

        Parameters
        ----------
        images : ndarray, shape (N, H, W, C) uint8, or rows (N, D)
            N >= 2. The covariance is (D, D) float64: 75 MB for CIFAR-10.

        Returns
        -------
        PCAWhiten
            ``self``.

        Raises
        ------
        DataError
            For fewer than 2 images or a shape that is neither of the above.
        ConfigError
            If ``n_components`` exceeds D.
        """
        rows = self._fit_rows(images)
        n, d = rows.shape
        if self.n_components is not None and self.n_components > d:
            raise ConfigError(
                f"{self.name}: n_components={self.n_components} exceeds the {d} input values"
            )
        if n > self.max_fit_images:
            # The covariance converges long before 50,000 images; a sample keeps fit() to seconds.
            rng = np.random.default_rng(self.seed)
            rows = rows[np.sort(rng.choice(n, size=self.max_fit_images, replace=False))]
            n = rows.shape[0]
        mean = np.zeros(d)
        for block in _row_blocks(rows):
            mean += block.sum(axis=0)
        mean /= n * 255.0
        cov = np.zeros((d, d))
        for block in _row_blocks(rows):
            block /= 255.0
            block -= mean
            cov += block.T @ block
        cov /= n
        lam, u = np.linalg.eigh(cov)
        lam, u = np.clip(lam[::-1], 0.0, None), u[:, ::-1]  # descending; clip round-off negatives
        scale = 1.0 / np.sqrt(lam + self.eps)
        if self.zca:
            w = (u * scale) @ u.T
        else:
            k = d if self.n_components is None else self.n_components
            w = u[:, :k] * scale[:k]
        self.input_dim = d
        self.mean = mean.astype(np.float32)
        self.components = np.ascontiguousarray(w, dtype=np.float32)
        self.eigenvalues = lam
        return self

    def transform(self, images: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """((x / 255) - mean) @ components as float32 (N, K), written into `out` when given.

        See ``Preprocessing.transform`` for the parameters; K is ``output_dim``.
        """
        rows, out = self._prepare(images, out)
        # Work in blocks of rows so the only temporary is one small float32 block.
        block = np.empty((min(_TRANSFORM_CHUNK, rows.shape[0]), self.input_dim), dtype=np.float32)
        for start in range(0, rows.shape[0], _TRANSFORM_CHUNK):
            stop = min(start + _TRANSFORM_CHUNK, rows.shape[0])
            b = block[: stop - start]
            np.multiply(rows[start:stop], np.float32(1 / 255), out=b)
            b -= self.mean
            np.matmul(b, self.components, out=out[start:stop])
        return out

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Arrays {'mean' (D,), 'components' (D, K), 'eigenvalues' (D,)}, and constructor params.

        Raises
        ------
        ConfigError
            If not fitted.
        """
        if not self.fitted:
            raise ConfigError(f"{self.name}: state() called before fit()")
        arrays = {
            "mean": self.mean.copy(),
            "components": self.components.copy(),
            "eigenvalues": self.eigenvalues.copy(),
        }
        params = {
            "n_components": self.n_components,
            "zca": self.zca,
            "eps": self.eps,
            "max_fit_images": self.max_fit_images,
            "seed": self.seed,
        }
        return arrays, params

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], params: dict) -> PCAWhiten:
        """Rebuild a fitted PCAWhiten/ZCAWhiten from state()."""
        try:
            obj = PCAWhiten(**params)
        except TypeError as exc:
            raise ConfigError(f"{cls.name} state: bad parameters: {exc}") from exc
        mean = np.asarray(arrays.get("mean")) if "mean" in arrays else None
        if mean is None or mean.ndim != 1:
            raise ConfigError(f"{obj.name} state: array 'mean' missing or not a vector")
        d = mean.shape[0]
        k = d if obj.zca or obj.n_components is None else obj.n_components
        components = _state_array(arrays, "components", (d, k), obj.name)
        eigenvalues = _state_array(arrays, "eigenvalues", (d,), obj.name)
        obj.input_dim = d
        obj.mean = mean.astype(np.float32)
        obj.components = np.ascontiguousarray(components, dtype=np.float32)
        obj.eigenvalues = eigenvalues.astype(np.float64)
        return obj


class ZCAWhiten(PCAWhiten):
    """ZCA whitening: PCAWhiten(zca=True); output keeps the input's shape.

    Parameters
    ----------
    eps : float, default 1e-2
    max_fit_images : int, default 10_000
    seed : int, default 0
        As for ``PCAWhiten``.
    """

    name = "zca"

    def __init__(self, eps: float = 1e-2, max_fit_images: int = 10_000, seed: int = 0) -> None:
        super().__init__(
            n_components=None, zca=True, eps=eps, max_fit_images=max_fit_images, seed=seed
        )

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], params: dict) -> PCAWhiten:
        """Rebuild a fitted ZCAWhiten from state()."""
        return super().from_state(arrays, {**params, "zca": True})


# The one table that turns preprocessing names (CLI, saved models) into classes.
PREPROCESSING = Registry("preprocessing")
for _cls in (Standardize, MeanImage, PCAWhiten, ZCAWhiten, StandardizeColumns):
    PREPROCESSING.add(_cls.name, _cls)


def make_preprocessing(name: str, **kw) -> Preprocessing:
    """Build an unfitted preprocessing by name, with options `kw`.

    Parameters
    ----------
    name : {"standardize", "mean_image", "pca", "zca"}
        A registered name.
    **kw
        Constructor options (e.g. ``n_components=100`` for "pca").

    Returns
    -------
    Preprocessing
        Unfitted: call ``fit`` on the training images.

    Raises
    ------
    ConfigError
        For an unknown name or options the class does not take.
    """
    return PREPROCESSING.create(name, **kw)


def preprocessing_from_state(
    name: str, arrays: dict[str, np.ndarray], params: dict
) -> Preprocessing:
    """Rebuild a fitted preprocessing from its name and state() (arrays, params).

    Parameters
    ----------
    name : str
        The registered name (``obj.name`` when it was saved).
    arrays : dict of str to ndarray
        The first item of ``state()``.
    params : dict
        The second item of ``state()``.

    Returns
    -------
    Preprocessing
        Fitted, ready to ``transform``.

    Raises
    ------
    ConfigError
        For an unknown name, a malformed state, or a state of another kind.
    """
    cls = PREPROCESSING.get(name)
    if not isinstance(params, dict) or not hasattr(arrays, "__getitem__"):
        raise ConfigError(f"{name} state: expected a dict of arrays and a dict of parameters")
    obj = cls.from_state(arrays, params)
    if obj.name != name:
        raise ConfigError(f"state is for {obj.name!r}, not {name!r}")
    return obj


def _param_int(params: dict, key: str, who: str) -> int:
    """``params[key]`` as a positive int; a ConfigError naming ``who`` otherwise."""
    value = params.get(key) if isinstance(params, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{who} state: parameter {key!r} missing or not a positive integer")
    return int(value)


def _state_array(arrays, key: str, shape: tuple[int, ...], who: str) -> np.ndarray:
    """``arrays[key]`` if it is a float array of ``shape``; a ConfigError otherwise."""
    try:
        value = np.asarray(arrays[key])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{who} state: array {key!r} missing") from None
    if value.shape != shape or value.dtype.kind != "f":
        raise ConfigError(
            f"{who} state: array {key!r} is {value.dtype} {value.shape}, expected float {shape}"
        )
    return value
