"""Lesion location on the MARS scale (lobar / deep / infratentorial) by registration to ICBM152.

The Microbleed Anatomical Rating Scale (MARS; Gregoire et al. 2009, Neurology
73:1759) sorts CMBs into lobar, deep (basal ganglia, thalamus, internal and
external capsule, corpus callosum, deep white matter) and infratentorial
(brainstem, cerebellum). Here the regions are those of the synthetic generator
(:func:`cmbstudy.synth.susceptibility._candidates`), in MNI millimetres on
nilearn's ICBM152 2009a template (:func:`cmbstudy.synth.anatomy.load_template_space`):

* infratentorial: the template's infratentorial mask;
* deep: the deep grey nuclei dilated by 2 mm (the generator's "deep zone");
* lobar: the rest of the brain mask (brain probability > 0.5).

A scan is placed on the template by a SimpleITK affine registration of its
brain mask (the dataset's, or an Otsu mask of the image) to the template brain
mask: both masks smoothed (3 mm Gaussian), a moments initialiser, an exhaustive
search over the translation (the scan may be a slab: its mask's centre is not
the brain's), then a 12-parameter affine by mean squares over the scan's field of
view, on a two-level pyramid. Mask-to-mask matching does not depend on the
contrast (T2*-GRE or SWI against a T1 template); it cannot see inside the brain,
so atrophy and non-linear shape differences are left (about 2-3 mm at lesions).
Coordinates are RAS+ mm; arrays (X, Y, Z).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import InputError
from ..synth.anatomy import load_template_space
from ..synth.susceptibility import REGION_MARGIN_MM

__all__ = ["MARS_REGIONS", "UNKNOWN", "TemplateRegistration", "LesionLocations", "compute_mars_regions",
           "register_to_template", "assign_locations"]

MARS_REGIONS: tuple[str, ...] = ("lobar", "deep", "infratentorial")
UNKNOWN = "unknown"
_SMOOTH_MM = 3.0  # Gaussian sigma applied to both masks before matching
_SAMPLING_SEED = 20211  # fixed seed of the metric's random sampling (deterministic results)


@dataclass(frozen=True)
class TemplateRegistration:
    """An affine map from the scan's mm (RAS+) to template (MNI) mm and how it was found."""

    subject_to_template: np.ndarray  # (4, 4) homogeneous matrix, scan mm -> template mm
    metric: str  # what was matched
    metric_value: float  # final mean squared difference of the smoothed masks (0 = perfect)
    iterations: int  # optimiser iterations of the last pyramid level
    stop: str  # optimiser's stop condition
    brain_mask: str  # "given" or "otsu"
    seconds: float  # wall time of the registration

    def transform(self, points_mm: np.ndarray) -> np.ndarray:
        """(N, 3) scan mm -> (N, 3) template mm."""
        p = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        return p @ self.subject_to_template[:3, :3].T + self.subject_to_template[:3, 3]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description (the matrix as nested lists, rounded)."""
        return {"method": "SimpleITK affine, brain mask to ICBM152 brain mask", "metric": self.metric,
                "metric_value": round(self.metric_value, 6), "iterations": self.iterations, "stop": self.stop,
                "brain_mask": self.brain_mask, "seconds": round(self.seconds, 3),
                "subject_to_template": np.round(self.subject_to_template, 5).tolist()}


@dataclass(frozen=True)
class LesionLocations:
    """MARS region of each lesion, its template point and the registration that placed it."""

    labels: tuple[str, ...]  # one of MARS_REGIONS or UNKNOWN per lesion, in input order
    template_mm: np.ndarray  # (N, 3) MNI mm of each lesion centroid
    registration: TemplateRegistration

    def counts(self) -> dict[str, int]:
        """Lesions per region, every region listed (UNKNOWN last)."""
        return {r: self.labels.count(r) for r in (*MARS_REGIONS, UNKNOWN)}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary: counts, labels, template points and the registration."""
        return {"counts": self.counts(), "labels": list(self.labels),
                "template_mm": np.round(self.template_mm, 2).tolist(), "registration": self.registration.as_dict()}


