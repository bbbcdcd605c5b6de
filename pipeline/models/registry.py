"""Turn a model spec into a loaded reconstructor or encoder.

Spec grammar: `KIND:LOCATION[#SUBFOLDER]`

    vae:stabilityai/sd-vae-ft-mse          a Hugging Face Hub repository (from the local cache unless downloads are allowed)
    vae:runwayml/stable-diffusion-v1-5#vae a subfolder of a repository or directory
    ae:madebyollin/taesd
    dm:google/ddpm-cifar10-32              unet/ + scheduler/ (+ vae/ for latent diffusion)
    clip:openai/clip-vit-large-patch14
    imagebind:/path/imagebind_huge.pth     the official checkpoint (BPE merges file beside it)
    imagebind:huge                         the same, looked up in the Disillusion cache
    vae:/local/dir  clip:s3://bucket/models/clip   local directories, or S3 prefixes copied to the cache

A local model directory may hold `disillusion.json`: default options for that model (for example the
resolution a small model was trained at), overridden by options passed to the loader.
Weights are read from safetensors; a `.pth` checkpoint only with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .encoders.bpe import BPE_FILENAME
from .protocols import Encoder, Reconstructor

IMAGEBIND_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
OPTIONS_FILENAME = "disillusion.json"


class WeightsNotFoundError(FileNotFoundError):
    """Raised with one message that says where weights were looked for and how to provide them."""


def default_cache_dir() -> str:
    return os.environ.get("DISILLUSION_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "disillusion")


def downloads_allowed(allow_download: bool | None) -> bool:
    if allow_download is not None:
        return allow_download
    return os.environ.get("DISILLUSION_ALLOW_DOWNLOAD", "") in ("1", "true", "yes")


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    location: str
    subfolder: str | None = None

    @classmethod
    def parse(cls, spec: str) -> "ModelSpec":
        kind, sep, rest = spec.partition(":")
        if not sep or not rest:
            raise ValueError(f"model spec {spec!r} is not of the form KIND:LOCATION (e.g. vae:stabilityai/sd-vae-ft-mse)")
        kind = kind.strip().lower()
        if kind not in RECONSTRUCTOR_KINDS + ENCODER_KINDS:
            raise ValueError(f"unknown model kind {kind!r} in {spec!r}; known: {', '.join(RECONSTRUCTOR_KINDS + ENCODER_KINDS)}")
        location, _, subfolder = rest.partition("#")
        return cls(kind, location, subfolder or None)

    def __str__(self) -> str:
        return f"{self.kind}:{self.location}" + (f"#{self.subfolder}" if self.subfolder else "")


@dataclass
class LoadContext:
    device: torch.device
    dtype: torch.dtype | None
    cache_dir: str
    hf_cache_dir: str | None
    allow_download: bool
    s3_endpoint: str | None


def _looks_local(location: str) -> bool:
    return location.startswith(("/", "./", "../", "~", "file://")) or os.path.exists(location)


def resolve_location(spec: ModelSpec, ctx: LoadContext) -> tuple[str, bool]:
    """Return (location, is_local): S3 copied into the cache, `file://` stripped, `~` expanded."""
    location = spec.location
    if location.startswith("s3://"):
        from ..io.s3 import fetch_to_cache

        try:
            return fetch_to_cache(location, ctx.cache_dir, endpoint_url=ctx.s3_endpoint), True
        except FileNotFoundError as error:
            raise WeightsNotFoundError(f"{spec}: {error}. Upload the model directory there, or use a local path.") from error
    if location.startswith("file://"):
        location = location[len("file://") :]
    if _looks_local(location):
        location = os.path.expanduser(location)
        if not os.path.exists(location):
            raise WeightsNotFoundError(f"{spec}: no file or directory at {location}")
        return location, True
    return location, False


def _hub_kwargs(spec: ModelSpec, ctx: LoadContext, subfolder: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"local_files_only": not ctx.allow_download}
    if ctx.hf_cache_dir:
        kwargs["cache_dir"] = ctx.hf_cache_dir
    if subfolder:
        kwargs["subfolder"] = subfolder
    return kwargs


def _missing_hub_weights(spec: ModelSpec, ctx: LoadContext, error: Exception) -> WeightsNotFoundError:
    from huggingface_hub.constants import HF_HUB_CACHE

    cache = ctx.hf_cache_dir or HF_HUB_CACHE
    how = (
        "Downloads are allowed but the download failed."
        if ctx.allow_download
        else "Downloads are off (no network at run time): fetch the weights once where there is network, e.g. "
        f"`hf download {spec.location}` with HF_HUB_CACHE={cache}, or copy a saved model directory and use "
        f"`{spec.kind}:/path/to/dir`; set DISILLUSION_ALLOW_DOWNLOAD=1 to let the loader download."
    )
    return WeightsNotFoundError(
        f"{spec}: weights not found in the Hugging Face cache {cache} ({type(error).__name__}: {error}). {how}"
    )


def _from_pretrained(cls, spec: ModelSpec, ctx: LoadContext, location: str, is_local: bool, subfolder: str | None, **extra):
    kwargs = {"subfolder": subfolder} if (is_local and subfolder) else {}
    if not is_local:
        kwargs = _hub_kwargs(spec, ctx, subfolder)
    try:
        return cls.from_pretrained(location, **kwargs, **extra)
    except (OSError, ValueError) as error:
        if is_local:
            raise WeightsNotFoundError(f"{spec}: cannot load {cls.__name__} from {location}: {error}") from error
        raise _missing_hub_weights(spec, ctx, error) from error


def _join(base: str | None, child: str) -> str:
    return f"{base}/{child}" if base else child


def _options_file(location: str, is_local: bool, subfolder: str | None) -> dict[str, Any]:
    if not is_local or not os.path.isdir(location):
        return {}
    path = os.path.join(location, subfolder or "", OPTIONS_FILENAME)
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        return json.load(handle)


def _place(module: torch.nn.Module, ctx: LoadContext) -> torch.nn.Module:
    return module.to(device=ctx.device, dtype=ctx.dtype) if ctx.dtype else module.to(ctx.device)


def _context(device, dtype, cache_dir, hf_cache_dir, allow_download, s3_endpoint) -> LoadContext:
    return LoadContext(
        device=torch.device(device),
        dtype=dtype,
        cache_dir=cache_dir or default_cache_dir(),
        hf_cache_dir=hf_cache_dir,
        allow_download=downloads_allowed(allow_download),
        s3_endpoint=s3_endpoint,
    )


def load_reconstructor(spec: str, **kwargs: Any) -> Reconstructor:
    """Load a `vae`, `ae` or `dm` reconstructor; options go to its constructor (e.g. sample_scale,
    resolution). Keyword arguments as `load_model`'s."""
    return load_model(spec, RECONSTRUCTORS, "a reconstructor", **kwargs)


