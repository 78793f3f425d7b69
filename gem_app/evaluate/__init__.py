"""Measuring clusterings: agreement with a human taxonomy, baseline clusterings, model
selection (BIC)."""
