"""Training data: uint8 images kept where they are fastest to reach, and a step-pure batch order.

The batch for step ``s`` is a pure function of ``(seed, s)``: epoch ``e = s // steps_per_epoch``
uses its own seeded permutation. A resumed run therefore sees exactly the batches an
uninterrupted run would, without saving sampler state.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import h5py
import numpy as np
import torch

from chexdino import h5store


def batch_indices(step: int, n_rows: int, batch_size: int, seed: int) -> np.ndarray:
    """Row positions (into the training subset) of the batch used at ``step``."""
    steps_per_epoch = n_rows // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the {n_rows} training rows")
    epoch, position = divmod(step, steps_per_epoch)
    order = epoch_order(seed, epoch, n_rows)
    return order[position * batch_size:(position + 1) * batch_size]


@lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, n_rows: int) -> np.ndarray:
    """The seeded permutation of one epoch (cached: it is drawn once, not once per step)."""
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


def to_device(array: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host array (batch positions, crop maps) on ``device`` without a host sync.

    A plain ``.to(cuda)`` of pageable memory waits for everything queued on the GPU, so the
    host could not queue step ``s + 1`` while step ``s`` runs; a pinned staging copy does not
    wait (the caching host allocator keeps it alive until the copy is done).
    """
    tensor = torch.as_tensor(array)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def step_generator(seed: int, step: int) -> torch.Generator:
    """CPU generator for the augmentation of one step (resume-exact by construction)."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


class ImageBank:
    """The uint8 ``cxr`` rows of one split: resident (GPU or host RAM) or streamed from HDF5.

    ``mode`` is ``gpu`` (whole subset in device memory), ``host`` (in RAM, pinned when a GPU
    is used, copied per batch without blocking) or ``stream`` (contiguous-slice reads per batch,
    for data larger than memory). ``auto`` picks ``gpu`` when the subset fits in a quarter of
    free GPU memory, else ``host``.
    """

    def __init__(self, cxr_h5: Path, rows: np.ndarray, device: torch.device, mode: str = "auto"):
        self.cxr_h5 = Path(cxr_h5)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.device = device
        with h5py.File(self.cxr_h5, "r") as f:
            self.image_shape = tuple(f["cxr"].shape[1:])
        self.mode = self._choose_mode(mode)
        self._h5: h5py.File | None = None
        self.images: torch.Tensor | None = None
        if self.mode != "stream":
            array = torch.from_numpy(h5store.load_cxr_array(self.cxr_h5, self.rows))
            if self.mode == "gpu":
                self.images = array.to(device)
            else:
                self.images = array.pin_memory() if device.type == "cuda" else array

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        return len(self.rows) * int(np.prod(self.image_shape))

    def _choose_mode(self, mode: str) -> str:
        if mode not in ("auto", "gpu", "host", "stream"):
            raise ValueError(f"train.data_on_device: '{mode}' is not auto, gpu, host or stream")
        if mode == "gpu" and self.device.type != "cuda":
            return "host"
        if mode != "auto":
            return mode
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if self.nbytes < free // 4:
                return "gpu"
        return "host"

    def batch(self, positions: np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W) on ``self.device`` for the given subset positions."""
        if self.images is not None:
            index = torch.from_numpy(np.asarray(positions))
            if self.mode == "gpu":
                return self.images[to_device(index, self.device)]
            return self.images[index].to(self.device, non_blocking=True)
        return torch.from_numpy(self._read_rows(self.rows[positions])).to(self.device)

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        if self._h5 is None:
            self._h5 = h5py.File(self.cxr_h5, "r")
        order = np.argsort(rows)
        out = np.empty((len(rows), *self.image_shape), dtype=np.uint8)
        out[order] = self._h5["cxr"][rows[order]]
        return out
