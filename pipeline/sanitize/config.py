"""Everything a sanitisation run needs to rebuild its purifier anywhere (a plain, picklable record)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..defense import ConsensusConfig, ConsensusPurifier, LabelBank, VerdictPolicy
from ..io.sandbox import DEFAULT_DECODE_SECONDS, DEFAULT_PARSE_SECONDS, Budgets
from ..io.shards import DEFAULT_MAX_SHARD_BYTES
from ..models.noise import MIN_KEY_BYTES, NoiseKey
from ..models.registry import COMMON_RECONSTRUCTOR_OPTIONS, RECONSTRUCTORS
from ..settings import Setting, SettingsTable
from .outputs import ON_ERROR, ON_UNCERTAIN, POLICIES

PRECISIONS = ("auto", "float32", "bfloat16")
NOISE_KEY_VARIABLE = "DISILLUSION_NOISE_KEY_FILE"


@dataclass(frozen=True)
class Execution:
    """The settings that `SanitizeConfig` leaves to the device, resolved for one."""

    dtype: torch.dtype
    batch_size: int
    decode_batch_size: int
    compile: bool


@dataclass(frozen=True)
class ModelSettings:
    """Which models and labels; None: the preset's."""

    preset: str = field(default="demo", metadata={"help": "named bundle of models, labels and thresholds (demo, imagebind, clip-l14)"})
    reconstructor: str | None = field(default=None, metadata={"help": "override the preset's reconstructor (a model spec, e.g. vae:/dir)", "metavar": "SPEC"})
    encoder: str | None = field(default=None, metadata={"help": "override the preset's encoder (a model spec)", "metavar": "SPEC"})
    witness: str | None = field(default=None, metadata={
        "help": "a robust witness: an adversarially fine-tuned copy of the encoder (a model spec; `none` for no witness). Default: "
                "the preset's, when its own encoder runs", "metavar": "SPEC"})
    # Per-kind options (the registry's table: sample_scale, latent_noise, noise_scale, strength, ...).
    reconstructor_options: dict[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] | None = field(default=None, metadata={"help": "label file, one per line (in a config file: a list or a file)", "metavar": "FILE"})
    template: str | None = field(default=None, metadata={"help": "prompt template with {} (default: the preset's)"})
    work_size: int | None = field(default=None, metadata={
        "help": "working geometry: images are decoded to PIXELS x PIXELS (shorter side, centre crop); default: the preset's encoder input",
        "metavar": "PIXELS"})


@dataclass(frozen=True)
class RuntimeSettings:
    """How the models run; None and "auto" pick per device (see `SanitizeConfig.execution`)."""

    batch_size: int | None = field(default=None, metadata={"help": "images per purifier call (default 32 on a GPU, 16 on a CPU)"})
    decode_batch_size: int | None = field(default=None, metadata={"help": "reconstructions per decoder call (default 160 on a GPU, 32 on a CPU)"})
    precision: str = field(default="auto", metadata={"help": "model weights (auto: bfloat16 on a GPU, float32 on a CPU)", "choices": PRECISIONS})
    compile: bool = field(default=False, metadata={"help": "torch.compile the image models (faster on a GPU after a one-off compilation per actor)"})


