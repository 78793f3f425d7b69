"""The version of GEM Studio (one place; gem_app and the mixture documents read it)."""

__version__ = "0.1.0"
