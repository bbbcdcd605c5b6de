"""Disillusion: sanitise multi-modal datasets against adversarial illusions."""

__version__ = "0.1.0"
