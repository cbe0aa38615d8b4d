"""Hypothesis strategies over the space of valid ConvNeXtPose specs.

Small enough that a model builds on CPU in milliseconds; wide enough to cover every axis
the published variants vary along (depths, dims, head channels, kernels, upsampling,
depth_dim, joint_num, input size).
"""

from hypothesis import strategies as st

from cnp.specs import BackboneSpec, HeadLayerSpec, VariantSpec

kernels = st.sampled_from([3, 5, 7])
dims = st.integers(min_value=1, max_value=8).map(lambda k: 8 * k)


@st.composite
def backbone_specs(draw) -> BackboneSpec:
    return BackboneSpec(
        name="random",
        depths=tuple(draw(st.lists(st.integers(1, 4), min_size=4, max_size=4))),
        dims=tuple(draw(st.lists(dims, min_size=4, max_size=4))),
        kernel=draw(kernels),
    )


@st.composite
def head_layer_specs(draw) -> HeadLayerSpec:
    return HeadLayerSpec(
        out_channels=draw(dims),
        kernel=draw(kernels),
        upsample=draw(st.sampled_from([1, 2])),
    )


@st.composite
def variant_specs(draw) -> VariantSpec:
    return VariantSpec(
        name="random",
        backbone=draw(backbone_specs()),
        head=tuple(draw(st.lists(head_layer_specs(), min_size=3, max_size=3))),
        depth_dim=draw(st.integers(1, 16)),
        joint_num=draw(st.integers(1, 24)),
        input_size=(draw(st.integers(1, 4)) * 32, draw(st.integers(1, 4)) * 32),
    )
