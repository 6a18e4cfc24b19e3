"""What each built-in strategy does, beyond the shared contract."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from medxfer.errors import ConfigError
from medxfer.training.freezing import frozen_norm_layers
from medxfer_plugins.strategies.discriminative_lr import discriminative_lr
from medxfer_plugins.strategies.feature_extraction import feature_extraction
from medxfer_plugins.strategies.full_finetune import full_finetune
from medxfer_plugins.strategies.gradual_unfreeze import gradual_unfreeze
from medxfer_plugins.strategies.l2sp import l2sp
from medxfer_plugins.strategies.lwf import TEACHER_KEY, lwf
from medxfer_plugins.strategies.partial_finetune import partial_finetune
from medxfer_plugins.strategies.scratch import scratch

LR = 0.05


def _group_trains(group) -> bool:
    flags = {p.requires_grad for p in group.parameters()}
    assert len(flags) == 1, "a group is either frozen or trainable as a whole"
    return flags.pop()


def _lrs(optimizer) -> dict[str, float]:
    return {g["name"]: g["lr"] for g in optimizer.param_groups}


def _extra_terms(loop, batch, model):
    outputs, features = model.forward_features(batch["image"])
    results = loop.hook.medxfer_extra_loss_terms(
        ctx=loop.ctx, batch=batch, outputs=outputs, features=features,
        target_batch=None, target_features=None, target_outputs=None)
    return {t.name: t for result in results for t in (result or [])}


# -- feature extraction -------------------------------------------------------------------

def test_feature_extraction_keeps_bn_statistics_even_without_epoch_start(make_network,
                                                                          make_loop):
    model = make_network(2)
    loop = make_loop(model, feature_extraction(), 2)
    loop.start()
    stats = model.backbone.body[0][1].running_mean.clone()
    model.train()  # the trainer does this; the forward pre-hook still locks the BN layers
    model(loop.batches[0]["image"])
    assert torch.equal(model.backbone.body[0][1].running_mean, stats)
    assert len(frozen_norm_layers(model)) == 3
    loop.epoch(0)
    assert all(not m.training for m in frozen_norm_layers(model))
    assert model.head.training


# -- full fine-tuning ---------------------------------------------------------------------

def test_full_finetune_backbone_lr_mult(make_network, make_loop):
    loop = make_loop(make_network(2), full_finetune(backbone_lr_mult=0.1), 2)
    ctx = loop.start()
    assert _lrs(ctx.optimizer) == pytest.approx({"backbone": LR * 0.1, "head": LR})
    default = make_loop(make_network(2), full_finetune(), 2).start()
    assert len(default.optimizer.param_groups) == 1


# -- partial fine-tuning ------------------------------------------------------------------

@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_partial_freezes_exactly_the_first_k_groups(make_network, make_loop, k, spatial_dims):
    model = make_network(spatial_dims)
    loop = make_loop(model, partial_finetune(freeze_groups=k), spatial_dims)
    loop.start()
    loop.epoch(0)
    groups = model.backbone.layer_groups()
    assert [_group_trains(g) for g in groups] == [i >= k for i in range(len(groups))]
    assert _group_trains(model.head)
    for i, group in enumerate(groups):
        assert group[1].training is (i >= k)  # BN of frozen groups in eval mode


def test_partial_more_groups_than_the_backbone_has(make_network, make_loop):
    loop = make_loop(make_network(2), partial_finetune(freeze_groups=4), 2)
    with pytest.raises(ConfigError, match=r"strategy\.freeze_groups.*3 layer groups"):
        loop.start()


# -- gradual unfreezing -------------------------------------------------------------------

@pytest.mark.parametrize("every", [1, 2])
def test_gradual_unfreeze_grows_the_optimizer_in_place(make_network, make_loop, every):
    model = make_network(2)
    loop = make_loop(model, gradual_unfreeze(every=every, decay=0.5), 2)
    ctx = loop.start()
    optimizer = ctx.optimizer
    groups = model.backbone.layer_groups()
    assert [g["name"] for g in optimizer.param_groups] == ["head"]
    for epoch in range(7):
        metrics = loop.epoch(epoch)
        unfrozen = min(3, epoch // every)
        assert ctx.optimizer is optimizer
        expected = ["head"] + [f"backbone.{i}" for i in (2, 1, 0)[:unfrozen]]
        assert [g["name"] for g in optimizer.param_groups] == expected
        assert [_group_trains(g) for g in groups] == [i >= 3 - unfrozen for i in range(3)]
        assert metrics["unfrozen_groups"] == unfrozen
    assert _lrs(optimizer) == pytest.approx({"head": LR, "backbone.2": LR * 0.5,
                                             "backbone.1": LR * 0.25, "backbone.0": LR * 0.125})


def test_gradual_unfreeze_resumes_to_the_same_state(make_network, make_loop):
    first = make_loop(make_network(2), gradual_unfreeze(), 2)
    first.start()
    for epoch in range(2):
        first.epoch(epoch)
    model_state = {k: v.clone() for k, v in first.model.state_dict().items()}
    optim_state = copy.deepcopy(first.ctx.optimizer.state_dict())  # as if read from disk

    # As the trainer resumes after epoch 1: rebuild the model, fit start, ctx.epoch = 2,
    # parameter groups, optimizer, then restore model and optimizer state.
    resumed = make_loop(make_network(2, seed=1), gradual_unfreeze(), 2)
    ctx = resumed.start(epoch=2)
    assert [g["name"] for g in ctx.optimizer.param_groups] == ["head", "backbone.2"]
    resumed.model.load_state_dict(model_state)
    ctx.optimizer.load_state_dict(optim_state)
    assert [p.requires_grad for p in resumed.model.parameters()] == \
        [p.requires_grad for p in first.model.parameters()]

    first.epoch(2)
    resumed.epoch(2)
    assert [g["name"] for g in ctx.optimizer.param_groups] == ["head", "backbone.2",
                                                               "backbone.1"]
    for (name, a), b in zip(first.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float()), name


# -- discriminative learning rates --------------------------------------------------------

def test_discriminative_lr_decay(make_network, make_loop):
    ctx = make_loop(make_network(3), discriminative_lr(), 3).start()
    assert _lrs(ctx.optimizer) == pytest.approx({
        "backbone.0": LR * 0.125, "backbone.1": LR * 0.25, "backbone.2": LR * 0.5, "head": LR})


def test_discriminative_lr_multipliers(make_network, make_loop):
    ctx = make_loop(make_network(2), discriminative_lr(multipliers=[0.1, 0.2, 0.3]), 2).start()
    assert _lrs(ctx.optimizer) == pytest.approx({
        "backbone.0": LR * 0.1, "backbone.1": LR * 0.2, "backbone.2": LR * 0.3, "head": LR})


def test_discriminative_lr_multipliers_must_match_the_groups(make_network, make_loop):
    loop = make_loop(make_network(2), discriminative_lr(multipliers=[0.1, 0.2]), 2)
    with pytest.raises(ConfigError, match=r"strategy\.multipliers.*2 entries.*3 layer groups"):
        loop.start()


# -- L2-SP --------------------------------------------------------------------------------

def test_l2sp_term_is_zero_at_start_and_grows(make_network, make_loop):
    model = make_network(2)
    loop = make_loop(model, l2sp(head_decay=0.01), 2)
    loop.start()
    batch = loop.batches[0]
    terms = _extra_terms(loop, batch, model)
    assert terms["l2sp"].role == "retention" and float(terms["l2sp"].value.detach()) == 0.0
    assert terms["l2sp_head"].role == "auxiliary" and terms["l2sp_head"].weight == 0.01
    assert {g["name"]: g.get("weight_decay") for g in loop.ctx.optimizer.param_groups} == \
        {"backbone": 0.0, "head": 0.0}
    loop.epoch(0)
    value = _extra_terms(loop, batch, model)["l2sp"].value
    assert float(value.detach()) > 0
    # 0.5 * ||w - w0||^2 has gradient w - w0
    model.zero_grad()
    value.backward()
    weight = model.backbone.body[0][0].weight
    reference = loop.ctx.state["l2sp.reference"]["body.0.0.weight"]
    assert torch.allclose(weight.grad, weight.detach() - reference)
    assert "l2sp.reference" not in model.state_dict()


# -- LwF ----------------------------------------------------------------------------------

@pytest.mark.parametrize("with_source_head", [False, True])
def test_lwf_term_is_zero_at_start_and_grows(make_network, make_loop, with_source_head):
    model = make_network(2)
    head = torch.nn.Linear(model.backbone.feature_dim, 5) if with_source_head else None
    loop = make_loop(model, lwf(source_head=head), 2)
    loop.start()
    teacher = loop.ctx.state[TEACHER_KEY]
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert len(model.state_dict()) == len(teacher.state_dict()) + 2  # + head weight, bias
    batch = loop.batches[0]
    model.eval()  # the teacher runs in eval mode; so must the student for an exact 0
    term = _extra_terms(loop, batch, model)["lwf"]
    assert term.role == "retention" and float(term.value.detach()) == pytest.approx(0.0, abs=1e-10)
    loop.epoch(0)
    model.eval()
    assert float(_extra_terms(loop, batch, model)["lwf"].value.detach()) > 0
    loop.hook.medxfer_fit_end(ctx=loop.ctx)
    assert TEACHER_KEY not in loop.ctx.state


# -- scratch ------------------------------------------------------------------------------

def test_scratch_reinitialises_a_backbone_that_loaded_weights(make_network, make_loop):
    model = make_network(2)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.fill_(0.123)
    loop = make_loop(model, scratch(), 2)
    with pytest.warns(UserWarning, match="re-initialised"):
        loop.start()
    assert model.backbone.load_report is None
    assert not torch.all(model.backbone.body[0][0].weight == 0.123)
    assert all(p.requires_grad for p in model.parameters())


def test_scratch_leaves_a_random_backbone_alone(make_network, make_loop):
    model = make_network(2)
    model.backbone.load_report = None
    before = model.backbone.body[0][0].weight.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_loop(model, scratch(), 2).start()
    assert torch.equal(model.backbone.body[0][0].weight, before)
