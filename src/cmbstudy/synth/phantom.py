"""One synthetic subject: anatomy, susceptibility sources and the simulated scan."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .acquisition import ScanGeometry, Site, TissueMaps, acquire, simulate_signal
from .anatomy import TemplateSpace, random_transform, warp_maps
from .susceptibility import (
    TISSUE,
    AirSphere,
    FocalSource,
    Tube,
    make_venous_tree,
    place_air,
    place_calcifications,
    place_cmbs,
    tube_occupancy,
)

__all__ = ["MIMIC_LABELS", "SubjectScan", "simulate_subject", "scan_subject", "slab_z_range"]

MIMIC_LABELS: dict[int, str] = {0: "none", 1: "vein", 2: "calcification", 3: "air-tissue artefact", 4: "deep-nuclei iron"}


@dataclass
class SubjectScan:
    """Everything written for one subject, on the scan grid (X, Y, Z)."""

    magnitude: np.ndarray  # float32 (SWI: phase-mask enhanced)
    phase: np.ndarray  # float32 radians, high-pass filtered
    cmb_mask: np.ndarray  # uint8 0/1
    brain: np.ndarray  # uint8 0/1
    mimic: np.ndarray  # uint8, MIMIC_LABELS
    cmbs: list[FocalSource]
    calcifications: list[FocalSource]
    veins: list[Tube]
    air: list[AirSphere]
    geometry: ScanGeometry


def _tissue_maps(template: TemplateSpace, transform, geom: ScanGeometry, veins: list[Tube], rng: np.random.Generator):
    model = geom.model
    pts = model.points()
    t = warp_maps(template, transform, model)
    deep = t["deep_weight"] * t["gm"]  # iron-rich nuclei: the GM's own edge, no box (anatomy docstring)
    x = np.abs(pts[:, 0]).reshape(model.shape)
    iron = rng.uniform(0.06, 0.16) * (0.6 + 0.6 * np.exp(-(((x - 18.0) / 7.0) ** 2)))  # pallidum-putamen peak
    chi = t["gm"] * TISSUE["gm"][0] + t["wm"] * TISSUE["wm"][0] + deep * iron
    m0 = t["csf"] * TISSUE["csf"][1] + t["gm"] * TISSUE["gm"][1] + t["wm"] * TISSUE["wm"][1]
    frac = np.maximum(t["csf"] + t["gm"] + t["wm"], 1e-3)
    r2s = (t["csf"] * TISSUE["csf"][2] + t["gm"] * TISSUE["gm"][2] + t["wm"] * TISSUE["wm"][2]) / frac
    r2s = r2s + deep * 150.0 * iron
    vein = tube_occupancy(veins, model) * (t["brain"] > 0.05)
    chi = (1 - vein) * chi + vein * TISSUE["vein"][0]
    m0 = (1 - vein) * m0 + vein * TISSUE["vein"][1]
    r2s = (1 - vein) * r2s + vein * TISSUE["vein"][2]
    maps = TissueMaps(chi.astype(np.float32), m0.astype(np.float32), r2s.astype(np.float32))
    return maps, t["brain"], t["deep_gm"].astype(np.float32), vein


def simulate_subject(
    template: TemplateSpace, geom: ScanGeometry, site: Site, n_cmb: int, rng: np.random.Generator,
    mimic_scale: float = 1.0, snr_scale: float = 1.0, cmb_chi_scale: float = 1.0,
) -> SubjectScan:
    """Draw one subject with ``n_cmb`` CMBs and simulate its scan at ``site``.

    Args:
        template: template-space maps (:func:`~.anatomy.load_template_space`).
        geom: scan geometry (subject mm; the slab limits where lesions are placed).
        site: B0, TE, modality, noise and bias of the scanner.
        n_cmb: CMBs to place (fewer only if no free place is found in 200 tries).
        rng: the subject's generator (everything random is drawn from it).
        mimic_scale: multiplies the numbers of cortical / medullary veins and calcifications.
        snr_scale: multiplies the site's SNR.
        cmb_chi_scale: multiplies every CMB's susceptibility.
    """
    transform = random_transform(rng)
    veins = make_venous_tree(template, transform, rng, int(round(40 * mimic_scale)), int(round(150 * mimic_scale)))
    z_range = slab_z_range(geom)
    cmbs = place_cmbs(template, transform, rng, n_cmb, z_range, veins, cmb_chi_scale)
    calcs = place_calcifications(template, transform, rng, int(rng.poisson(1.0 * mimic_scale)), z_range, cmbs)
    air = place_air(template, transform, rng)
    return scan_subject(template, transform, geom, site, veins, cmbs, calcs, air, rng, snr_scale=snr_scale)


def slab_z_range(geom: ScanGeometry) -> tuple[float, float]:
    """The scanned slab's extent along subject z (mm): where lesions may be placed."""
    sz = geom.scan.spacing[2]
    z0 = geom.scan.origin[2] - sz / 2
    return z0, z0 + geom.scan.shape[2] * sz


def scan_subject(
    template: TemplateSpace, transform, geom: ScanGeometry, site: Site, veins: list[Tube], cmbs: list[FocalSource],
    calcs: list[FocalSource], air: list[AirSphere], rng: np.random.Generator,
    noise_rng: np.random.Generator | None = None, snr_scale: float = 1.0,
) -> SubjectScan:
    """Scan a drawn subject (its anatomy ``transform``, veins and sources, in subject mm) at ``site``.

    The tissue's iron comes from ``rng``, the acquisition's noise from ``noise_rng`` (default ``rng``): two
    sessions of one brain share the first and not the second (:mod:`cmbstudy.synth.follow_up`).
    """
    maps, brain_p, deep, vein = _tissue_maps(template, transform, geom, veins, rng)
    sources = cmbs + calcs
    signal = simulate_signal(maps, geom, sources, air, site.b0_tesla, site.te_ms)
    b = geom.z_factor
    blk = lambda a: a.reshape(a.shape[0], a.shape[1], -1, b)  # noqa: E731
    brain = blk(brain_p).mean(axis=3) > 0.5
    magnitude, phase = acquire(signal.image, brain, geom.scan.spacing, site, noise_rng or rng, snr_scale)
    mimic = np.zeros(geom.scan.shape, dtype=np.uint8)
    mimic[(blk(deep).mean(axis=3) > 0.5) & brain] = 4
    mimic[(signal.air_attenuation < 0.6) & brain] = 3
    mimic[(blk(vein).max(axis=3) > 0.2) & brain] = 1
    n = len(cmbs)
    mimic[signal.labels > n] = 2
    cmb_mask = ((signal.labels >= 1) & (signal.labels <= n)).astype(np.uint8)
    brain |= cmb_mask.astype(bool)  # a CMB at the brain edge stays inside the brain mask
    return SubjectScan(magnitude, phase, cmb_mask, brain.astype(np.uint8), mimic, cmbs, calcs, veins, air, geom)
