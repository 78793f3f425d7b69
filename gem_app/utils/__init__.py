"""The lowest layer: parameter validation, atomic files and checksums, entropy.

Everything else in gem_app may import these modules; they import nothing of gem_app.
"""
