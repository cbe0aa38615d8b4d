"""cnp's variants table is the spec page; the spec types refuse an architecture
ConvNeXtPose cannot have, saying what is wrong; published figures belong to the published
architecture only.

Messages: each test asserts the facts a message must carry (whose spec, which field),
not its wording.
"""

from __future__ import annotations

import dataclasses

import pytest

from cnp.specs import VARIANTS, BackboneSpec, HeadLayerSpec, get_spec, paper_figures
from spec_page import PAPER_PAGE, SPEC_PAGE


def test_variants_are_the_spec_page():
    # The whole table in one test, the first of this module: tests/mutation.py runs this
    # module first, because mutmut links the code that builds VARIANTS at import to the
    # first test it runs.
    def fields(spec):
        return {"backbone": spec.backbone.name, "depths": list(spec.backbone.depths),
                "dims": list(spec.backbone.dims), "kernel": spec.backbone.kernel,
                "head": [h.out_channels for h in spec.head],
                "head_kernels": [h.kernel for h in spec.head],
                "upsample": list(spec.head_upsample), "depth_dim": spec.depth_dim,
                "joints": spec.joint_num, "input": list(spec.input_size),
                "heatmap": list(spec.heatmap_size)}

    def page_fields(page):  # the page's Architecture section: 7×7 blocks, 3×3 head layers
        return {"kernel": 7, "head_kernels": [3, 3, 3],
                **{key: page[key] for key in ("backbone", "depths", "dims", "head", "upsample",
                                              "depth_dim", "joints", "input", "heatmap")}}

    assert {name: fields(spec) for name, spec in VARIANTS.items()} == {
        name: page_fields(page) for name, page in SPEC_PAGE.items()}


def refusal(make) -> str:
    with pytest.raises(ValueError) as error:
        make()
    return str(error.value)


@pytest.mark.parametrize("depths, dims", [((2, 2, 6), (40, 80, 160, 320)),
                                          ((2, 2, 6, 2), (40, 80, 160))],
                         ids=["3-depths", "3-dims"])
def test_backbone_needs_four_stages(depths, dims):
    message = refusal(lambda: BackboneSpec("tiny", depths=depths, dims=dims))
    assert "'tiny'" in message and "4 depths" in message and "4 dims" in message
    assert f"{len(depths)} and {len(dims)}" in message  # what it got


def test_backbone_kernel_must_be_odd():
    message = refusal(lambda: BackboneSpec("tiny", (2, 2, 6, 2), (40, 80, 160, 320), kernel=6))
    assert "'tiny'" in message and "odd" in message and "6" in message


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_odd_kernels_are_accepted(kernel):
    assert BackboneSpec("tiny", (1, 1, 1, 1), (8, 8, 8, 8), kernel=kernel).kernel == kernel
    assert HeadLayerSpec(8, kernel=kernel).kernel == kernel


@pytest.mark.parametrize("upsample", [0, 3, 4])
def test_head_layer_upsamples_by_one_or_two(upsample):
    message = refusal(lambda: HeadLayerSpec(128, upsample=upsample))
    assert "upsampling" in message and "1 or 2" in message and str(upsample) in message


def test_head_layer_kernel_must_be_odd():
    message = refusal(lambda: HeadLayerSpec(128, kernel=4))
    assert "kernel" in message and "odd" in message and "4" in message


@pytest.mark.parametrize("layers", [2, 4])
def test_head_has_three_layers(layers):
    xs = get_spec("xs")
    head = (xs.head * 2)[:layers]
    message = refusal(lambda: dataclasses.replace(xs, name="mine", head=head))
    assert "'mine'" in message and "3 layers" in message and str(layers) in message


@pytest.mark.parametrize("size", [(250, 256), (256, 250)], ids=["height", "width"])
def test_input_size_is_a_multiple_of_32(size):
    message = refusal(lambda: dataclasses.replace(get_spec("xs"), name="mine", input_size=size))
    assert "'mine'" in message and "32" in message and "250" in message


def test_variant_names_ignore_surrounding_spaces():
    assert get_spec(" XS\n") is get_spec("xs")


@pytest.mark.parametrize("variant", list(PAPER_PAGE))
def test_published_architecture_carries_the_paper_figures(variant):
    figures = paper_figures(get_spec(variant))
    page = PAPER_PAGE[variant]
    assert (figures.params_m, figures.gflops, figures.mpjpe, figures.pa_mpjpe,
            figures.other_params_m) == (page["params_m"], page["gflops"], page["mpjpe"],
                                        page["pa_mpjpe"], page["other_params_m"])


def test_changed_architecture_has_no_paper_figures():
    s = get_spec("s")
    three_up = s.head[:2] + (dataclasses.replace(s.head[2], upsample=2),)
    assert paper_figures(dataclasses.replace(s, head=three_up)) is None


def test_unpublished_name_has_no_paper_figures():
    assert paper_figures(dataclasses.replace(get_spec("s"), name="mine")) is None
