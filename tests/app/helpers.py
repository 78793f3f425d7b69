"""AppTest helpers shared by the page tests (the app's entry script, pages, elements)."""

import base64
import json

import numpy as np
from streamlit.testing.v1 import AppTest

from gem_app.app.bundle import APP_ENTRY

PAGE_FILES = {
    "data": "data.py",
    "fit": "fit.py",
    "map": "map.py",
    "taxonomy": "taxonomy.py",
    "compare": "compare.py",
    "evaluate": "evaluate.py",
    "mix": "mix.py",
}


def new_session() -> AppTest:
    """A fresh browser session of the app (its own session state), run once."""
    at = AppTest.from_file(str(APP_ENTRY), default_timeout=300).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def open_page(at: AppTest, page: str) -> AppTest:
    """Switch ``at`` to a page (``"mix"``, ...) and run it; no exception allowed."""
    at.switch_page(PAGE_FILES[page]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(label))


def frame_with(at: AppTest, column: str):
    """The first dataframe on the page that has ``column``."""
    return next(df.value for df in at.dataframe if column in df.value.columns)


def plotly_figures(at: AppTest) -> list[dict]:
    """The plotly charts of the page as figure dicts (``data``, ``layout``)."""
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def plotly_array(value) -> np.ndarray:
    """A plotly JSON array: a plain list or plotly's typed array ``{"dtype", "bdata", "shape"}``."""
    if isinstance(value, dict) and "bdata" in value:
        data = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if shape:
            data = data.reshape([int(s) for s in str(shape).split(",")])
        return data
    return np.asarray(value)


def map_points(at: AppTest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Map page's document points: (rows, clusters, colour values)."""
    (figure,) = plotly_figures(at)
    (trace,) = [t for t in figure["data"] if t.get("name") == "documents"]
    custom = plotly_array(trace["customdata"]).reshape(-1, 2)
    colour = plotly_array(trace["marker"]["color"]).astype(float)
    return custom[:, 0].astype(np.int64), custom[:, 1].astype(np.int64), colour