@functools.lru_cache(maxsize=2)
def _region_volume(resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Template-grid region codes (0 outside, 1 + index in MARS_REGIONS), nearest code, distance (mm)."""
    t = load_template_space(resolution)
    vox = max(1, int(round(REGION_MARGIN_MM / t.spacing)))  # the generator's dilation of the deep nuclei
    code = np.zeros(t.brain.shape, dtype=np.uint8)
    code[t.brain > 0.5] = 1
    code[ndimage.binary_dilation(t.deep_gm, iterations=vox)] = 2
    code[t.infratentorial] = 3
    distance, nearest = ndimage.distance_transform_edt(code == 0, sampling=t.spacing, return_indices=True)
    return code, code[tuple(nearest)], distance


def compute_mars_regions(points_mm: np.ndarray, resolution: int = 2, max_outside_mm: float = 10.0) -> np.ndarray:
    """MARS region of (N, 3) template (MNI) mm points, with the synthetic generator's rules.

    Each point takes the region of the template voxel it falls in (nearest voxel centre). A point
    outside the brain mask takes the region of the nearest brain voxel when that is at most
    ``max_outside_mm`` away, else ``"unknown"``; so does a point outside the template grid
    (always ``"unknown"``).

    Args:
        points_mm: (N, 3) or (3,) MNI mm.
        resolution: template resolution in mm (1 or 2); the generator's default is 2.
        max_outside_mm: how far outside the brain a point still takes the nearest region.

    Returns:
        (N,) array of str, each in :data:`MARS_REGIONS` or ``"unknown"``.

    Raises:
        InputError: ``points_mm`` is not (N, 3) finite numbers.
        ValueError: ``resolution`` is not 1 or 2.
    """
    points = np.asarray(points_mm, dtype=np.float64)
    points = points.reshape(1, 3) if points.shape == (3,) else points
    if points.ndim != 2 or points.shape[1] != 3 or not np.all(np.isfinite(points)):
        raise InputError(f"template points of shape {points.shape} must be (N, 3) finite mm")
    code, nearest, distance = _region_volume(resolution)
    ijk = np.rint(load_template_space(resolution).mm_to_voxel(points)).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(code.shape)), axis=1)
    out = np.zeros(len(points), dtype=np.uint8)
    index = tuple(ijk[inside].T)
    out[inside] = np.where(distance[index] <= max_outside_mm, nearest[index], 0)
    return np.array((UNKNOWN, *MARS_REGIONS), dtype=object)[out].astype(str)


def _to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """An (X, Y, Z) array as a SimpleITK image whose physical space is the RAS+ mm of ``affine``.

    Written by hand: SimpleITK reads NIfTI files but has no bridge from an in-memory nibabel
    image. Both images of a registration use RAS+ here (SimpleITK's own files use LPS), so the
    transform found maps RAS+ mm to RAS+ mm.

    Raises:
        InputError: the affine has shear (SimpleITK needs orthogonal axes).
    """
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = affine[:3, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputError(f"image affine {np.round(affine, 4).tolist()} has shear: resample it to orthogonal axes")
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array, dtype=np.float32).transpose(2, 1, 0)))
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(affine[:3, 3].tolist())
    image.SetDirection(direction.ravel().tolist())
    return image


def _otsu_brain(image: sitk.Image) -> sitk.Image:
    """Otsu foreground, its largest connected component, holes filled (SimpleITK filters)."""
    foreground = sitk.OtsuThreshold(image, 0, 1)
    largest = sitk.RelabelComponent(sitk.ConnectedComponent(foreground), sortByObjectSize=True) == 1
    return sitk.Cast(sitk.BinaryFillhole(largest), sitk.sitkFloat32)


def _homogeneous(transform: sitk.AffineTransform) -> np.ndarray:
    """ITK's y = A (x - c) + c + t as a (4, 4) matrix."""
    a = np.array(transform.GetMatrix()).reshape(3, 3)
    c = np.array(transform.GetCenter())
    out = np.eye(4)
    out[:3, :3] = a
    out[:3, 3] = np.array(transform.GetTranslation()) + c - a @ c
    return out


def _method(shrink: list[int], smooth_mm: list[float]) -> sitk.ImageRegistrationMethod:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMeanSquares()
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel(smooth_mm)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return reg


def register_to_template(image: nib.Nifti1Image, brain_mask: np.ndarray | None = None,
                         resolution: int = 2) -> TemplateRegistration:
    """Affine registration of a scan's brain mask to the ICBM152 brain mask (SimpleITK).

    The scan is the fixed image, so the metric is computed over the scan's field of view only
    (a slab is compared with the part of the template it covers) and the transform found maps
    scan mm to template mm. Deterministic: a fixed sampling seed (the result was found the same
    with 1, 2 and 4 threads, so the thread count is left to SimpleITK).

    Args:
        image: the T2*-GRE or SWI magnitude (3D; a 4D image with one volume is squeezed).
        brain_mask: (X, Y, Z) brain mask on the image grid; None: Otsu mask of the image.
        resolution: template resolution in mm (1 or 2).

    Raises:
        InputError: the image is not 3D, the mask's shape differs from the image's or the mask is
            empty, or the affine has shear.
    """
    start = time.perf_counter()
    data = np.asarray(image.dataobj, dtype=np.float32)
    data = data.reshape(data.shape[:3]) if data.ndim == 4 and data.shape[3] == 1 else data
    if data.ndim != 3:
        raise InputError(f"image of shape {data.shape} must be 3D (X, Y, Z)")
    if brain_mask is None:
        fixed, mask_kind = _otsu_brain(_to_sitk(np.nan_to_num(data), image.affine)), "otsu"
    else:
        mask = np.asarray(brain_mask) > 0
        if mask.shape != data.shape:
            raise InputError(f"brain mask of shape {mask.shape} must match the image's {data.shape}")
        fixed, mask_kind = _to_sitk(mask, image.affine), "given"
    if not np.any(sitk.GetArrayViewFromImage(fixed)):
        raise InputError(f"the brain mask ({mask_kind}) is empty: give a mask with brain voxels")
    t = load_template_space(resolution)
    fixed = sitk.SmoothingRecursiveGaussian(fixed, _SMOOTH_MM)
    moving = sitk.SmoothingRecursiveGaussian(_to_sitk(t.brain, t.affine), _SMOOTH_MM)

    rigid = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                              sitk.CenteredTransformInitializerFilter.MOMENTS)
    search = _method([4], [0.0])  # translation grid: x +-6, y +-24, z +-48 mm around the moments' centre
    search.SetOptimizerAsExhaustive([0, 0, 0, 1, 3, 6])
    search.SetOptimizerScales([1.0, 1.0, 1.0, 6.0, 8.0, 8.0])
    search.SetInitialTransform(rigid, inPlace=True)
    search.Execute(fixed, moving)

    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    refine = _method([4, 2], [2.0, 1.0])
    refine.SetMetricSamplingStrategy(refine.RANDOM)
    refine.SetMetricSamplingPercentage(0.25, _SAMPLING_SEED)
    refine.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-3, 200, relaxationFactor=0.6,
                                                    gradientMagnitudeTolerance=1e-8)
    refine.SetOptimizerScalesFromPhysicalShift()
    refine.SetInitialTransform(affine, inPlace=True)
    refine.Execute(fixed, moving)
    return TemplateRegistration(_homogeneous(affine), "mean squares, smoothed brain masks",
                                float(refine.GetMetricValue()), int(refine.GetOptimizerIteration()),
                                refine.GetOptimizerStopConditionDescription(), mask_kind,
                                time.perf_counter() - start)


