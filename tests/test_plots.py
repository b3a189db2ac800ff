import numpy as np
import pandas as pd
import plotly.io as pio
import pytest

from radiolib import map_figures, plots


def test_book_renderer_draws_with_the_pages_plotly_js_and_nothing_from_a_cdn():
    from plotly.offline import get_plotlyjs

    plots.setup_notebook()
    assert pio.renderers.default == "radiolib+plotly_mimetype"
    fig = plots.table_figure({"a": 1})
    bundle = pio.renderers["radiolib"].to_mimebundle(fig.to_dict())
    html = bundle["text/html"]
    assert "plotly-graph-div" in html and "Plotly.newPlot(" in html
    assert 'src="https://' not in html  # nothing fetched from the internet
    assert len(html) < 20_000 < len(get_plotlyjs())  # plotly.js is not embedded
    # plotly's own notebook renderer would load MathJax from a CDN for every figure
    stock = pio.renderers["notebook"].to_mimebundle(fig.to_dict())["text/html"]
    assert 'src="https://' in stock


def test_image_grid_rows_columns_and_outlines():
    rows = {"a": np.random.rand(3, 8, 8), "b": np.random.rand(2, 8, 8)}
    masks = np.zeros((3, 8, 8))
    masks[:, 2:5, 2:5] = 1
    fig = plots.image_grid(rows, column_titles=["x", "y", "z"], contours={"a": masks})
    kinds = [t.type for t in fig.data]
    assert kinds.count("heatmap") == 5 and kinds.count("contour") == 3
    contour = next(t for t in fig.data if t.type == "contour")
    assert contour.colorscale[0][1] == "red"  # outlines are drawn in red, not plotly's default
    z = np.asarray(fig.data[0].z)
    assert z.dtype == np.uint8 and (fig.data[0].zmin, fig.data[0].zmax) == (0, 255)
    # upright, and within half a grey level of the image
    assert np.abs(z / 255 - rows["a"][0][::-1]).max() <= 0.5 / 255 + 1e-12


def test_grey_levels_window_and_the_bytes_they_save():
    image = np.linspace(-0.5, 1.5, 64 * 64).reshape(64, 64)
    grey = plots.grey_levels(image)
    assert grey.dtype == np.uint8 and grey[-1, 0] == 0 and grey[0, -1] == 255  # clipped, upright
    assert plots.grey_levels(np.full((2, 2), 150.0), (100.0, 200.0))[0, 0] == 128
    import plotly.graph_objects as go

    images = np.random.rand(4, 64, 64)
    as_floats = len(pio.to_json(go.Figure([go.Heatmap(z=im) for im in images])))
    assert len(pio.to_json(plots.image_grid({"a": images}))) * 3 < as_floats


def test_embedding_panels_keep_each_points_colour():
    labels = np.array([0, 1, 1, 2])
    fig = map_figures.embedding_panels(
        {"raw": np.random.rand(4, 2), "code": np.random.rand(4, 2)},
        labels,
        ["p1", "p2", "p3", "p4"],
    )
    colours = {(t.xaxis, t.legendgroup): t.marker.color for t in fig.data}
    for lab in ("0", "1", "2"):
        assert colours[("x", lab)] == colours[("x2", lab)] == plots.colour(int(lab))
    assert sum(len(t.x) for t in fig.data) == 8


def test_slice_png_outlines_mask():
    from io import BytesIO

    from PIL import Image

    image = np.full((10, 10), 0.5)
    mask = np.zeros((10, 10))
    mask[3:7, 3:7] = 1
    png = Image.open(BytesIO(plots.slice_png(image, mask, scale=2))).convert("RGB")
    arr = np.asarray(png)
    assert arr.shape == (20, 20, 3)
    assert tuple(arr[6, 6]) == (255, 0, 0)  # boundary pixel (3, 3) scaled by 2
    assert tuple(arr[10, 10]) == (127, 127, 127)  # inside, not on the edge


