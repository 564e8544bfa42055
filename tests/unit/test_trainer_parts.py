"""The trainer's pieces in-process: every sample once per epoch across ranks, the warmup-decay schedule, the
fp16 loss-scale watch, the loss curve's labels."""


import numpy as np
import pytest
import torch

from medtrain.train.batches import StepPlan
from medtrain.train.trainer import LossScaleWatch, TrainingError, lr_factor, lr_scheduler


def test_every_sample_is_seen_exactly_once_per_epoch_across_ranks():
    for world, micro in ((1, 2), (2, 2), (4, 1)):
        plan = StepPlan(num_samples=37, global_batch=8, micro_batch=micro, world_size=world, seed=3)
        seen = [i for step in range(plan.steps_per_epoch) for r in range(world) for m in plan.micro_ids(step, r)
                for i in m if i >= 0]
        assert sorted(seen) == list(range(37))
    a = StepPlan(37, 8, 2, 2, seed=3)
    b = StepPlan(37, 8, 1, 4, seed=3)
    assert all(np.array_equal(a.step_ids(s), b.step_ids(s)) for s in range(10))  # order ignores world size


def test_warmup_decay_never_trains_a_step_at_lr_zero():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = lr_scheduler(opt, {"type": "linear", "lr": 2e-5, "warmup_steps": 3, "schedule_steps": 10})
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(2e-5 / 3) and lrs[2] == pytest.approx(2e-5) and min(lrs) > 0
    assert lrs == sorted(lrs[:3]) + sorted(lrs[3:], reverse=True)


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_each_schedule_warms_up_then_takes_its_shape(kind):
    schedule = {"type": kind, "lr": 1.0, "warmup_steps": 4, "schedule_steps": 104}
    f = [lr_factor(schedule, i) for i in range(104)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    if kind == "constant":
        assert set(f[4:]) == {1.0}
    else:
        assert f[4:] == sorted(f[4:], reverse=True) and f[-1] < 0.02
        assert f[54] == pytest.approx(0.5, abs=0.02)  # halfway through the decay: half the peak for both


def test_collapsed_fp16_loss_scale_stops_the_run_after_patience_steps():
    watch = LossScaleWatch(min_scale=1, patience=3)
    watch.update(1024.0, 0)
    watch.update(1.0, 1)  # at the floor and overflowing: 1
    watch.update(2.0, 1)  # recovered: streak resets
    for skipped in (2, 3):
        watch.update(1.0, skipped)
    with pytest.raises(TrainingError, match="loss scale has sat at its minimum \\(1\\) for 3 steps"):
        watch.update(1.0, 4)


def test_loss_curve_labels_tell_runs_with_the_same_name_apart(tmp_path):
    from medtrain.train.loss_curve import run_labels

    assert run_labels([tmp_path / "a" / "continual", tmp_path / "b" / "continual"]) == ["a/continual",
                                                                                      "b/continual"]
    assert run_labels([tmp_path / "x", tmp_path / "y"]) == ["x", "y"]


def test_weight_decay_groups_are_the_hf_trainers():
    """Matrices and embeddings decay, norms do not, in the Trainer's order (its get_decay_parameter_names)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    from medtrain.train.trainer import param_groups

    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2))
    decay, keep = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    trainer = Trainer(model=model, args=TrainingArguments(output_dir="/nonexistent", report_to=[], use_cpu=True))
    want = set(trainer.get_decay_parameter_names(model))
    assert [names[id(p)] for p in decay["params"]] == [n for n, _ in model.named_parameters() if n in want]
    assert {names[id(p)] for p in keep["params"]} == {n for n, _ in model.named_parameters()} - want
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0 and keep["params"]
