"""Mixing weights: the entropy temperature with caps and curator edits, and the RegMix /
DoReMi strategies. Pure maths on arrays; nothing here reads files except small tables."""
