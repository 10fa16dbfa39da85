"""Susceptibility, proton density and R2* of one synthetic subject.

Everything is placed in template (MNI) millimetres, where the tissue maps are
known, and mapped into the subject with :meth:`SubjectTransform.inverse`:

* tissue baselines (ppm, relative to CSF): GM +0.03, WM -0.02, deep-nuclei iron
  +0.06 to +0.16 (Liu 2015 QSM ranges);
* a procedural venous tree: superior sagittal sinus along the brain's upper
  midline, internal cerebral and thalamostriate veins, cortical veins marched
  along the surface towards the vertex, medullary veins running outwards from
  the ventricle walls at random elevation (end-on on thick axial slices they
  are dots). Venous blood +0.35 ppm, short T2*;
* CMBs (:class:`FocalSource`): round or ovoid, equal-volume diameter 2-10 mm
  (85 % in 2-5 mm), chi 0.1-2 ppm (median ~0.45), lobar / deep / infratentorial,
  never in CSF, in a vein or touching another CMB;
* diamagnetic calcifications (-0.1 to -0.5 ppm) in deep nuclei and choroid plexus;
* air spheres (-9.4 ppm) just outside the brain at the skull base (sphenoid,
  frontal sinus, mastoid air cells), whose analytic fields make the air-tissue artefacts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from .anatomy import SubjectTransform, TemplateSpace, load_template_space

__all__ = [
    "TISSUE",
    "LOCATIONS",
    "FocalSource",
    "Tube",
    "AirSphere",
    "make_venous_tree",
    "place_cmbs",
    "place_calcifications",
    "place_air",
    "tube_occupancy",
    "draw_cmb_diameters",
    "CMB_DIAMETER_MM",
    "CMB_COMMON_DIAMETER_MM",
    "CMB_COMMON_SHARE",
    "CMB_CHI_PPM",
    "CMB_CHI_MEDIAN_PPM",
    "REGION_MARGIN_MM",
]

# (chi ppm rel. CSF, proton density, R2* at 3 T in 1/s)
TISSUE: dict[str, tuple[float, float, float]] = {
    "csf": (0.0, 1.00, 3.0),
    "gm": (0.03, 0.86, 17.0),
    "wm": (-0.02, 0.72, 21.0),
    "vein": (0.35, 0.85, 55.0),
    "cmb": (0.0, 0.70, 300.0),  # chi drawn per lesion
    "calcification": (0.0, 0.25, 150.0),  # chi drawn per lesion
}
LOCATIONS: tuple[str, ...] = ("lobar", "deep", "infratentorial")
_LOCATION_P = (0.6, 0.25, 0.15)
AIR_CHI_PPM = -9.4
#: Smallest and largest equal-volume diameter of a CMB (mm).
CMB_DIAMETER_MM: tuple[float, float] = (2.0, 10.0)
#: Diameter (mm) up to which the common CMBs are drawn uniformly, and their share; the rest lie above it.
CMB_COMMON_DIAMETER_MM = 5.0
CMB_COMMON_SHARE = 0.85
#: Range of a CMB's susceptibility (ppm relative to CSF, before ``synth.cmb_chi_scale``) and the
#: median of the log-normal draw clipped to it.
CMB_CHI_PPM: tuple[float, float] = (0.1, 2.0)
CMB_CHI_MEDIAN_PPM = 0.45
#: Margin of the placement regions (mm): the deep grey nuclei widened by it make the deep zone, and
#: lobar CMBs keep at least this far from the infratentorial region.
REGION_MARGIN_MM = 2.0


@dataclass(frozen=True)
class FocalSource:
    """A compact axis-aligned ellipsoid (CMB or calcification) in subject mm."""

    kind: str  # "cmb" | "calcification"
    center_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    chi_ppm: float
    location: str  # lobar | deep | infratentorial | choroid (calcification)

    @property
    def diameter_mm(self) -> float:
        """Equal-volume diameter in mm."""
        return float(2.0 * np.prod(self.semi_axes_mm) ** (1.0 / 3.0))

    @property
    def volume_mm3(self) -> float:
        return float(4.0 / 3.0 * np.pi * np.prod(self.semi_axes_mm))


@dataclass(frozen=True)
class Tube:
    """A vein: a polyline in subject mm with a radius (mm) at each point."""

    points: np.ndarray  # (n, 3)
    radii: np.ndarray  # (n,)


@dataclass(frozen=True)
class AirSphere:
    """An air-filled sphere outside the brain (subject mm)."""

    center_mm: tuple[float, float, float]
    radius_mm: float


@functools.lru_cache(maxsize=2)
def _candidates(resolution: int) -> dict[str, np.ndarray]:
    """(N, 3) template-mm voxel centres for each placement class."""
    t = load_template_space(resolution)
    vox = max(1, int(round(REGION_MARGIN_MM / t.spacing)))
    tissue = (t.brain > 0.9) & (t.csf < 0.2)
    supra = ~ndimage.binary_dilation(t.infratentorial, iterations=vox)
    deep_zone = ndimage.binary_dilation(t.deep_gm, iterations=vox)
    ijk = np.indices(t.brain.shape).reshape(3, -1).T.astype(np.float64)
    mm = (ijk @ t.affine[:3, :3].T + t.affine[:3, 3]).reshape(*t.brain.shape, 3)
    z = mm[..., 2]
    masks = {
        "lobar": tissue & supra & ~deep_zone & (t.depth > 2) & (t.depth < 14) & (z > -25),
        "deep": tissue & deep_zone,
        "infratentorial": tissue & t.infratentorial & (t.depth > 3),
        "surface": (t.depth > 1) & (t.depth < 3.5) & (t.gm > 0.3) & (z > -15) & supra,
        "ventricle_wall": (t.wm > 0.5) & ndimage.binary_dilation(t.ventricles, iterations=2 * vox) & ~t.ventricles,
        "choroid": t.ventricles & (mm[..., 1] < -28),
        "deep_nuclei": t.deep_gm & (t.depth > 20),
    }
    return {name: mm[m] for name, m in masks.items()}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def _cortical_veins(t: TemplateSpace, starts: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """March from surface points towards the vertex, kept ~2 mm under the surface (template mm)."""
    p = starts.copy()
    target = np.stack([np.zeros(len(p)), p[:, 1] * 0.9 - 10.0, np.full(len(p), 75.0)], axis=1)
    direction = _unit(target - p)
    paths, alive = [p.copy()], np.ones(len(p), bool)
    for _ in range(45):
        grad = np.stack([t.sample(g, p) for g in t.depth_grad], axis=1)
        normal = _unit(grad)
        direction = _unit(direction + 0.35 * rng.normal(size=p.shape) + 0.25 * _unit(target - p))
        direction = _unit(direction - np.einsum("ij,ij->i", direction, normal)[:, None] * normal)
        step = p + 2.0 * direction
        depth = t.sample(t.depth, step)
        step += (2.0 - depth)[:, None] * normal
        alive &= (t.sample(t.brain, step) > 0.3) & (np.abs(step[:, 0]) > 4.0)
        p = np.where(alive[:, None], step, p)
        paths.append(p.copy())
    stacked = np.stack(paths, axis=1)
    out = []
    for path in stacked:
        keep = np.concatenate([[True], np.any(np.diff(path, axis=0) != 0, axis=1)])
        if keep.sum() >= 4:
            out.append(path[keep])
    return out


def _ray_to_surface(t: TemplateSpace, start: np.ndarray, direction: np.ndarray, extra: float) -> np.ndarray:
    """First point along a ray where the brain ends, pushed ``extra`` mm further out."""
    d = _unit(direction)
    steps = start + np.arange(0, 150, 1.0)[:, None] * d
    inside = t.sample(t.brain, steps) > 0.5
    last = int(np.nonzero(inside)[0].max()) if inside.any() else 0
    return steps[last] + extra * d


def make_venous_tree(
    t: TemplateSpace, transform: SubjectTransform, rng: np.random.Generator, n_cortical: int, n_medullary: int
) -> list[Tube]:
    """Sinus, deep, cortical and medullary veins of one subject, in subject mm."""
    tubes: list[tuple[np.ndarray, np.ndarray]] = []
    # Superior sagittal sinus: 3 mm outside the upper midline surface.
    centre = np.array([0.0, -20.0, 10.0])
    angles = np.deg2rad(np.linspace(20, 200, 40))
    sss = np.array([_ray_to_surface(t, centre, np.array([0.0, np.cos(a), np.sin(a)]), 3.5) for a in angles])
    tubes.append((sss, np.linspace(2.0, 4.0, len(sss)) * rng.uniform(0.9, 1.1)))
    # Transverse sinuses: along the lower occipital surface to each side.
    for side in (-1.0, 1.0):
        arc = np.deg2rad(np.linspace(0, 70, 14))
        rays = np.stack([side * np.sin(arc), -np.cos(arc), np.full(len(arc), -0.25)], 1)
        pts = np.array([_ray_to_surface(t, np.array([0.0, -45.0, -15.0]), r, 3.0) for r in rays])
        tubes.append((pts, np.full(len(pts), 3.0)))
    # Internal cerebral veins (paired, above the thalami) and thalamostriate veins.
    for side in (-1.0, 1.0):
        j = rng.normal(0, 1.0, 3)
        icv = np.linspace([side * 3.0, 2.0, 16.0], [side * 2.0, -40.0, 8.0], 10) + j
        tubes.append((icv, np.full(10, rng.uniform(1.1, 1.5))))
        tsv = np.linspace([side * 16.0, 6.0, 20.0], [side * 4.0, 1.0, 16.0], 6) + j
        tubes.append((tsv, np.full(6, rng.uniform(0.7, 1.0))))
    # Cortical veins.
    cand = _candidates(int(round(t.spacing)))
    if n_cortical > 0:
        starts = cand["surface"][rng.integers(0, len(cand["surface"]), n_cortical)]
        for path in _cortical_veins(t, starts, rng):
            r = rng.uniform(0.6, 1.2)
            tubes.append((path, np.linspace(r, r * 1.6, len(path))))
    # Medullary veins: outwards from the ventricle walls, random elevation.
    walls = cand["ventricle_wall"]
    for _ in range(n_medullary):
        p0 = walls[rng.integers(0, len(walls))] + rng.uniform(-1, 1, 3)
        radial = _unit((p0 - np.array([0.0, -15.0, 14.0])) * np.array([1.0, 1.0, 0.0]))
        elev = rng.uniform(-1.2, 1.2)
        d = _unit(np.cos(elev) * radial + np.array([0.0, 0.0, np.sin(elev)]))
        length = rng.uniform(12.0, 35.0)
        bend = _unit(d + 0.3 * rng.normal(size=3))
        pts = np.array([p0, p0 + 0.5 * length * d, p0 + 0.5 * length * d + 0.5 * length * bend])
        tubes.append((pts, np.full(3, rng.uniform(0.3, 0.7))))
    mapped = np.split(transform.inverse(np.concatenate([p for p, _ in tubes])), np.cumsum([len(p) for p, _ in tubes])[:-1])
    return [Tube(p, r.astype(np.float64)) for p, (_, r) in zip(mapped, tubes)]


def tube_segments(tubes: list[Tube]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(m, 3) starts, (m, 3) ends, (m,) start radii, (m,) end radii of all tube segments."""
    if not tubes:
        z = np.zeros((0, 3))
        return z, z, np.zeros(0), np.zeros(0)
    a = np.concatenate([tb.points[:-1] for tb in tubes])
    b = np.concatenate([tb.points[1:] for tb in tubes])
    ra = np.concatenate([tb.radii[:-1] for tb in tubes])
    rb = np.concatenate([tb.radii[1:] for tb in tubes])
    return a, b, ra, rb


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) of (N, 3) points to one segment a-b, and the position t in [0, 1] along it."""
    v = b - a
    t = np.clip(((points - a) @ v) / max(float(v @ v), 1e-12), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * v), axis=1), t


def tube_occupancy(tubes: list[Tube], grid) -> np.ndarray:
    """(X, Y, Z) float32 partial-volume fraction of vein on ``grid`` (a :class:`~.grid.Grid`).

    A linear ramp of one voxel across the wall; tubes thinner than a voxel are
    scaled so that the summed fraction keeps the true cross-section pi r^2.
    """
    occ = np.zeros(grid.shape, dtype=np.float32)
    h = float(np.prod(grid.spacing) ** (1 / 3))
    for a, b, ra, rb in zip(*tube_segments(tubes)):
        rmax = max(ra, rb) + h
        lo = np.minimum(a, b) - rmax
        hi = np.maximum(a, b) + rmax
        i0 = np.clip(np.floor(grid.to_index(lo[None])[0]).astype(int), 0, grid.shape)
        i1 = np.clip(np.ceil(grid.to_index(hi[None])[0]).astype(int) + 1, 0, grid.shape)
        if np.any(i1 <= i0):
            continue
        sl = tuple(slice(int(p), int(q)) for p, q in zip(i0, i1))
        axes = [o + s * np.arange(p, q) for o, s, p, q in zip(grid.origin, grid.spacing, i0, i1)]
        pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        d, t = _segment_distance(pts, a, b)
        r = ra + t * (rb - ra)
        frac = np.clip(0.5 + (r - d) / h, 0.0, 1.0)
        thin = r < h / 2
        frac = np.where(thin, frac * 3.0 * h * r**2 / (r + h / 2) ** 3, frac)
        occ[sl] = np.maximum(occ[sl], frac.reshape(occ[sl].shape).astype(np.float32))
    return occ


def _vein_clearance(point: np.ndarray, segs: tuple) -> float:
    """Smallest distance (mm) from a point to any vein wall."""
    a, b, ra, rb = segs
    if len(a) == 0:
        return np.inf
    v = b - a
    t = np.clip(np.einsum("ij,ij->i", point - a, v) / np.maximum(np.einsum("ij,ij->i", v, v), 1e-12), 0, 1)
    d = np.linalg.norm(point - (a + t[:, None] * v), axis=1) - (ra + t * (rb - ra))
    return float(d.min())


def draw_cmb_diameters(rng: np.random.Generator, n: int) -> np.ndarray:
    """Equal-volume diameters (mm): 85 % uniform in 2-5, the rest 5-10 skewed to small.

    The bounds and the share are :data:`CMB_DIAMETER_MM`, :data:`CMB_COMMON_DIAMETER_MM` and
    :data:`CMB_COMMON_SHARE`.
    """
    (smallest, largest), common = CMB_DIAMETER_MM, CMB_COMMON_DIAMETER_MM
    small = rng.uniform(smallest, common, n)
    large = common + (largest - common) * rng.beta(1.2, 2.5, n)
    return np.where(rng.uniform(size=n) < CMB_COMMON_SHARE, small, large)


def _ovoid(rng: np.random.Generator, diameter: float) -> tuple[float, float, float]:
    e = rng.uniform(1.0, 1.35)
    axes = np.array([e, 1 / np.sqrt(e), 1 / np.sqrt(e)]) * diameter / 2
    return tuple(float(v) for v in rng.permutation(axes))  # type: ignore[return-value]


def place_cmbs(
    t: TemplateSpace,
    transform: SubjectTransform,
    rng: np.random.Generator,
    count: int,
    z_range_mm: tuple[float, float],
    veins: list[Tube],
    chi_scale: float = 1.0,
    avoid: Sequence[FocalSource] = (),
) -> list[FocalSource]:
    """``count`` CMBs inside the scanned slab (subject z in ``z_range_mm``), away from veins, each other and
    the sources of ``avoid`` (a follow-up's new CMBs away from the baseline's)."""
    cand = _candidates(int(round(t.spacing)))
    segs = tube_segments(veins)
    out: list[FocalSource] = []
    for _ in range(count):
        for _attempt in range(200):
            loc = LOCATIONS[int(rng.choice(3, p=_LOCATION_P))]
            pool = cand[loc]
            q = pool[rng.integers(0, len(pool))] + rng.uniform(-0.5, 0.5, 3) * t.spacing
            p = transform.inverse(q)[0]
            d = float(draw_cmb_diameters(rng, 1)[0])
            r = d / 2
            if not (z_range_mm[0] + r + 2 <= p[2] <= z_range_mm[1] - r - 2):
                continue
            if _vein_clearance(p, segs) < r + 1.5:
                continue
            if any(np.linalg.norm(p - np.array(o.center_mm)) < r + o.diameter_mm / 2 + 4.0 for o in [*avoid, *out]):
                continue
            chi = float(np.clip(rng.lognormal(np.log(CMB_CHI_MEDIAN_PPM), 0.6), *CMB_CHI_PPM) * chi_scale)
            out.append(FocalSource("cmb", tuple(float(v) for v in p), _ovoid(rng, d), chi, loc))
            break
    return out


def place_calcifications(
    t: TemplateSpace, transform: SubjectTransform, rng: np.random.Generator, count: int,
    z_range_mm: tuple[float, float], avoid: list[FocalSource],
) -> list[FocalSource]:
    """Diamagnetic calcifications: 70 % in deep nuclei (pallidum region), 30 % in the choroid plexus."""
    cand = _candidates(int(round(t.spacing)))
    out: list[FocalSource] = []
    for _ in range(count):
        for _attempt in range(100):
            loc = "deep" if rng.uniform() < 0.7 else "choroid"
            pool = cand["deep_nuclei" if loc == "deep" else "choroid"]
            if len(pool) == 0:
                continue
            p = transform.inverse(pool[rng.integers(0, len(pool))])[0]
            d = rng.uniform(2.0, 6.0)
            if not (z_range_mm[0] + d / 2 <= p[2] <= z_range_mm[1] - d / 2):
                continue
            if any(np.linalg.norm(p - np.array(o.center_mm)) < d / 2 + o.diameter_mm / 2 + 4.0 for o in avoid + out):
                continue
            chi = -float(rng.uniform(0.1, 0.5))
            out.append(FocalSource("calcification", tuple(float(v) for v in p), _ovoid(rng, d), chi, loc))
            break
    return out


def place_air(t: TemplateSpace, transform: SubjectTransform, rng: np.random.Generator) -> list[AirSphere]:
    """Sphenoid sinus, frontal sinus and both mastoids as spheres just outside the brain."""
    specs = [  # (start, direction, radius)
        ((0.0, 10.0, -10.0), (0.0, 0.25, -1.0), 11.0),
        ((0.0, 30.0, 0.0), (0.0, 1.0, -0.45), 8.0),
        ((-30.0, -25.0, -20.0), (-0.45, -0.3, -1.0), 7.0),
        ((30.0, -25.0, -20.0), (0.45, -0.3, -1.0), 7.0),
    ]
    out = []
    sphere = _unit(rng.normal(size=(64, 3)))
    for start, direction, radius in specs:
        r = radius * rng.uniform(0.8, 1.2)
        d = _unit(np.array(direction) + rng.normal(0, 0.08, 3))
        c = _ray_to_surface(t, np.array(start), d, r + rng.uniform(1.0, 3.0))
        for _ in range(40):  # push outwards until no part of the sphere lies in the brain
            if t.sample(t.brain, np.vstack([c, c + r * sphere])).max() < 0.05:
                break
            c = c + d
        out.append(AirSphere(tuple(float(v) for v in transform.inverse(c)[0]), float(r)))
    return out