@dataclass(frozen=True)
class SanitizeConfig:
    """A run's settings, nested by concern: the models, the consensus (with its verdict thresholds:
    the library's own ConsensusConfig and VerdictPolicy), how the models execute, and what happens to
    flagged and unreadable samples. `resolve` builds one from flat settings (flags, YAML, run.json)
    with the preset's defaults filled in, so a config always states the thresholds in effect."""

    models: ModelSettings = field(default_factory=ModelSettings)
    consensus: ConsensusConfig = field(default_factory=ConsensusConfig)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    # drop by default: an attacker who aims its illusion at the reconstructions (EOT) makes the purified
    # image itself the attack, and purify then delivers it (EVALUATION.md, "Which policy").
    policy: str | None = field(default="drop", metadata={
        "help": "what happens to a flagged sample: drop it to quarantine (default), replace it by its purified image (purify), "
                "or keep it annotated (keep)", "choices": POLICIES, "name": "on_illusion"})
    # drop by default: an attacker who moves the encoder just across a class boundary, keeping the
    # witness close, is judged `uncertain` more often than `clean` (EVALUATION.md, "uncertain").
    on_uncertain: str = field(default="drop", metadata={
        "help": "what happens to a sample judged uncertain (votes split, or a label flip with little drift): drop it to "
                "quarantine (default), or keep it annotated (keep)", "choices": ON_UNCERTAIN})
    # Samples that cannot be examined (undecodable, over the pixel limit, links, repeated names, no
    # image): kept byte-identical with an error verdict, or moved to quarantine.
    on_error: str = field(default="keep", metadata={
        "help": "samples that cannot be examined (undecodable, over the size limit, no image, links, repeated names): keep them "
                "byte-identical with an error verdict (default), or drop them to quarantine", "choices": ON_ERROR})
    max_shard_bytes: int = field(default=DEFAULT_MAX_SHARD_BYTES, metadata={
        "help": "a gzip-compressed shard may decompress to this much at most (default 2 GiB); larger ones are reported", "metavar": "BYTES"})
    # Budgets of the sandbox that walks tars and decodes images (pipeline/io/sandbox.py): what overruns
    # one becomes a shard problem or an error row, never a stuck or exhausted worker.
    parse_budget_seconds: float = field(default=DEFAULT_PARSE_SECONDS, metadata={
        "help": f"CPU seconds to read one shard's tar headers (default {DEFAULT_PARSE_SECONDS:g}); a shard that takes longer "
                "keeps the samples read so far and is reported", "metavar": "SECONDS"})
    decode_budget_seconds: float = field(default=DEFAULT_DECODE_SECONDS, metadata={
        "help": f"CPU seconds to decode one image (default {DEFAULT_DECODE_SECONDS:g}); an image that takes longer is an error row",
        "metavar": "SECONDS"})
    decode_budget_bytes: int | None = field(default=None, metadata={
        "help": "memory to decode one image (default: what the largest image allowed needs, about 1.1 GB); an image that needs "
                "more is an error row", "metavar": "BYTES"})
    # The secret that keys every sample's noise (pipeline/models/noise.py): a path, never the key; the
    # key itself is never written to the run's record, manifests or logs (its fingerprint is).
    noise_key_file: str | None = field(default=None, metadata={
        "help": f"a file holding the secret noise key (at least {MIN_KEY_BYTES} bytes; `head -c 32 /dev/urandom > KEY`), for runs "
                f"whose verdicts a rerun must reproduce (default: ${NOISE_KEY_VARIABLE}, else a fresh secret each run)", "metavar": "FILE"})
    # Corpus, outputs and s3:// model specs; credentials never enter the config (the AWS variables and files).
    s3_endpoint: str | None = field(default=None, metadata={"help": "S3-compatible endpoint URL (default: the AWS variables and config)", "metavar": "URL"})

    def __post_init__(self):
        """Every setting checked where it is made, so that a bad one stops the run before any work."""
        choices = {"precision": (self.runtime.precision, PRECISIONS), "policy": (self.policy, (*POLICIES, None)),
                   "on_error": (self.on_error, ON_ERROR), "on_uncertain": (self.on_uncertain, ON_UNCERTAIN)}
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(str(a) for a in allowed if a)}, not {value!r}")
        sizes = {"batch_size": self.runtime.batch_size, "decode_batch_size": self.runtime.decode_batch_size,
                 "work_size": self.models.work_size, "max_shard_bytes": self.max_shard_bytes,
                 "decode_budget_bytes": self.decode_budget_bytes}
        for name, value in sizes.items():
            if value is not None and value < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, not {value}")
        if self.consensus.seed is not None and self.noise_key_file:
            raise ValueError("give a noise key file or a public seed, not both")
        if min(self.parse_budget_seconds, self.decode_budget_seconds) <= 0:
            raise ValueError("the parse and decode budgets must be positive")
        if self.models.labels is not None and not self.models.labels:
            raise ValueError("the label list is empty")
        if self.consensus.verdict.needs_witness and self.witness_spec() is None:
            raise ValueError("max-witness-gap and max-witness-margin threshold a witness: give one with --witness SPEC")
        self.label_bank()  # the preset exists, labels are unique, the template has its placeholder

    @classmethod
    def resolve(cls, settings: dict[str, Any] | None = None, **more: Any) -> SanitizeConfig:
        """A config from flat settings (the names in `SETTINGS`, as flags and config files
        use them); what is not given comes from the preset: its thresholds when its own models run,
        the uncalibrated VerdictPolicy defaults with other models (drift scales differ by model)."""
        from ..presets import get_preset

        nested = SETTINGS.nest({**(settings or {}), **more})
        models = ModelSettings(**nested.pop("models", {}))
        own_models = not (models.reconstructor or models.encoder or models.reconstructor_options)
        base = get_preset(models.preset).verdict if own_models else VerdictPolicy()
        if models.witness is not None:  # a witness of one's own: the preset's witness thresholds belong to the preset's witness
            base = base.without_witness()
        consensus = nested.pop("consensus", {})
        consensus["verdict"] = replace(base, **consensus.get("verdict", {}))
        return cls(models=models, consensus=ConsensusConfig(**consensus), runtime=RuntimeSettings(**nested.pop("runtime", {})), **nested)

    def resolved(self, device: str | torch.device = "cpu") -> SanitizeConfig:
        """The same run with every default written out: the models' specs and options, the witness,
        the labels and template, the working size, and the batch sizes and precision for `device`.
        It reads as a record of what runs, and `resolve(resolved.to_json())` gives it back."""
        from ..models.registry import ModelSpec
        from ..presets import get_preset

        preset, models, run = get_preset(self.models.preset), self.models, self.execution(device)
        if models.reconstructor:
            reconstructor, options = models.reconstructor, dict(models.reconstructor_options)
        else:
            kind = preset.default_reconstructor
            reconstructor = preset.reconstructors[kind]
            options = {**preset.reconstructor_options.get(kind, {}), **models.reconstructor_options}
        ModelSpec.parse(reconstructor)  # a spec the run could load
        bank = self.label_bank()
        models = replace(models, reconstructor=reconstructor, reconstructor_options=options, encoder=models.encoder or preset.encoder,
                         witness=self.witness_spec() or "none", labels=tuple(bank.labels), template=bank.template,
                         work_size=self.working_size())
        runtime = replace(self.runtime, batch_size=run.batch_size, decode_batch_size=run.decode_batch_size,
                          precision=str(run.dtype).removeprefix("torch."))
        return replace(self, models=models, runtime=runtime)

    def to_json(self) -> dict[str, Any]:
        """The flat settings that `resolve` turns back into this config (run.json stores them)."""
        return SETTINGS.flatten(self)

    def noise_key(self) -> NoiseKey:
        """The run's noise key: a public seed when one is set, else the key file (this setting or
        $DISILLUSION_NOISE_KEY_FILE), else a fresh secret. Call it once per run: every shard needs the same."""
        if self.consensus.seed is not None:
            return NoiseKey.public(self.consensus.seed)
        path = self.noise_key_file or os.environ.get(NOISE_KEY_VARIABLE)
        return NoiseKey.from_file(path) if path else NoiseKey.fresh()

    def budgets(self) -> Budgets:
        return Budgets(self.parse_budget_seconds, self.decode_budget_seconds, self.decode_budget_bytes)

    def working_size(self) -> int:
        from ..presets import get_preset

        return self.models.work_size or get_preset(self.models.preset).work_size

    def label_bank(self) -> LabelBank:
        from ..presets import get_preset

        preset, models = get_preset(self.models.preset), self.models
        return LabelBank(preset.labels if models.labels is None else models.labels, models.template or preset.template)

    def execution(self, device: str | torch.device = "cpu") -> Execution:
        """On a GPU (measured on an H200 with the full-size models, BENCHMARKS.md): bfloat16 weights,
        32 images per call and 160 reconstructions per decoder call. On a CPU: float32, 16 and 32."""
        gpu, given = torch.device(device).type == "cuda", self.runtime
        precision = given.precision if given.precision != "auto" else ("bfloat16" if gpu else "float32")
        return Execution(
            dtype=getattr(torch, precision),
            batch_size=given.batch_size or (32 if gpu else 16),
            decode_batch_size=given.decode_batch_size or (160 if gpu else 32),
            compile=given.compile,
        )

    def build_purifier(self, device: str = "cpu") -> ConsensusPurifier:
        from ..models import load_encoder, load_reconstructor
        from ..presets import get_preset

        models, run = self.models, self.execution(device)
        preset = get_preset(models.preset)
        place = {"device": device, "dtype": run.dtype}
        if models.reconstructor:
            reconstructor = load_reconstructor(models.reconstructor, **place, s3_endpoint=self.s3_endpoint, **models.reconstructor_options)
        else:
            reconstructor = preset.load_reconstructor(**place, **models.reconstructor_options)
        if models.encoder:
            encoder = load_encoder(models.encoder, **place, s3_endpoint=self.s3_endpoint)
        else:
            encoder = preset.load_encoder(**place)
        witness = self.witness_spec()
        witness = load_encoder(witness, **place, s3_endpoint=self.s3_endpoint) if witness else None
        reconstructor.decode_batch_size = run.decode_batch_size
        if run.compile:
            # of the weights as loaded, before compilation wraps them
            _ = reconstructor.fingerprint, encoder.fingerprint, witness and witness.fingerprint
            reconstructor.compile()
            encoder.compile()
        return ConsensusPurifier(reconstructor, encoder, self.label_bank(), self.consensus, witness=witness)

    def witness_spec(self) -> str | None:
        """The witness that runs: the one given (`none`: no witness), else the preset's when its own encoder runs."""
        from ..presets import get_preset

        given = self.models.witness
        if given is not None:
            return None if given.lower() == "none" else given
        return None if self.models.encoder else get_preset(self.models.preset).witness


def _reconstructor_options() -> list[Setting]:
    """The options of every reconstructor kind in the model registry, as settings of `models`."""
    options = dict(COMMON_RECONSTRUCTOR_OPTIONS)
    for kind in RECONSTRUCTORS.values():
        options.update(kind.options)
    return [Setting(name, ("models", "reconstructor_options"), name, kind, help, optional=True) for name, (kind, help) in options.items()]


# The flat view of `SanitizeConfig`: the flags of sanitize, audit and check, config files, `config
# show` and run.json's `config`. A config file may also carry calibrate's provenance record.
SETTINGS = SettingsTable(SanitizeConfig, _reconstructor_options(), records=("calibration",))
# The consensus settings of the jobs that build a purifier of their own (calibrate, check, the research jobs).
CONSENSUS_SETTINGS = ("n", "early_exit", "alpha", "seed")