def test_gene_matrix_orders_by_clustering():
    rng = np.random.default_rng(0)
    genes = rng.normal(size=(12, 40))
    genes[:6, :10] += 3
    fig = plots.gene_matrix_figure(genes, [f"P{i}" for i in range(12)], top=20)
    z = np.asarray(fig.data[0].z)
    assert z.shape == (12, 20)
    assert sorted(fig.data[0].y) == sorted(f"P{i}" for i in range(12))


def test_metric_bars_error_bars():
    table = pd.DataFrame(
        {"mse": [1.0, 2.0], "mse_low": [0.5, 1.5], "mse_high": [1.5, 3.0]}, index=["a", "b"]
    )
    fig = plots.metric_bars(table, ["mse"])
    np.testing.assert_allclose(fig.data[0].error_y.array, [0.5, 1.0])
    np.testing.assert_allclose(fig.data[0].error_y.arrayminus, [0.5, 0.5])


@pytest.mark.parametrize("n", [1, 5])
def test_slice_browser_builds_without_output_widgets(n):
    import ipywidgets as widgets

    box = plots.slice_browser(
        np.random.rand(n, 8, 8), np.ones((n, 8, 8)), [f"s{i}" for i in range(n)]
    )
    assert not any(isinstance(w, widgets.Output) for w in box.children)
    slider, caption, picture = box.children
    slider.value = n - 1
    assert caption.value == f"s{n - 1}" and picture.value[:4] == b"\x89PNG"


def test_table_figure_is_tall_enough_for_every_row():
    short = plots.table_figure({"a": 1, "b": 2}, title="t")
    many = plots.table_figure({f"k{i}": i for i in range(20)}, title="t")
    wrapped = plots.table_figure({"a": "x " * 200, "b": 2}, title="t")
    assert short.layout.height >= 40 + 28 + 2 * 22
    assert many.layout.height >= 40 + 28 + 20 * 22
    assert wrapped.layout.height > short.layout.height  # a long cell wraps onto more lines


def test_table_figure_shows_missing_values():
    frame = pd.DataFrame({"value": [1.5, np.nan]}, index=pd.Index(["a", "b"], name="k"))
    fig = plots.table_figure(frame)
    assert list(fig.data[0].cells.values[1]) == ["1.5", "nan"]


def test_convergence_figure_means_over_seeds_with_their_range():
    rows = [
        {"model": m, "seed": s, "step": step, "section": "table1", "measure": "mse", "value": v}
        for m, base in (("proposed", 0.02), ("baseline", 0.05))
        for s in (0, 1, 2)
        for step, v in ((200, base + 0.01 * s), (400, base + 0.02 * s))
    ]
    fig = plots.convergence_figure(pd.DataFrame(rows), ["table1/mse"], title="t")
    assert [t.name for t in fig.data] == ["proposed", "baseline"]
    proposed = fig.data[0]
    assert list(proposed.x) == [200, 400]
    assert list(proposed.y) == pytest.approx([0.03, 0.04])  # mean over the three seeds
    assert list(proposed.error_y.array) == pytest.approx([0.01, 0.02])  # up to the highest seed
    assert list(proposed.error_y.arrayminus) == pytest.approx([0.01, 0.02])


def test_sweep_figure_one_line_per_representation():
    sweep = pd.DataFrame(
        {
            "signal": [0.5, 1.0, 0.5, 1.0],
            "representation": ["raw genes", "raw genes", "proposed", "proposed"],
            "metric": ["ari"] * 4,
            "value": [0.0, 0.1, 0.3, 0.6],
        }
    )
    fig = map_figures.sweep_figure(sweep, ["ari"])
    assert [t.name for t in fig.data] == ["raw genes", "proposed"]
    assert list(fig.data[1].y) == [0.3, 0.6] and fig.data[1].error_y.array is None