def load_encoder(spec: str, **kwargs: Any) -> Encoder:
    """Load a `clip` or `imagebind` encoder. Keyword arguments as `load_model`'s."""
    return load_model(spec, ENCODERS, "an encoder", **kwargs)


def load_model(
    spec: str,
    table: dict[str, ModelKind],
    role: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    cache_dir: str | None = None,
    hf_cache_dir: str | None = None,
    allow_download: bool | None = None,
    s3_endpoint: str | None = None,
    **options: Any,
):
    """The model `spec` names, if its kind is one of `table`'s, placed on `device` in `dtype`."""
    parsed = ModelSpec.parse(spec)
    if parsed.kind not in table:
        actual = "an encoder" if parsed.kind in ENCODERS else "a reconstructor"
        raise ValueError(f"{spec!r} is {actual} spec, not {role} ({', '.join(table)})")
    ctx = _context(device, dtype, cache_dir, hf_cache_dir, allow_download, s3_endpoint)
    return table[parsed.kind].load(parsed, ctx, options)


def _located(spec: ModelSpec, ctx: LoadContext, options: dict[str, Any]) -> tuple[str, bool, dict[str, Any]]:
    """(location, is_local, options): the options file beside the weights under those given."""
    location, is_local = resolve_location(spec, ctx)
    return location, is_local, {**_options_file(location, is_local, spec.subfolder), **options}


