import json

import pytest
import torch

import engines.kernel_plan as planning
from engines.conv_kernels import BOOK, LIBRARY, PASSES, PRODUCT, LayerKernels, PlannedConv2d
from engines.kernel_plan import KernelPlan, check_kernel_plan_choice, choice, plan_path
from models.dcgan import Discriminator, Generator
from runner.errors import UserError


def networks(size: int = 16, filters: int = 4) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    generator = Generator(image_size=size, filters=filters, latent_size=8)
    return {"generator": generator, "discriminator": Discriminator(size, filters=filters)}


def examples(nets) -> dict[str, torch.Tensor]:
    noise = torch.randn(4, 8, 1, 1)
    with torch.no_grad():
        return {"generator": noise, "discriminator": nets["generator"].eval()(noise).detach()}


@pytest.fixture
def every_pass_timed(monkeypatch):
    monkeypatch.setattr(planning, "MIN_FLOPS", 0)  # the tests' layers are tiny: time them all the same


def test_a_measured_plan_times_every_pass_and_touches_no_weight_statistic_or_rng(every_pass_timed):
    nets = networks()
    inputs = examples(nets)
    nets["generator"].train()
    before = {name: {k: v.clone() for k, v in net.state_dict().items()} for name, net in nets.items()}
    rng = torch.get_rng_state()
    plan = KernelPlan(nets).measure(inputs, torch.float32)
    assert torch.equal(torch.get_rng_state(), rng)
    for name, net in nets.items():
        assert all(torch.equal(value, before[name][key]) for key, value in net.state_dict().items())
    assert nets["generator"].training  # the eval pass for the layers' inputs is undone
    document = plan.document()
    assert document["source"] == "measured" and document["precision"] == "float32" and "cores" in document["machine"]
    for network, layers in document["networks"].items():
        assert set(layers) == set(planning.planned_layers(nets[network]))
        for name, passes in layers.items():
            timed = document["timings_ms"][network][name]
            assert set(passes) == set(PASSES) and timed["mflop"] > 0
            assert all(timed[p][LIBRARY] > 0 and timed[p]["agrees"] for p in PASSES)  # both kernels, same result
    assert plan.summary().startswith("kernel plan (measured): ") and " of 18 passes" in plan.summary()


def test_small_passes_are_left_to_the_library_untimed():
    nets = networks()
    plan = KernelPlan(nets).measure(examples(nets), torch.float32)  # every pass of the tiny DCGAN: < 1 MFLOP
    timings = plan.document()["timings_ms"]
    assert plan.products() == 0
    assert all(set(timed) == {"shape", "mflop"} for layers in timings.values() for timed in layers.values())


def test_the_choice_needs_a_clear_win_and_the_same_result():
    timed = {
        "forward": {LIBRARY: 2.0, PRODUCT: 1.0, "agrees": True},  # twice as fast: the product
        "input_grad": {LIBRARY: 2.0, PRODUCT: 1.95, "agrees": True},  # within the margin: the library
        "weight_grad": {LIBRARY: 2.0, PRODUCT: None, "agrees": False},  # another result: never the product
    }
    assert choice(timed) == LayerKernels(PRODUCT, LIBRARY, LIBRARY)
    assert choice({**timed, "forward": {LIBRARY: 0.06, PRODUCT: 0.02, "agrees": True}}).forward == LIBRARY  # 40 µs
    assert choice({}) == BOOK


def test_a_product_that_disagrees_is_never_chosen(every_pass_timed, monkeypatch):
    wrong = planning.forward_product
    monkeypatch.setattr(planning, "forward_product", lambda *args: wrong(*args) * 1.01)
    monkeypatch.setattr(planning, "MARGIN", -1e9)  # a product that agrees wins whatever its time
    monkeypatch.setattr(planning, "MIN_SAVING_MS", -1e9)
    nets = networks()
    plan = KernelPlan(nets).measure(examples(nets), torch.float32)
    timings = plan.document()["timings_ms"]
    assert all(not timed["forward"]["agrees"] for layers in timings.values() for timed in layers.values())
    chosen = [kernels for layers in plan.chosen.values() for kernels in layers.values()]
    assert all(k == LayerKernels(LIBRARY, PRODUCT, PRODUCT) for k in chosen)  # the others agree, and win here


