"""The maths of GEM: points on the sphere, vMF special functions, the MM steps, the GEM
estimator, model files, GIS, the frozen-geometry q-step and the vMF-EM baseline.

Nothing here reads corpus files or the workspace (:mod:`gem_app.io`, :mod:`gem_app.storage`).
"""
