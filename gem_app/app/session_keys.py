"""Every key of the app's Streamlit session state, named once.

A page reads what another page wrote only through these names (a misspelt string would
silently read nothing), and every widget key is unique across the app. The values are
prefixed by the page that owns them. Keys that carry a parameter (one widget per column,
node or format) are functions. Nothing here imports streamlit.

Session state written by one page and read by others:

- :data:`FIT_NAME`: the selected fit (the sidebar's selector), every page.
- :data:`DATASET`: the corpus chosen on Data, used by Fit.
- :data:`FIT_SWEEP`: the last BIC sweep curve on Fit.
- :data:`MIX_CHOSEN`: the chosen mixture of Mix & Export as per-cluster weights
  (:class:`gem_app.app.chosen.ChosenWeights`), read by Map's "chosen weight" colouring.
- :data:`MAP_CLUSTER`: the cluster whose documents Map lists (also set by a map selection).
- :data:`MAP_ADJUST`: clusters excluded or boosted from a selection on the Map
  (:class:`gem_app.app.selection.ClusterAdjustments`), applied by Mix & Export's per-domain editor.
- :data:`MIX_BASE`: a mixture to start Mix & Export from (:class:`gem_app.app.mixes.BaseMixture`),
  set by Evaluate's "use this mixture" (and by loading a saved mixture); :data:`MIX_SOURCE` is
  Mix & Export's choice between it and the entropy temperature.
- :data:`EVAL_SEEN`: the study job whose end this session has already shown.
"""

from __future__ import annotations

__all__ = [
    "CMP_BASELINES",
    "CMP_METRICS",
    "CMP_MIN_SHARE",
    "DATASET",
    "DATA_EMBED",
    "DATA_EMB_PATH",
    "DATA_PATH",
    "DATA_REJECTED",
    "DATA_SOURCE",
    "DATA_UPLOAD",
    "DATA_UPLOAD_NPY",
    "DATA_USE",
    "EVAL_CANCEL",
    "EVAL_CANDIDATES",
    "EVAL_CURRENT",
    "EVAL_DOMAINS",
    "EVAL_FORM",
    "EVAL_METHOD",
    "EVAL_NAME",
    "EVAL_PRESET",
    "EVAL_PROXIES",
    "EVAL_SEED",
    "EVAL_SEEN",
    "EVAL_STEPS",
    "EVAL_STUDY",
    "EVAL_TARGET",
    "EVAL_USE",
    "FIT_AUTO",
    "FIT_BALANCE",
    "FIT_CONCENTRATION",
    "FIT_DEVICE",
    "FIT_FORM",
    "FIT_K",
    "FIT_K_RANGE",
    "FIT_NAME",
    "FIT_NAME_NEW",
    "FIT_SEED",
    "FIT_SWEEP",
    "FIT_TEMPERATURE",
    "MAP_ADJUST",
    "MAP_BOOST",
    "MAP_BOOST_FACTOR",
    "MAP_CAP",
    "MAP_CLEAR",
    "MAP_CLUSTER",
    "MAP_COLOUR",
    "MAP_DENSITY",
    "MAP_EXCLUDE",
    "MAP_FLAT",
    "MAP_GLOBE",
    "MAP_QUERY",
    "MAP_SEARCH",
    "MAP_SHAPE",
    "MAP_TOP_K",
    "MAP_UMAP",
    "MIX_BASE",
    "MIX_BETA",
    "MIX_BUDGET",
    "MIX_CHOSEN",
    "MIX_COMPARE",
    "MIX_COMPARE_CHART",
    "MIX_COMPARE_PICK",
    "MIX_COMPARE_TABLE",
    "MIX_COMPARE_USE",
    "MIX_EPOCHS",
    "MIX_LAMBDA",
    "MIX_NAME",
    "MIX_SAVE",
    "MIX_SOURCE",
    "MIX_T",
    "MIX_TABLE",
    "MIX_TAU",
    "MIX_WEIGHTS_CHART",
    "TAX_BUILD",
    "TAX_CHART",
    "TAX_COLOUR",
    "TAX_EXCLUDE",
    "TAX_EXCLUDE_NODE",
    "TAX_LEVEL2",
    "TAX_MERGE",
    "TAX_MERGE_LABEL",
    "TAX_MERGE_NODES",
    "TAX_RENAME",
    "TAX_RENAME_LABEL",
    "TAX_RENAME_NODE",
    "TAX_SPLIT",
    "TAX_SPLIT_N",
    "TAX_SPLIT_NODE",
    "TAX_TABLE",
    "data_column",
    "mix_compare_download",
    "mix_download",
    "mix_editor",
    "tax_exclude_flag",
]

# ---------------------------------------------------------------- shared by every page
FIT_NAME = "fit_name"

# ---------------------------------------------------------------- Data
DATA_SOURCE = "data_source"
DATA_UPLOAD = "data_upload"
DATA_UPLOAD_NPY = "data_upload_npy"
DATA_PATH = "data_path"
DATA_EMB_PATH = "data_emb_path"
DATA_REJECTED = "data_rejected"
DATA_EMBED = "data_embed"
DATA_USE = "data_use"
DATASET = "dataset"


