"""Map page: open time and bytes sent per render, at 5k, 200k and 1M documents (AppTest).

    .venv/bin/python bench/bench_map.py                        # the bundled sample (5,000)
    .venv/bin/python bench/bench_map.py --synthetic 200000 1000000

Each corpus is fitted once (synthetic: K topics of planted words and Gaussian blobs at
d = 32, ten MM iterations), its labels and its UMAP layout (a sample of ``--umap-sample``
documents, the rest placed by nearest sample neighbours) computed and stored once; then the
Map page is opened ``--repeats`` times in a warm session (the goal: < 3 s after the first,
cached, layout) in both views, and the size of what one render sends to the browser is
summed over the page's elements (the plotly figure JSON, tables, captions).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from gem_app.app import session_keys as keys
from gem_app.app import state as app_state
from gem_app.app.bundle import APP_ENTRY
from gem_app.app.layout import map_layout

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: its tests package
from tests.synthetic_workspace import synthetic_fit as planted_workspace  # noqa: E402


def synthetic_fit(root: Path, n: int, k: int = 16, d: int = 32, seed: int = 0) -> Path:
    """A workspace with one fit ``synthetic`` of n planted documents."""
    return planted_workspace(root, n, k=k, d=d, vocabulary=400, words_per_doc=6, seed=seed)


def _walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _walk(child)


def render_bytes(at: AppTest) -> tuple[int, int]:
    """(bytes of every element's message, bytes of the plotly figures) of the last render."""
    total = plotly = 0
    for node in _walk(at._tree):
        proto = getattr(node, "proto", None)
        if proto is None or not hasattr(proto, "ByteSize"):
            continue
        total += proto.ByteSize()
        if node.type == "plotly_chart":
            plotly += proto.ByteSize()
    return total, plotly


def time_map(workspace: Path, fit: str, repeats: int) -> dict:
    os.environ["GEM_WORKSPACE"] = str(workspace)
    at = AppTest.from_file(str(APP_ENTRY), default_timeout=3600)
    at.run()
    at.selectbox(key=keys.FIT_NAME).set_value(fit).run()
    at.switch_page("map.py").run()
    assert not at.exception, [e.value for e in at.exception]
    result = {}
    for shape in ("Globe 3D", "Map 2D"):
        at.segmented_control(key=keys.MAP_SHAPE).set_value(shape).run()  # warm: density image
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            at.switch_page("map.py").run()
            times.append(time.perf_counter() - start)
        assert not at.exception, [e.value for e in at.exception]
        assert any("layout: UMAP" in c.value for c in at.caption), "the layout is not stored"
        total, plotly = render_bytes(at)
        result[shape] = (statistics.median(times), total, plotly)
    return result


def prepare(workspace: Path, fit: str, umap_sample: int) -> tuple[float, float]:
    """Labels (on disk) and the stored UMAP layout: (seconds for labels, seconds for layout)."""
    view = app_state.fit_view(app_state.open_workspace(workspace), fit)
    start = time.perf_counter()
    _ = view.labels  # cached on disk
    labels_s = time.perf_counter() - start
    layout = map_layout(view)
    start = time.perf_counter()
    if layout.umap() is None:
        layout.compute(umap_sample)
    return labels_s, time.perf_counter() - start


def report(name: str, n: int, prep: tuple, result: dict) -> None:
    print(f"{name} ({n:,} documents): labels {prep[0]:.1f} s, UMAP layout {prep[1]:.1f} s (once)")
    for shape, (seconds, total, plotly) in result.items():
        print(
            f"  {shape}: map page {seconds:.2f} s (goal < 3 s), "
            f"{total / 1e6:.2f} MB per render ({plotly / 1e6:.2f} MB the figure)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, nargs="*", default=[], help="corpus sizes")
    parser.add_argument("--umap-sample", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-sample", action="store_true", help="skip the bundled sample")
    args = parser.parse_args()
    os.environ["GEM_APP_UMAP"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_sample:
            ws = app_state.open_workspace(Path(tmp) / "sample")
            app_state.ensure_sample_fit(ws)
            prep = prepare(ws.root, app_state.SAMPLE_FIT, args.umap_sample)
            report("sample", 5000, prep, time_map(ws.root, app_state.SAMPLE_FIT, args.repeats))
        for n in args.synthetic:
            root = Path(tmp) / f"synthetic-{n}"
            root.mkdir()
            start = time.perf_counter()
            workspace = synthetic_fit(root, n)
            print(f"synthetic {n:,}: fitted in {time.perf_counter() - start:.0f} s")
            prep = prepare(workspace, "synthetic", args.umap_sample)
            report("synthetic", n, prep, time_map(workspace, "synthetic", args.repeats))


if __name__ == "__main__":
    main()
