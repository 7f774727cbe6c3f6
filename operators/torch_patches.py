"""Patches to torch's and open_clip's loading that make a model start cheaply.

Each is a context manager or function that restores what it changes; why each pays is in
docs/decisions.md (*Embedding weights and start-up*).
"""

from __future__ import annotations

import contextlib
import functools


@contextlib.contextmanager
def torch_load_mapped():
    """Inside the block torch.load memory-maps the files it reads (torch's process-wide
    load setting, restored after)."""
    import torch.utils.serialization

    config = torch.utils.serialization.config.load
    saved = config.mmap
    config.mmap = True
    try:
        yield
    finally:
        config.mmap = saved


_INIT_FUNCTIONS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
    "sparse_",
)


@contextlib.contextmanager
def skip_weight_init(active: bool = True):
    """Within it, torch.nn.init's functions leave tensors as they are (when `active`)."""
    import torch

    if not active:
        yield
        return
    saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS if hasattr(torch.nn.init, name)}
    try:
        for name in saved:
            setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def load_checkpoint_mapped(model, checkpoint: str) -> None:
    """Load an open_clip checkpoint file into `model` strictly, with open_clip's own
    conversions, without copying it twice: the file is memory-mapped and its tensors become
    the model's parameters (`assign=True`). For a model built under `skip_weight_init`,
    whose own parameters were never written."""
    from open_clip.factory import load_checkpoint

    model.load_state_dict = functools.partial(model.load_state_dict, assign=True)
    try:
        with torch_load_mapped():
            load_checkpoint(model, checkpoint)
    finally:
        del model.load_state_dict