def assign_locations(image: nib.Nifti1Image, centroids_vox: np.ndarray, brain_mask: np.ndarray | None = None,
                     resolution: int = 2, max_outside_mm: float = 10.0) -> LesionLocations:
    """MARS location of each lesion of one scan: lobar, deep, infratentorial or unknown.

    Registers the scan to the template (:func:`register_to_template`), maps each centroid to
    MNI mm and applies :func:`compute_mars_regions`: a centroid whose template point lies outside
    the brain takes the nearest region within ``max_outside_mm``, else ``"unknown"``.

    Args:
        image: the T2*-GRE or SWI magnitude.
        centroids_vox: (N, 3) fractional voxel indices (X, Y, Z) of the lesion centres; N may be 0
            (the registration is still done and described).
        brain_mask: (X, Y, Z) brain mask on the image grid; None: Otsu mask of the image.
        resolution: template resolution in mm (1 or 2).
        max_outside_mm: see :func:`compute_mars_regions`.

    Raises:
        InputError: ``centroids_vox`` is not (N, 3) finite numbers, or see :func:`register_to_template`.
    """
    centroids = np.asarray(centroids_vox, dtype=np.float64)
    centroids = centroids.reshape(0, 3) if centroids.size == 0 else centroids
    if centroids.ndim != 2 or centroids.shape[1] != 3 or not np.all(np.isfinite(centroids)):
        raise InputError(f"lesion centroids of shape {centroids.shape} must be (N, 3) finite voxel indices")
    registration = register_to_template(image, brain_mask, resolution)
    affine = np.asarray(image.affine, dtype=np.float64)
    template_mm = registration.transform(centroids @ affine[:3, :3].T + affine[:3, 3])
    labels = compute_mars_regions(template_mm, resolution, max_outside_mm)
    return LesionLocations(tuple(str(v) for v in labels), template_mm, registration)
