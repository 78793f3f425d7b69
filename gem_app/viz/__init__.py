"""Plotly figure builders for GEM Studio: pure functions, data in, ``go.Figure`` out.

A figure function never computes the science; it receives results (arrays, frames)
and draws them. One module per family of charts:

- :mod:`gem_app.viz.fitplots`: objective trace, masses and concentrations, the K sweep;
- :mod:`gem_app.viz.maps`: the 3D globe and the 2D map of the projected hypersphere;
- :mod:`gem_app.viz.hierarchy`: sunburst and treemap of a taxonomy;
- :mod:`gem_app.viz.agreement`: contingency heatmap and Sankey against human categories;
- :mod:`gem_app.viz.mixplots`: natural vs chosen weights, epochs, masses moving;
- :mod:`gem_app.viz.evaluation`: what proxy studies measured (weights, change in bits per
  byte against natural, predicted vs measured).
"""

from gem_app.viz.agreement import contingency_heatmap, sankey_figure
from gem_app.viz.evaluation import (
    bpb_delta_heatmap,
    predicted_measured_figure,
    study_weights_figure,
)
from gem_app.viz.fitplots import masses_figure, objective_figure, sweep_figure
from gem_app.viz.hierarchy import sunburst_figure, treemap_figure
from gem_app.viz.maps import flat_map_figure, globe_figure
from gem_app.viz.mixplots import epochs_figure, masses_shift_figure, weights_figure
from gem_app.viz.style import cluster_palette

__all__ = [
    "bpb_delta_heatmap",
    "cluster_palette",
    "contingency_heatmap",
    "epochs_figure",
    "flat_map_figure",
    "globe_figure",
    "masses_figure",
    "masses_shift_figure",
    "objective_figure",
    "predicted_measured_figure",
    "sankey_figure",
    "sunburst_figure",
    "study_weights_figure",
    "sweep_figure",
    "treemap_figure",
    "weights_figure",
]
