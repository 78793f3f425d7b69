"""From clusters to a taxonomy: GIS labels, optional LLM names, the hierarchy of GEM splits
and its replayable edit log."""
