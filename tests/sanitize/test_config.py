from pipeline.defense import VerdictPolicy
from pipeline.presets import get_preset
from pipeline.sanitize.config import SanitizeConfig


def test_the_preset_thresholds_apply_to_the_preset_models_only():
    calibrated = get_preset("demo").verdict
    assert calibrated.max_drift is not None
    assert SanitizeConfig().verdict_policy() == calibrated
    # Drift scales differ between models, so other models start from the uncalibrated defaults.
    assert SanitizeConfig(reconstructor="vae:/elsewhere").verdict_policy() == VerdictPolicy()
    assert SanitizeConfig(reconstructor_options={"sample_scale": 1.0}).verdict_policy() == VerdictPolicy()


def test_given_thresholds_override_the_preset():
    policy = SanitizeConfig(min_agreement=0.8, flip_min_drift=0.0).verdict_policy()
    assert policy.min_agreement == 0.8 and policy.flip_min_drift == 0.0
    assert policy.max_drift == get_preset("demo").verdict.max_drift
