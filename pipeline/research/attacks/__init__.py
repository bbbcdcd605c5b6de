"""Adversarial illusion attacks (pure torch): the published attack and adaptive attacks on defenses."""

from .illusion import AttackConfig, bpda, cosine_objective, eot_objective, illusion_attack, pick_targets

__all__ = ["AttackConfig", "bpda", "cosine_objective", "eot_objective", "illusion_attack", "pick_targets"]
