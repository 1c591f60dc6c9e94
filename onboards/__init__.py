"""onboards: a spec-first implementation of LeadConduit's buyer-onboarding API."""

# The one place the version is written: pyproject.toml reads it; tests/test_dist.py holds openapi.yaml and
# CHANGELOG.md to it.
__version__ = "0.1.0"
