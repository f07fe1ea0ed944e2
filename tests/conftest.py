import os

from hypothesis import HealthCheck, settings

# Kernel tests draw a seed and build tensors from it with torch, so examples are cheap but not instant.
settings.register_profile(
    "default", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow], derandomize=False
)
# CI: more examples, and a fixed derivation so a red run can be replayed.
settings.register_profile(
    "ci", deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
