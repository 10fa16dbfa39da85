"""The scan viewers' data and pages (cmbstudy.figures.viewer, viewer_marks, data.viewer_assets), without a browser.

The browser checks are in tests/integration/test_viewer_browser.py.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from cmbstudy.data.viewer_assets import (
    ASSET_FILES,
    MATHJAX_SCRIPT,
    NODE_MODULES_ENV,
    find_niivue,
    install_mathjax,
    install_viewer_assets,
    niivue_version,
)
from cmbstudy.errors import InputError
from cmbstudy.figures.viewer import (
    ViewerEntry,
    ViewerMark,
    ViewerScan,
    content_box,
    encode_nifti,
    outline_regions,
    scan_payload,
    viewer_html,
    write_linked_viewer,
)
from cmbstudy.figures.viewer_marks import cohort_scan, detection_scan, equivalent_diameter, evaluation_scan

SHAPE = (31, 32, 33)  # uneven, so that an axis mix-up fails


def _decode(text: str) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(text)))


def test_the_outline_rings_a_lesion_in_its_own_slices_and_leaves_it_uncovered() -> None:
    regions = np.zeros(SHAPE, dtype=np.int32)
    regions[10, 12, 5] = 1  # a 1-voxel CMB
    regions[20:22, 20:22, 7:9] = 2  # a 2 x 2 x 2 one
    ring = outline_regions(regions, radius=2)
    assert ring.dtype == np.uint16 and ring.shape == SHAPE
    assert not ring[regions > 0].any()  # the lesion itself stays visible
    assert set(np.unique(ring[:, :, 5])) == {0, 1} and set(np.unique(ring[:, :, 7])) == {0, 2}
    assert not ring[:, :, [4, 6, 9]].any()  # nothing in slices the lesions do not reach
    # the 1-voxel lesion: its 8 in-plane neighbours are left free, the ring lies 2 voxels out
    assert ring[9:12, 11:14, 5].sum() == 0 and ring[12, 12, 5] == 1 and ring[10, 14, 5] == 1
    assert not outline_regions(np.zeros(SHAPE, dtype=np.int32)).any()
    with pytest.raises(InputError, match="3D labels"):
        outline_regions(np.zeros((4, 4)))


def test_an_image_is_windowed_to_eight_bits_with_its_affine_and_the_same_text_each_time() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, SHAPE).astype(np.float32)
    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    text = encode_nifti(image, affine)
    decoded = _decode(text)
    data = np.asarray(decoded.dataobj)
    assert data.dtype == np.uint8 and data.shape == SHAPE
    np.testing.assert_allclose(decoded.affine, affine)
    assert data.min() == 1 and data.max() == 255  # the 0.5-99.5 percentile window; 0 would be transparent
    assert set(np.unique(np.asarray(_decode(encode_nifti(np.full(SHAPE, 7.0), affine)).dataobj))) == {128}
    assert float(decoded.header["cal_max"]) == 255
    assert np.corrcoef(data.ravel(), image.ravel())[0, 1] > 0.99
    assert encode_nifti(image, affine) == text
    labels = _decode(encode_nifti(np.arange(np.prod(SHAPE)).reshape(SHAPE) % 256, affine, labels=True))
    assert np.asarray(labels.dataobj).dtype == np.uint8 and int(np.asarray(labels.dataobj).max()) == 255
    with pytest.raises(InputError, match="0..255"):
        encode_nifti(np.full(SHAPE, 300), affine, labels=True)


def test_a_scan_is_cropped_to_its_head_and_marks_and_its_voxels_stay_on_the_scan_s_grid() -> None:
    rng = np.random.default_rng(0)
    image = np.abs(rng.normal(0, 5, SHAPE))  # background noise
    image[8:20, 10:24, 6:27] = 100 + rng.normal(0, 5, (12, 14, 21))  # the head
    image[1, 1, 1] = 150  # a bright speck of noise, not the head
    regions = np.zeros(SHAPE, dtype=np.int32)
    regions[27, 15, 16] = 1  # a mark outside the head
    assert content_box(image, regions, margin=2) == (slice(6, 30), slice(8, 26), slice(4, 29))
    assert content_box(np.ones(SHAPE), regions) == tuple(slice(0, n) for n in SHAPE)
    affine = np.diag([0.5, 0.6, 2.0, 1.0])
    affine[:3, 3] = [-10.0, -20.0, -30.0]
    scan = ViewerScan("sub-1", "one", (("magnitude", image),), affine, regions,
                      (ViewerMark("FP", "FP 1", (27, 15, 16)),))
    payload = scan_payload(scan)
    box = content_box(image, regions, [(27, 15, 16)])
    origin = [b.start for b in box]
    assert payload["origin"] == origin and payload["marks"][0]["voxel"] == [27, 15, 16]  # on the scan's grid
    shown = _decode(payload["images"][0]["data"])
    assert shown.shape == tuple(b.stop - b.start for b in box)
    # the shown volume's first voxel lies where the scan's voxel ``origin`` lies
    np.testing.assert_allclose(shown.affine[:3, 3], affine[:3, :3] @ origin + affine[:3, 3])
    assert _decode(payload["outline"]).shape == shown.shape


def _lesions(labels: np.ndarray, probs: list[float]) -> SimpleNamespace:
    n = int(labels.max())
    centroids = np.array([np.argwhere(labels == k + 1).mean(axis=0) for k in range(n)]).reshape(n, 3)
    return SimpleNamespace(labels=labels, centroids=centroids, n=n,
                           n_voxels=np.array([(labels == k + 1).sum() for k in range(n)]), max_prob=np.array(probs))


def _evaluation() -> SimpleNamespace:
    pred, ref = np.zeros(SHAPE, dtype=np.int32), np.zeros(SHAPE, dtype=np.int32)
    pred[5:7, 5:7, 5] = 1  # matches reference 2 (a TP)
    pred[25, 25, 20] = 2  # a false positive
    ref[20, 10, 10] = 1  # missed
    ref[5:7, 6:8, 5] = 2
    match = SimpleNamespace(pairs=np.array([[0, 1]]), fp=np.array([1]), fn=np.array([0]))
    return SimpleNamespace(pred=_lesions(pred, [0.9, 0.7]), ref=_lesions(ref, [1.0, 1.0]), match=match)


def test_an_evaluation_gives_tp_fp_fn_marks_and_a_tp_covers_prediction_and_reference() -> None:
    evaluation = _evaluation()
    image = np.ones(SHAPE, dtype=np.float32)
    scan = evaluation_scan("sub-1", "one", [("magnitude", image)], np.eye(4), evaluation,
                           notes={("FP", 1): "on a vein"}, focus=("FN", 0))
    assert [(m.kind, m.name) for m in scan.marks] == [("TP", "TP 1"), ("FP", "FP 1"), ("FN", "FN 1")]
    tp, fp, fn = scan.marks
    assert tp.probability == pytest.approx(0.9) and fp.probability == pytest.approx(0.7) and fn.probability is None
    assert fp.note == "on a vein" and fn.voxel == (20, 10, 10) and fp.voxel == (25, 25, 20)
    assert tp.diameter_mm == pytest.approx(equivalent_diameter(4, 1.0))  # the reference's 4 voxels
    assert set(np.unique(scan.regions[5:7, 5:8, 5])) == {1}  # the prediction and the reference together
    assert scan.regions[25, 25, 20] == 2 and scan.regions[20, 10, 10] == 3
    assert scan.focus == 3
    payload = scan_payload(scan)
    assert payload["focus"] == 3 and [m["id"] for m in payload["marks"]] == [1, 2, 3]
    assert payload["colors"] == {"FN": [255, 0, 0], "FP": [255, 255, 0], "TP": [30, 144, 255]}
    # the outline holds each ring's kind, 1-based in outline_kinds: the FN's ring is code 1, the FP's 2
    assert payload["outline_kinds"] == ["FN", "FP", "TP"]
    outline = np.asarray(_decode(payload["outline"]).dataobj)
    assert outline.dtype == np.uint8 and set(np.unique(outline)) == {0, 1, 2, 3}
    assert outline[20, 12, 10] == 1 and outline[27, 25, 20] == 2 and outline[20, 10, 10] == 0


def test_a_detection_is_shown_on_the_canonical_grid_whatever_the_scan_s_orientation() -> None:
    # stored L-P-S with the first two axes swapped: voxel (i, j, k) lies at x = -j, y = -i, z = 2.5 k (mm)
    affine = np.array([[0.0, -1.0, 0, 0], [-1.0, 0, 0, 0], [0, 0, 2.5, 0], [0, 0, 0, 1]])
    labels = np.zeros(SHAPE, dtype=np.int16)
    labels[3, 4, 5], labels[10, 11, 12] = 1, 2
    image = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    table = pd.DataFrame({"lesion_id": [2, 1], "x_vox": [10.0, 3.0], "y_vox": [11.0, 4.0], "z_vox": [12.0, 5.0],
                          "max_prob": [0.6, np.nan], "equivalent_diameter_mm": [1.2, 1.2],
                          "location": ["lobar", np.nan]})
    scan = detection_scan("sub-2", "two", image, affine, labels, table)
    canonical = nib.as_closest_canonical(nib.Nifti1Image(labels, affine))
    np.testing.assert_allclose(scan.affine, canonical.affine)
    assert scan.regions.shape == canonical.shape == (SHAPE[1], SHAPE[0], SHAPE[2])
    for mark, label in zip(scan.marks, (1, 2)):
        assert scan.regions[mark.voxel] == label  # the crosshair lands on the lesion in the array shown
    assert [(m.name, m.note) for m in scan.marks] == [("CMB 1", ""), ("CMB 2", "lobar")]
    payload = scan_payload(scan)
    assert payload["marks"][0]["probability"] is None and payload["marks"][1]["probability"] == pytest.approx(0.6)
    with pytest.raises(InputError, match="names lesions"):
        detection_scan("sub-2", "two", image, affine, labels, table.iloc[:1])


def test_the_cohort_example_marks_each_cmb_and_the_nearest_piece_of_each_mimic() -> None:
    cmb = np.zeros(SHAPE, dtype=bool)
    cmb[10, 10, 10] = True
    mimic = np.zeros(SHAPE, dtype=np.int64)
    mimic[12:20, 10, 10] = 1  # a vein 2 voxels from the CMB
    mimic[28, 28, 28] = 1  # another vein, far away
    mimic[0, 0, 0] = 2  # a calcification
    scan = cohort_scan("sub-3", "three", [("magnitude", np.ones(SHAPE))], np.eye(4), cmb, mimic,
                       {1: "vein", 2: "calcification"})
    assert [(m.kind, m.voxel) for m in scan.marks] == [("CMB", (10, 10, 10)), ("vein", (12, 10, 10)),
                                                         ("calcification", (0, 0, 0))]
    assert scan.marks[1].note == "2 voxels from CMB 1"
    assert scan.regions[15, 10, 10] == 2 and scan.regions[28, 28, 28] == 0  # only the nearest vein


def _scan(key: str = "sub-1") -> ViewerScan:
    regions = np.zeros(SHAPE, dtype=np.int32)
    regions[4, 5, 6] = 1
    return ViewerScan(key, f"{key} <b>", (("magnitude", np.ones(SHAPE)),), np.eye(4), regions,
                      (ViewerMark("TP", "TP 1", (4, 5, 6), 0.8, 1.2),), caption="a & b")


def test_the_page_loads_nothing_from_the_network_and_escapes_what_it_shows() -> None:
    fragment = viewer_html([_scan("sub-1"), _scan("sub-2")], "../viewer")
    assert not re.search(r"(src|href)=\"(https?:)?//", fragment)
    assert re.findall(r'<script src="([^"]+)"', fragment) == ["../viewer/niivue.umd.js", "../viewer/cmb-viewer.js"]
    shown = re.sub(r'<script type="application/json".*?</script>', "", fragment, flags=re.S)
    assert "sub-1 &lt;b&gt;" in shown and "a &amp; b" in shown and "<b>" not in shown  # the JSON is not shown
    assert fragment.count('<tr data-scan-part="sub-1" data-mark="1"') == 1
    data = json.loads(re.search(r'class="cmb-viewer-data">(.*?)</script>', fragment).group(1))
    assert [s["key"] for s in data["scans"]] == ["sub-1", "sub-2"] and data["scans"][0]["images"][0]["data"]
    with pytest.raises(InputError, match="unique"):
        viewer_html([_scan(), _scan()], "viewer")
    with pytest.raises(InputError, match="at least one"):
        viewer_html([], "viewer")
    with pytest.raises(InputError, match="no volumes"):
        viewer_html([ViewerEntry("sub-1", "one", ())], "viewer")
    with pytest.raises(InputError, match="letters, digits"):
        scan_payload(_scan("sub 1"))
    with pytest.raises(InputError, match="letters, digits"):
        viewer_html([ViewerEntry('x" onload="alert(1)', "one", ())], "viewer", payloads=["a.js"])
    with pytest.raises(InputError, match="one per scan"):
        viewer_html([_scan("sub-1"), _scan("sub-2")], "viewer", payloads=["a.js"])
    sneaky = ViewerScan("sub-3", "</script><script>alert(1)</script>", (("magnitude", np.ones(SHAPE)),), np.eye(4),
                        np.zeros(SHAPE, dtype=np.int32), ())
    data = re.search(r'class="cmb-viewer-data">(.*?)</script>', viewer_html([sneaky], "viewer"), re.S).group(1)
    assert "<" not in data and json.loads(data)["scans"][0]["title"] == sneaky.title


def test_a_linked_viewer_reads_each_scan_from_its_own_file_and_drops_stale_ones(tmp_path: Path) -> None:
    data_dir = tmp_path / "viewer-data" / "qualitative"
    data_dir.mkdir(parents=True)
    (data_dir / "sub-9.js").write_text("stale")
    fragment = write_linked_viewer([_scan("sub-1")], "../viewer", data_dir)
    assert sorted(p.name for p in data_dir.iterdir()) == ["sub-1.js"]
    assert (data_dir / "sub-1.js").read_text().startswith('cmbViewer.register("sub-1",{')
    data = json.loads(re.search(r'class="cmb-viewer-data">(.*?)</script>', fragment).group(1))
    assert data["scans"] == [{"key": "sub-1", "title": "sub-1 <b>", "src": "../viewer/data/qualitative/sub-1.js"}]


def test_the_assets_come_with_niivue_s_version_and_licence(tmp_path: Path) -> None:
    files = install_viewer_assets(tmp_path / "viewer")
    assert sorted(files) == sorted(ASSET_FILES) and all(p.is_file() for p in files.values())
    notice = files["NOTICE.txt"].read_text()
    assert f"@niivue/niivue {niivue_version()}, licence BSD-2-Clause" in notice and "integrity sha512-" in notice
    assert files["niivue.umd.js"].stat().st_size > 1_000_000  # the bundle, not a stub


def test_mathjax_comes_with_its_fonts(tmp_path: Path) -> None:
    script = install_mathjax(tmp_path / "mathjax")
    assert script.name == MATHJAX_SCRIPT and script.stat().st_size > 500_000
    assert len(list((tmp_path / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))) > 10
    assert "licence Apache-2.0" in (tmp_path / "mathjax" / "NOTICE.txt").read_text()


def test_a_missing_npm_package_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NODE_MODULES_ENV, raising=False)
    with pytest.raises(InputError, match="npm ci"):
        find_niivue(roots=[tmp_path])
    node_modules = find_niivue().parents[3]
    assert node_modules.name == "node_modules"
    monkeypatch.setenv(NODE_MODULES_ENV, str(node_modules))
    assert find_niivue(roots=[tmp_path]) == node_modules / "@niivue" / "niivue" / "dist" / "niivue.umd.js"
