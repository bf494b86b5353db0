"""How a recipe loads its model: the fields every request that loads one carries, checked one way.

Keyword-only, so each request (`recipes/*.py`) puts its own required fields first; the CLI flags
are `cli.common.add_model_args` / `add_device_args`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config_file import checkpoint_path, config_layers, local_config
from .options import check_device_name, check_dtype

if TYPE_CHECKING:  # loading imports torch: a request's fields are checked before it loads
    from .loading import Loaded


def checks_config(spec: str | None, trust_remote_code: bool = False):
    """The config of `spec` (None: the built-in demo's saved copy) the input checks read: its config.json
    through `local_config` when that states the layer count (no torch), else transformers'
    (`loading.load_config`: hub ids, remote code, a damaged or partial config.json, with their messages;
    it imports torch). The demo's copy is built on first use (that imports torch once)."""
    path = checkpoint_path(spec)
    config = local_config(path)
    if config is not None and config_layers(config) is not None:
        return config
    from .loading import load_config

    return load_config(path, trust_remote_code)


@dataclass(kw_only=True)
class ModelFields:
    device: str = "auto"
    device_map: str | None = None  # auto | balanced | balanced_low_0 | a JSON file (device_map.py)
    dtype: str = "auto"
    trust_remote_code: bool = False
    allow_missing_weights: bool = False

    def check_model_fields(self) -> None:
        """--dtype, --device and --device-map, before any file is read (and before torch loads,
        except with --device-map, whose devices are checked against this machine's)."""
        check_dtype(self.dtype)
        check_device_name(self.device)
        if self.device_map is not None:
            from .device_map import check_device_args

            check_device_args(self.device, self.device_map)

    def checks_config(self, spec: str | None):
        """The config of `spec` the request's checks read (`checks_config`)."""
        return checks_config(spec, self.trust_remote_code)

    def load(self, spec: str | None) -> Loaded:
        """`spec` (a folder, a hub id, None = the demo) loaded as these fields ask."""
        from .loading import load_model

        return load_model(spec, device=self.device, dtype=self.dtype, trust_remote_code=self.trust_remote_code,
                          allow_missing_weights=self.allow_missing_weights, device_map=self.device_map)  # fmt: skip
