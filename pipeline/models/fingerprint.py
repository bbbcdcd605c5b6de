"""Stable fingerprints of model weights and settings, recorded in manifests and run.json."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch


def fingerprint_modules(kind: str, modules: dict[str, torch.nn.Module | None], settings: dict[str, Any]) -> str:
    """sha256 over the kind, the settings (JSON, sorted) and every tensor of the modules' state dicts.

    Tensors are hashed as float32 bytes in key order, so the same weights give the same fingerprint
    whatever dtype or device they were loaded to.
    """
    digest = hashlib.sha256()
    digest.update(kind.encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name in sorted(modules):
        module = modules[name]
        if module is None:
            continue
        for key, tensor in sorted(module.state_dict().items()):
            digest.update(f"{name}.{key}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return f"{kind}-{digest.hexdigest()[:16]}"
