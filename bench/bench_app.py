"""Server-side timings of the app (AppTest): Map page render and tau-slider update.

    .venv/bin/python bench/bench_app.py                 # the bundled sample
    .venv/bin/python bench/bench_app.py --synthetic 200000
    .venv/bin/python bench/bench_app.py --synthetic 200000 --frozen   # + T / lambda sliders

With warm caches (the fit, its labels and scores computed once before timing), it
reports the time from a page request to a fully rendered Map page, and from a tau
slider change to the updated Mix & Export page. Goals: map < 3 s, slider < 150 ms;
on the synthetic corpus the map is capped (30,000 points) and the slider does not
depend on N.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import plotly.io
from streamlit.testing.v1 import AppTest

from gem_app.app import session_keys as keys
from gem_app.app import state as app_state
from gem_app.app.bundle import APP_ENTRY
from gem_app.core.reassign import q_from_scores
from gem_app.viz import masses_shift_figure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: its tests package
from tests.synthetic_workspace import synthetic_fit  # noqa: E402

ENTRY = str(APP_ENTRY)  # pages/streamlit_app.py


def synthetic_workspace(root: Path, n: int, k: int = 32, d: int = 64, seed: int = 0) -> str:
    """A synthetic corpus of ``n`` documents (K topics of words, Gaussian blobs on the sphere), fitted."""
    workspace = synthetic_fit(
        root, n, k=k, d=d, vocabulary=400, words_per_doc=6, seed=seed, max_iter=30
    )
    return str(workspace)


def _session(workspace: str, fit: str | None) -> AppTest:
    """The app in AppTest on ``workspace`` (UMAP off), showing ``fit`` (None: the default)."""
    os.environ["GEM_WORKSPACE"] = workspace
    os.environ["GEM_APP_UMAP"] = "0"
    at = AppTest.from_file(ENTRY, default_timeout=1800)
    at.run()
    if fit is not None:
        at.selectbox(key=keys.FIT_NAME).set_value(fit).run()
    return at


def time_app(workspace: str, fit: str | None, repeats: int = 5) -> dict:
    at = _session(workspace, fit)
    at.switch_page("map.py").run()  # warm: labels, q, GIS
    at.switch_page("mix.py").run()  # warm: domains, scores
    assert not at.exception, [e.value for e in at.exception]
    map_times, slider_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        at.switch_page("map.py").run()
        map_times.append(time.perf_counter() - start)
    at.switch_page("mix.py").run()
    for i in range(repeats):
        start = time.perf_counter()
        at.slider(key=keys.MIX_TAU).set_value(1.5 + 0.5 * i).run()
        slider_times.append(time.perf_counter() - start)
    assert not at.exception, [e.value for e in at.exception]
    return {"map_s": statistics.median(map_times), "tau_slider_s": statistics.median(slider_times)}


FROZEN_MOVES = [(1.05, 1.0), (1.1, 1.0), (1.1, 1.2), (1.15, 1.2), (1.15, 1.5), (1.2, 1.5)]


def time_frozen_sliders(workspace: str, fit: str | None) -> dict:
    """Mix & Export's frozen-geometry sliders (T, lambda), one step at a time, warm caches.

    Timings per move (medians): ``page_s``, the whole page rerun under AppTest (which does
    not rerun fragments alone); ``fragment_s``, what the browser waits for (the section is a
    fragment: the q-step, its figure and the figure's JSON); ``solve_s``, the q-step alone;
    ``before_s``, the q-step as it was solved before (:func:`q_from_scores` from the fit's
    dual, every pass an exp over the N x K scores).
    """
    at = _session(workspace, fit)
    at.switch_page("mix.py").run()  # warm: domains, scores, the solver
    assert not at.exception, [e.value for e in at.exception]
    page = []
    for T, lam in FROZEN_MOVES:
        start = time.perf_counter()
        at.slider(key=keys.MIX_T).set_value(T)
        at.slider(key=keys.MIX_LAMBDA).set_value(lam).run()
        page.append(time.perf_counter() - start)
    assert not at.exception, [e.value for e in at.exception]
    view = app_state.fit_view(app_state.open_workspace(workspace), fit or app_state.SAMPLE_FIT)
    fragment, solve, before = [], [], []
    for T, lam in FROZEN_MOVES:
        T, lam = T + 0.5, lam + 0.5  # positions the view has not cached yet
        start = time.perf_counter()
        moved = view.reassign(T, lam)
        solve.append(time.perf_counter() - start)
        plotly.io.to_json(masses_shift_figure(view.masses, moved.masses, view.label_names))
        fragment.append(time.perf_counter() - start)
        start = time.perf_counter()
        q_from_scores(
            view.scores, view.weights, temperature=T, balance=lam, dual_start=view.model.dual_
        )
        before.append(time.perf_counter() - start)
    return {
        "page_s": statistics.median(page),
        "fragment_s": statistics.median(fragment),
        "solve_s": statistics.median(solve),
        "before_s": statistics.median(before),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--synthetic", type=int, default=0, help="also time an N-document synthetic corpus"
    )
    parser.add_argument(
        "--frozen",
        action="store_true",
        help="also time the frozen-geometry sliders (T, lambda) of Mix & Export",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = app_state.open_workspace(Path(tmp) / "sample_ws")
        app_state.ensure_sample_fit(ws)
        result = time_app(str(ws.root), None)
        print(
            f"sample (5,000 docs): map {result['map_s']:.2f} s (goal < 3 s), "
            f"tau slider {1000 * result['tau_slider_s']:.0f} ms (goal < 150 ms)"
        )
        if args.frozen:
            _print_frozen("sample (5,000 docs)", time_frozen_sliders(str(ws.root), None))
        if args.synthetic:
            root = Path(tmp) / "synthetic"
            root.mkdir()
            workspace = synthetic_workspace(root, args.synthetic)
            result = time_app(workspace, "synthetic")
            print(
                f"synthetic ({args.synthetic:,} docs, map capped at 30,000): map {result['map_s']:.2f} s, "
                f"tau slider {1000 * result['tau_slider_s']:.0f} ms"
            )
            if args.frozen:
                frozen = time_frozen_sliders(workspace, "synthetic")
                _print_frozen(f"synthetic ({args.synthetic:,} docs)", frozen)


def _print_frozen(what: str, result: dict) -> None:
    print(
        f"{what}: frozen-geometry T/lambda slider {1000 * result['fragment_s']:.0f} ms "
        f"(the fragment: q-step + figure + JSON; goal < 150 ms), q-step "
        f"{1000 * result['solve_s']:.0f} ms (before: {1000 * result['before_s']:.0f} ms), "
        f"whole page rerun {1000 * result['page_s']:.0f} ms"
    )


if __name__ == "__main__":
    main()