def data_column(role: str, source) -> str:
    """The column picker of ``role`` (text, id, label, tokens) for one corpus file."""
    return f"data_col_{role}_{source}"


# ---------------------------------------------------------------- Fit
FIT_FORM = "fit_form"
FIT_AUTO = "fit_auto"
FIT_K = "fit_k"
FIT_K_RANGE = "fit_k_range"
FIT_BALANCE = "fit_balance"
FIT_TEMPERATURE = "fit_temperature"
FIT_SEED = "fit_seed"
FIT_DEVICE = "fit_device"
FIT_CONCENTRATION = "fit_concentration"
FIT_NAME_NEW = "fit_name_new"
FIT_SWEEP = "fit_sweep"

# ---------------------------------------------------------------- Map
MAP_SHAPE = "map_shape"
MAP_COLOUR = "map_colour"
MAP_CAP = "map_cap"
MAP_UMAP = "map_umap"
MAP_DENSITY = "map_density"
MAP_FLAT = "map_flat"
MAP_GLOBE = "map_globe"
MAP_CLUSTER = "map_cluster"
MAP_SEARCH = "map_search"
MAP_ADJUST = "map_adjust"  # ClusterAdjustments sent to Mix & Export
MAP_BOOST = "map_boost"
MAP_BOOST_FACTOR = "map_boost_factor"
MAP_CLEAR = "map_clear"
MAP_EXCLUDE = "map_exclude"
MAP_QUERY = "map_query"  # semantic search
MAP_TOP_K = "map_top_k"

# ---------------------------------------------------------------- Taxonomy
TAX_LEVEL2 = "tax_level2"
TAX_BUILD = "tax_build"
TAX_CHART = "tax_chart"
TAX_COLOUR = "tax_colour"
TAX_TABLE = "tax_table"
TAX_RENAME_NODE = "tax_rename_node"
TAX_RENAME_LABEL = "tax_rename_label"
TAX_RENAME = "tax_rename"
TAX_MERGE_NODES = "tax_merge_nodes"
TAX_MERGE_LABEL = "tax_merge_label"
TAX_MERGE = "tax_merge"
TAX_SPLIT_NODE = "tax_split_node"
TAX_SPLIT_N = "tax_split_n"
TAX_SPLIT = "tax_split"
TAX_EXCLUDE_NODE = "tax_exclude_node"
TAX_EXCLUDE = "tax_exclude"


def tax_exclude_flag(node_id: str) -> str:
    """The "excluded" checkbox of one taxonomy node."""
    return f"tax_exclude_flag_{node_id}"


# ---------------------------------------------------------------- Compare
CMP_MIN_SHARE = "cmp_min_share"
CMP_BASELINES = "cmp_baselines"
CMP_METRICS = "cmp_metrics"

# ---------------------------------------------------------------- Evaluate
EVAL_FORM = "eval_form"
EVAL_PRESET = "eval_preset"
EVAL_CANDIDATES = "eval_candidates"
EVAL_STEPS = "eval_steps"
EVAL_SEED = "eval_seed"
EVAL_METHOD = "eval_method"
EVAL_TARGET = "eval_target"
EVAL_DOMAINS = "eval_domains"
EVAL_CURRENT = "eval_current"
EVAL_NAME = "eval_name"
EVAL_CANCEL = "eval_cancel"
EVAL_SEEN = "eval_seen_job"
EVAL_STUDY = "eval_study"
EVAL_USE = "eval_use"
EVAL_PROXIES = "eval_proxies"

# ---------------------------------------------------------------- Mix & Export
MIX_TAU = "mix_tau"
MIX_BETA = "mix_beta"
MIX_EPOCHS = "mix_epochs"
MIX_BUDGET = "mix_budget"
MIX_WEIGHTS_CHART = "mix_weights_chart"
MIX_TABLE = "mix_table"
MIX_T = "mix_T"
MIX_LAMBDA = "mix_lambda"
MIX_NAME = "mix_name"
MIX_SAVE = "mix_save"
MIX_CHOSEN = "mix_chosen_weights"
MIX_BASE = "mix_base_mixture"
MIX_SOURCE = "mix_source"
MIX_COMPARE = "mix_compare"  # the saved mixtures compared side by side
MIX_COMPARE_CHART = "mix_compare_chart"
MIX_COMPARE_TABLE = "mix_compare_table"
MIX_COMPARE_PICK = "mix_compare_pick"  # the compared mixture to export or continue from
MIX_COMPARE_USE = "mix_compare_use"


def mix_editor(fit: str, taxonomy_key: str) -> str:
    """The per-domain multiplier table of one fit and taxonomy version."""
    return f"mix_editor_{fit}_{taxonomy_key[:8]}"


def mix_download(fmt: str) -> str:
    """The download button of one export format."""
    return f"mix_download_{fmt}"


def mix_compare_download(fmt: str) -> str:
    """The download button of one export format for a compared saved mixture."""
    return f"mix_compare_download_{fmt}"