def _load_vae(spec: ModelSpec, ctx: LoadContext, options: dict[str, Any]) -> Reconstructor:
    location, is_local, options = _located(spec, ctx, options)
    from diffusers import AutoencoderKL

    from .reconstructors import VAEReconstructor

    vae = _from_pretrained(AutoencoderKL, spec, ctx, location, is_local, spec.subfolder, use_safetensors=True, low_cpu_mem_usage=False)
    return VAEReconstructor(_place(vae, ctx), **options)


def _load_ae(spec: ModelSpec, ctx: LoadContext, options: dict[str, Any]) -> Reconstructor:
    location, is_local, options = _located(spec, ctx, options)
    from diffusers import AutoencoderTiny

    from .reconstructors import AEReconstructor

    ae = _from_pretrained(AutoencoderTiny, spec, ctx, location, is_local, spec.subfolder, use_safetensors=True, low_cpu_mem_usage=False)
    return AEReconstructor(_place(ae, ctx), **options)


def _load_dm(spec: ModelSpec, ctx: LoadContext, options: dict[str, Any]) -> Reconstructor:
    location, is_local, options = _located(spec, ctx, options)
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DModel

    from .reconstructors import DiffusionReconstructor

    sub = spec.subfolder
    unet = _from_pretrained(UNet2DModel, spec, ctx, location, is_local, _join(sub, "unet"), use_safetensors=True, low_cpu_mem_usage=False)
    # Any DDPM-family scheduler config loads here; the reconstructor samples with DDIM on the same schedule.
    scheduler = _from_pretrained(DDPMScheduler, spec, ctx, location, is_local, _join(sub, "scheduler"))
    vae = None
    if _has_component(location, is_local, sub, "vae", ctx):
        vae = _place(_from_pretrained(AutoencoderKL, spec, ctx, location, is_local, _join(sub, "vae"), use_safetensors=True, low_cpu_mem_usage=False), ctx)
    return DiffusionReconstructor(_place(unet, ctx), scheduler, vae=vae, **options)


@dataclass(frozen=True)
class ModelKind:
    """A model family: how to load it (spec, context, options), and the options a user may set for it
    (each becomes a flag and a config key: name -> (type, help)). A new kind is one row of
    RECONSTRUCTORS or ENCODERS."""

    load: Callable[[ModelSpec, LoadContext, dict[str, Any]], Any]
    options: dict[str, tuple[type, str]] = field(default_factory=dict)


RECONSTRUCTORS = {
    "vae": ModelKind(_load_vae, {
        "sample_scale": (float, "vae: scale on the posterior std (1 = sample, 0 = the mode)"),
        "latent_noise": (float, "vae: extra isotropic Gaussian latent noise, in units of the latent's std"),
    }),
    "ae": ModelKind(_load_ae, {"noise_scale": (float, "ae: Gaussian latent noise scale")}),
    "dm": ModelKind(_load_dm, {
        "strength": (float, "dm: diffusion depth t*/T"),
        "denoise_steps": (int, "dm: DDIM steps back from t*"),
    }),
}
RECONSTRUCTOR_KINDS = tuple(RECONSTRUCTORS)
# Options every reconstructor takes (pipeline/models/reconstructors/base.py).
COMMON_RECONSTRUCTOR_OPTIONS = {"resolution": (int, "working resolution of the reconstructor (default: the model's own)")}


def _has_component(location: str, is_local: bool, sub: str | None, name: str, ctx: LoadContext) -> bool:
    if is_local:
        return os.path.isdir(os.path.join(location, sub or "", name))
    filename = _join(_join(sub, name), "config.json")
    if ctx.allow_download:
        from huggingface_hub import file_exists

        return file_exists(location, filename)
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(location, filename, cache_dir=ctx.hf_cache_dir), str)


