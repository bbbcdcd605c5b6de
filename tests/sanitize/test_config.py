import dataclasses

import pytest

from pipeline.defense import ConsensusConfig, VerdictPolicy
from pipeline.presets import get_preset
from pipeline.sanitize.config import ModelSettings, SanitizeConfig


def test_the_preset_thresholds_apply_to_the_preset_models_only():
    calibrated = get_preset("demo").verdict
    assert calibrated.max_drift is not None
    assert SanitizeConfig.resolve().consensus.verdict == calibrated
    # Drift scales differ between models, so other models start from the uncalibrated defaults.
    assert SanitizeConfig.resolve(reconstructor="vae:/elsewhere").consensus.verdict == VerdictPolicy()
    assert SanitizeConfig.resolve(sample_scale=1.0).consensus.verdict == VerdictPolicy()


def test_given_thresholds_override_the_preset():
    policy = SanitizeConfig.resolve(min_agreement=0.8, flip_min_drift=0.0).consensus.verdict
    assert policy.min_agreement == 0.8 and policy.flip_min_drift == 0.0
    assert policy.max_drift == get_preset("demo").verdict.max_drift


def test_the_config_nests_the_library_objects_rather_than_copying_their_fields():
    config = SanitizeConfig.resolve(n=4, early_exit="certain", seed=3)
    assert config.consensus == ConsensusConfig(n=4, early_exit="certain", seed=3, verdict=get_preset("demo").verdict)
    own = {f.name for f in dataclasses.fields(SanitizeConfig)}
    copied = own & ({f.name for f in dataclasses.fields(ConsensusConfig)} | {f.name for f in dataclasses.fields(VerdictPolicy)})
    assert not copied
    # The defaults live in one place: the library's classes.
    assert SanitizeConfig.resolve().consensus.n == ConsensusConfig().n == 10


def test_execution_settings_follow_the_device_unless_given():
    import torch

    cpu, gpu = SanitizeConfig().execution("cpu"), SanitizeConfig().execution("cuda")
    assert (cpu.dtype, cpu.batch_size, cpu.decode_batch_size, cpu.compile) == (torch.float32, 16, 32, False)
    assert (gpu.dtype, gpu.batch_size, gpu.decode_batch_size) == (torch.bfloat16, 32, 160)
    given = SanitizeConfig.resolve(precision="float32", batch_size=8, decode_batch_size=40, compile=True).execution("cuda")
    assert (given.dtype, given.batch_size, given.decode_batch_size, given.compile) == (torch.float32, 8, 40, True)


def test_the_working_size_is_the_preset_encoder_input_unless_given():
    assert SanitizeConfig().working_size() == 32 == get_preset("demo").work_size
    assert SanitizeConfig(models=ModelSettings(preset="imagebind")).working_size() == 224
    assert SanitizeConfig.resolve(work_size=64).working_size() == 64


def test_bad_settings_stop_before_any_work():
    with pytest.raises(ValueError, match="batch-size must be at least 1"):
        SanitizeConfig.resolve(batch_size=0)
    with pytest.raises(ValueError, match="unknown preset"):
        SanitizeConfig.resolve(preset="nope")
    with pytest.raises(ValueError, match="n must be at least 1"):
        SanitizeConfig.resolve(n=0)


def test_purifier_gets_the_resolved_decode_batch():
    purifier = SanitizeConfig.resolve(decode_batch_size=7).build_purifier("cpu")
    assert purifier.reconstructor.decode_batch_size == 7


def test_the_witness_is_the_presets_when_its_encoder_runs_and_can_be_switched_off():
    demo = get_preset("demo")
    config = SanitizeConfig.resolve()
    assert config.witness_spec() == demo.witness and demo.witness is not None
    assert config.consensus.verdict.max_witness_gap == demo.verdict.max_witness_gap is not None
    assert config.consensus.verdict.max_witness_margin == demo.verdict.max_witness_margin
    assert config.build_purifier().witness.fingerprint != config.build_purifier().encoder.fingerprint
    off = SanitizeConfig.resolve(witness="none")
    assert off.witness_spec() is None and off.build_purifier().witness is None
    assert off.consensus.verdict == demo.verdict.without_witness()
    # Another encoder has no witness unless given one; a witness of one's own needs its own threshold.
    assert SanitizeConfig.resolve(encoder="clip:/elsewhere").witness_spec() is None
    own = SanitizeConfig.resolve(witness="clip:/mine")
    assert own.witness_spec() == "clip:/mine" and not own.consensus.verdict.needs_witness
    for threshold in ("max_witness_gap", "max_witness_margin"):
        with pytest.raises(ValueError, match="witness"):
            SanitizeConfig.resolve(witness="none", **{threshold: 0.1})