def test_a_plan_goes_through_its_file_and_the_checkpoint_to_the_layers(tmp_path, every_pass_timed):
    nets = networks()
    layer = "pipe.0"
    chosen = {"generator": {layer: LayerKernels(PRODUCT, PRODUCT, PRODUCT)}, "discriminator": {}}
    original = KernelPlan(nets).use(chosen, "measured")
    original.write(tmp_path / "kernel_plan.json")
    again = networks()
    from_file = KernelPlan(again).read(str(tmp_path))  # a run directory: its kernel_plan.json
    assert from_file.source == f"file {tmp_path / 'kernel_plan.json'}" and from_file.products() == 3
    assert dict(again["generator"].named_modules())[layer].kernels == LayerKernels(PRODUCT, PRODUCT, PRODUCT)
    convolutions = [m for m in again["discriminator"].modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(isinstance(m, PlannedConv2d) and m.kernels == BOOK for m in convolutions)
    resumed = KernelPlan(networks())
    resumed.load_state_dict(json.loads(json.dumps(original.state_dict())))  # as torch.save keeps it
    assert resumed.chosen == from_file.chosen and resumed.source == "checkpoint"
    assert resumed.summary().endswith("as one matrix product (it was measured)")


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ({"format": 9, "networks": {}}, "not a kernel plan of format 1"),
        ({"format": 1, "networks": {"generator": {}}}, "a plan for generator, not for generator, discriminator"),
        ({"format": 1, "networks": {"generator": {"pipe.0": {}}, "discriminator": {}}}, "other layers than this run's"),
    ],
)
def test_a_plan_for_other_networks_is_refused_in_one_line(tmp_path, document, says):
    (tmp_path / "plan.json").write_text(json.dumps(document))
    with pytest.raises(UserError, match=says) as refused:
        KernelPlan(networks()).read(str(tmp_path / "plan.json"))
    assert "\n" not in str(refused.value) and str(refused.value).startswith(f"--kernel-plan {tmp_path}")


def test_a_plan_with_an_unknown_kernel_is_refused(tmp_path):
    plan = KernelPlan(networks()).book().document()
    plan["networks"]["generator"]["pipe.0"]["forward"] = "winograd"
    with pytest.raises(UserError, match="each one of library, product"):
        KernelPlan(networks()).load_state_dict(plan)


def test_the_choice_of_plan_is_checked_where_it_is_given(tmp_path):
    for choice_ in ("auto", "measure", "book"):
        check_kernel_plan_choice(choice_)
    with pytest.raises(ValueError, match="must be auto, measure, book, or an existing kernel_plan.json"):
        check_kernel_plan_choice(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError):
        check_kernel_plan_choice(str(tmp_path))  # a folder without a plan
    assert plan_path(str(tmp_path)) == tmp_path / "kernel_plan.json"


@pytest.fixture
def plan_cache(tmp_path, monkeypatch):
    """The machine's plan cache, in the test's folder: the folder of cached plans."""
    monkeypatch.setattr(planning, "cache_dir", lambda: tmp_path / "cache")
    return tmp_path / "cache" / planning.CACHE_FOLDER


def test_a_measured_plan_is_kept_for_the_machine_and_the_next_run_takes_it(every_pass_timed, plan_cache, monkeypatch):
    verdict = {"kernels": LayerKernels(PRODUCT, PRODUCT, PRODUCT)}
    monkeypatch.setattr(planning, "choice", lambda timed: verdict["kernels"])
    nets = networks()
    inputs = examples(nets)
    first = KernelPlan(nets).resolve("auto", lambda: inputs, torch.float32)
    assert first.source == "measured" and first.products() == 18 and len(list(plan_cache.iterdir())) == 1
    verdict["kernels"] = BOOK  # a plan measured now would choose otherwise
    again = KernelPlan(networks()).resolve("auto", lambda: inputs, torch.float32)
    assert again.source == "cache" and again.chosen == first.chosen and again.document() == first.document()
    assert "measured on this machine 20" in again.summary() and "--kernel-plan measure" in again.summary()
    remeasured = KernelPlan(networks()).resolve("measure", lambda: inputs, torch.float32)
    assert remeasured.source == "measured" and remeasured.products() == 0
    assert KernelPlan(networks()).resolve("auto", lambda: inputs, torch.float32).products() == 0  # it replaced it
    assert len(list(plan_cache.iterdir())) == 1


def test_other_work_is_measured_again_and_a_broken_cache_costs_only_a_measurement(
    every_pass_timed, plan_cache, monkeypatch, tmp_path
):
    def plan_source(nets, dtype=torch.float32, inputs=None):
        inputs = examples(nets) if inputs is None else inputs
        return KernelPlan(nets).resolve("auto", lambda: inputs, dtype).source

    assert plan_source(networks()) == "measured"
    assert plan_source(networks()) == "cache"
    assert plan_source(networks(), torch.float64) == "measured"  # another precision
    assert plan_source(networks(filters=8)) == "measured"  # other layers
    nets = networks()
    assert plan_source(nets, inputs={**examples(nets), "generator": torch.randn(6, 8, 1, 1)}) == "measured"  # batch
    with monkeypatch.context() as patched:
        patched.setattr(torch, "get_num_threads", lambda: 7)
        assert plan_source(networks()) == "measured"  # other threads time otherwise
    assert len(list(plan_cache.iterdir())) == 5
    for entry in plan_cache.iterdir():
        entry.write_text("{not a plan")
    assert plan_source(networks()) == "measured" and plan_source(networks()) == "cache"  # rewritten
    (tmp_path / "cache").rename(tmp_path / "elsewhere")
    (tmp_path / "cache").write_text("a file where the cache folder would be")
    assert plan_source(networks()) == "measured" and plan_source(networks()) == "measured"  # it could not be kept