def _load_clip(spec: ModelSpec, ctx: LoadContext, options: dict[str, Any]) -> Encoder:
    from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel

    from .encoders import CLIPEncoder

    location, is_local, options = _located(spec, ctx, options)
    model = _from_pretrained(CLIPModel, spec, ctx, location, is_local, spec.subfolder, use_safetensors=True)
    tokenizer = _from_pretrained(AutoTokenizer, spec, ctx, location, is_local, spec.subfolder)
    try:
        processor = _from_pretrained(CLIPImageProcessorPil, spec, ctx, location, is_local, spec.subfolder)
        crop = processor.crop_size  # a dict-like {"height", "width"} or an int, by version
        options.setdefault("image_size", int(crop["height"]) if hasattr(crop, "__getitem__") else int(crop))
        options.setdefault("mean", tuple(processor.image_mean))
        options.setdefault("std", tuple(processor.image_std))
    except WeightsNotFoundError:
        pass  # no preprocessor config: the model's image size and OpenAI CLIP statistics
    return CLIPEncoder(_place(model, ctx), tokenizer, **options)


def _imagebind_paths(spec: ModelSpec, ctx: LoadContext) -> tuple[str, str | None]:
    """(checkpoint file, config.json or None) for an imagebind spec."""
    if spec.location in ("huge", "imagebind_huge"):
        path = os.path.join(ctx.cache_dir, "imagebind", "imagebind_huge.pth")
        if not os.path.exists(path):
            if not ctx.allow_download:
                raise WeightsNotFoundError(
                    f"{spec}: no checkpoint at {path}. Download {IMAGEBIND_URL} (CC BY-NC-SA 4.0) and "
                    f"{BPE_FILENAME} from the ImageBind repository into {os.path.dirname(path)}, pass "
                    "imagebind:/path/to/imagebind_huge.pth, or set DISILLUSION_ALLOW_DOWNLOAD=1."
                )
            os.makedirs(os.path.dirname(path), exist_ok=True)
            torch.hub.download_url_to_file(IMAGEBIND_URL, path)
        return path, None
    location, _ = resolve_location(spec, ctx)
    if os.path.isdir(location):
        for name in ("model.safetensors", "imagebind_huge.safetensors", "imagebind_huge.pth"):
            if os.path.exists(os.path.join(location, name)):
                config = os.path.join(location, "config.json")
                return os.path.join(location, name), config if os.path.exists(config) else None
        raise WeightsNotFoundError(f"{spec}: no model.safetensors or imagebind_huge.pth in {location}")
    return location, None


def _read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _load_imagebind(spec: ModelSpec, ctx: LoadContext, options: dict[str, Any]) -> Encoder:
    from .encoders import ClipBpeTokenizer, ImageBindConfig, ImageBindEncoder, ImageBindVisionText, load_imagebind_state_dict

    checkpoint, config_path = _imagebind_paths(spec, ctx)
    config = ImageBindConfig.from_json(config_path) if config_path else ImageBindConfig()
    options = dict(options)
    candidates = [options.pop("bpe_path", None), os.path.join(os.path.dirname(checkpoint), BPE_FILENAME), os.environ.get("DISILLUSION_BPE_PATH")]
    bpe = next((p for p in candidates if p and os.path.exists(p)), None)
    if bpe is None:
        raise WeightsNotFoundError(
            f"{spec}: the CLIP BPE merges file {BPE_FILENAME} was not found (looked beside the checkpoint, at "
            "DISILLUSION_BPE_PATH and the bpe_path option). It ships with ImageBind, CLIP and OpenCLIP (MIT)."
        )
    model = ImageBindVisionText(config)
    load_imagebind_state_dict(model, _read_checkpoint(checkpoint))
    tokenizer = ClipBpeTokenizer.from_file(bpe, context_length=config.context_length)
    return ImageBindEncoder(_place(model, ctx), tokenizer, **options)


ENCODERS = {"clip": ModelKind(_load_clip), "imagebind": ModelKind(_load_imagebind)}
ENCODER_KINDS = tuple(ENCODERS)
