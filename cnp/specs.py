"""The ConvNeXtPose variants as immutable data.

Everything the rest of cnp knows about XS, S, M and L comes from two tables: VARIANTS,
the architecture (to build a model), and PAPER, the published figures of each named
variant (to compare with). They are apart so that a changed architecture
(`dataclasses.replace(spec, head=...)`) never carries a published variant's figures: see
`paper_figures`. A spec is never mutated; a different architecture is a different spec.
This replaces the official code's global `cfg`, which was mutated before building a
model and is the source of the XS/S and 2UP/3UP confusion.

Source: docs/spec.md (the paper and the official implementation).
"""

from __future__ import annotations

from dataclasses import dataclass


class UnknownVariantError(ValueError):
    """A variant name that is not in VARIANTS."""


@dataclass(frozen=True)
class BackboneSpec:
    """ConvNeXt with BatchNorm: a stem, three downsamplings, four stages of blocks."""

    name: str
    depths: tuple[int, int, int, int]
    dims: tuple[int, int, int, int]
    kernel: int = 7  # depthwise kernel of every block

    def __post_init__(self) -> None:
        if len(self.depths) != 4 or len(self.dims) != 4:
            raise ValueError(f"backbone {self.name!r}: need 4 depths and 4 dims, "
                             f"not {len(self.depths)} and {len(self.dims)}")
        if self.kernel % 2 != 1:
            raise ValueError(f"backbone {self.name!r}: depthwise kernel must be odd, "
                             f"not {self.kernel}")


@dataclass(frozen=True)
class HeadLayerSpec:
    """One "DeConv" layer: depthwise k×k → BN → 1×1 → ReLU → ×upsample bilinear."""

    out_channels: int
    kernel: int = 3
    upsample: int = 2  # 1: identity, 2: ×2 bilinear (align_corners=True)

    def __post_init__(self) -> None:
        if self.upsample not in (1, 2):
            raise ValueError(f"head layer upsampling must be 1 or 2, not {self.upsample}")
        if self.kernel % 2 != 1:
            raise ValueError(f"head layer kernel must be odd, not {self.kernel}")


@dataclass(frozen=True)
class PaperFigures:
    """What the paper prints for a variant (Human3.6M, 256×256 input, batch 1)."""

    params_m: float  # millions, printed to 0.01M
    gflops: float  # multiply-accumulates ×1e-9, printed to 0.01
    mpjpe: float  # mm, Protocol 2
    pa_mpjpe: float | None = None  # mm, Protocol 1; not published for XS and S
    # The figure other documents quote (7.45M, 7.60M, 8.39M): the state_dict element
    # count, BatchNorm running statistics included. None where nobody quotes one.
    other_params_m: float | None = None


@dataclass(frozen=True)
class VariantSpec:
    name: str
    backbone: BackboneSpec
    head: tuple[HeadLayerSpec, ...]
    depth_dim: int
    joint_num: int = 18
    input_size: tuple[int, int] = (256, 256)  # H, W

    def __post_init__(self) -> None:
        if len(self.head) != 3:
            raise ValueError(f"variant {self.name!r}: the head has exactly 3 layers, "
                             f"not {len(self.head)}")
        if any(s % 32 for s in self.input_size):
            raise ValueError(f"variant {self.name!r}: input size must be a multiple of 32, "
                             f"not {self.input_size[0]}x{self.input_size[1]}")

    @property
    def head_upsample(self) -> tuple[int, ...]:
        return tuple(layer.upsample for layer in self.head)

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """(h, w) = (H/32, W/32) · 2^U with U the number of upsampling head layers."""
        scale = 1
        for factor in self.head_upsample:
            scale *= factor
        return (self.input_size[0] // 32 * scale, self.input_size[1] // 32 * scale)


ATTO = BackboneSpec("Atto", depths=(2, 2, 6, 2), dims=(40, 80, 160, 320))
FEMTO_L = BackboneSpec("Femto-L", depths=(3, 3, 9, 3), dims=(48, 96, 192, 384))


def _head(channels: int, upsample: tuple[int, int, int]) -> tuple[HeadLayerSpec, ...]:
    return tuple(HeadLayerSpec(channels, kernel=3, upsample=u) for u in upsample)


TWO_UP = (2, 2, 1)
THREE_UP = (2, 2, 2)

VARIANTS: dict[str, VariantSpec] = {
    "xs": VariantSpec("xs", ATTO, _head(128, TWO_UP), depth_dim=32),
    "s": VariantSpec("s", FEMTO_L, _head(256, TWO_UP), depth_dim=32),
    "m": VariantSpec("m", FEMTO_L, _head(256, THREE_UP), depth_dim=64),
    "l": VariantSpec("l", FEMTO_L, _head(512, THREE_UP), depth_dim=64),
}

# Keyed by variant name, as torchvision keeps figures in weights metadata: they belong to
# the published model, not to whatever architecture carries its name.
PAPER: dict[str, PaperFigures] = {
    "xs": PaperFigures(params_m=3.53, gflops=0.82, mpjpe=56.61),
    "s": PaperFigures(params_m=7.44, gflops=1.76, mpjpe=51.80, other_params_m=7.45),
    "m": PaperFigures(params_m=7.59, gflops=2.82, mpjpe=51.05, pa_mpjpe=34.5, other_params_m=7.60),
    "l": PaperFigures(params_m=8.38, gflops=4.30, mpjpe=49.75, pa_mpjpe=32.8, other_params_m=8.39),
}


def get_spec(name: str) -> VariantSpec:
    """The spec of a variant by name, case-insensitive ("XS", "xs")."""
    key = name.strip().lower()
    if key not in VARIANTS:
        known = ", ".join(VARIANTS)
        raise UnknownVariantError(f"unknown variant {name!r}; known variants: {known}")
    return VARIANTS[key]


def paper_figures(spec: VariantSpec) -> PaperFigures | None:
    """The paper's figures for `spec` if it is a published variant's architecture, else None."""
    return PAPER[spec.name] if VARIANTS.get(spec.name) == spec else None
