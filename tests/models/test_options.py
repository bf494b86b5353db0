"""--dtype and --device checked by name, before torch loads (models.options)."""

from __future__ import annotations

import pytest
import torch

from superexperts.models.options import check_device_name, check_dtype
from superexperts.runs.errors import UserError


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps", "cpu:0"])
def test_device_names_torch_takes_pass(device):
    check_device_name(device)
    if device != "auto":
        torch.device(device)  # the same names torch itself parses


@pytest.mark.parametrize("device", ["banana", "cuda:x", "gpu", "cuda:", ""])
def test_other_device_names_are_one_line_errors(device):
    with pytest.raises(UserError, match="is not a device"):
        check_device_name(device)


def test_dtypes():
    check_dtype("auto")
    check_dtype("bfloat16")
    with pytest.raises(UserError, match="--dtype 'fp8' unknown"):
        check_dtype("fp8")
