"""Many teachers, one student: multi-task distillation (Rusu et al. 2016, §4),
one student with a head per task, and several teachers of one task; and the
baseline, a multi-task DQN trained from scratch.

Two tasks with fixed-weight teachers that need no training: CartPole-v1 (the
linear controller of conftest.py, 500 every episode) and MountainCar-v0 (push
the way the car moves: about -112 against random play's -200). A multi-task
student distilled from both must play both, on held-out episodes.
"""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfkd.distillation import Distiller, TeacherEnsemble
from tfkd.models import build_mlp, build_multi_task_student, count_params, task_model, task_names
from tfkd.rl import (
    DistillConfig,
    DQNConfig,
    MultiTaskHistory,
    compare_policies,
    distill,
    distill_multi_task,
    evaluate_policy,
    held_out_seeds,
    make_vector_env,
    normalized_score,
    train_dqn,
    train_multi_task_dqn,
)
from tfkd.rl.loops import MASKED_LOGIT, _packed_view
from tfkd.rl.multi_task_dqn import _make_multi_task_update, _Run

TASKS = {"CartPole-v1": ((4,), 2), "MountainCar-v0": ((2,), 3)}
HELD_OUT = held_out_seeds(0, 10)


def mountain_car_teacher() -> keras.Model:
    """Logits ``[-100 v, 0.001, 100 v]``: push the way the car moves (v: velocity)."""
    inputs = keras.Input((2,))
    layer = keras.layers.Dense(3, name="logits")
    model = keras.Model(inputs, layer(inputs), name="mountain_car_teacher")
    layer.set_weights([np.array([[0, 0, 0], [-100, 0, 100]], np.float32),
                       np.array([0, 1e-3, 0], np.float32)])
    return model


def student(seed=0):
    keras.utils.set_random_seed(seed)
    return build_multi_task_student(TASKS, trunk_units=(32,), adapter_units=32)


def config(**overrides):
    values = dict(env_id=tuple(TASKS), total_env_steps=4_000, steps_per_round=1_000,
                  train_steps_per_round=300, eval_episodes=3, learning_rate=3e-3,
                  progress=False)
    return DistillConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def distilled(cartpole_teacher):
    model = student()
    history = distill_multi_task([cartpole_teacher, mountain_car_teacher()], model, config())
    return model, history


def test_one_student_plays_both_tasks_like_its_teachers(cartpole_teacher, distilled):
    model, history = distilled
    teachers = {"CartPole-v1": cartpole_teacher, "MountainCar-v0": mountain_car_teacher()}
    for env_id, teacher in teachers.items():
        untrained = compare_policies(env_id, teacher, task_model(student(), env_id), HELD_OUT)
        assert untrained.normalized_score < 0.5  # the test can fail
        result = compare_policies(env_id, teacher, task_model(model, env_id), HELD_OUT)
        assert result.normalized_score >= 0.9, (env_id, result.as_dict())
    assert isinstance(history, MultiTaskHistory)
    assert list(history.tasks) == list(TASKS) and history.num_rounds == 4
    for task_history in history.tasks.values():
        assert task_history.env_steps == [1000, 2000, 3000, 4000]  # the budget is per task
        assert task_history.loss == history.tasks["CartPole-v1"].loss  # one shared loss
    best = max(s for s in history.mean_normalized_score if s is not None)
    assert history.mean_normalized_score[history.kept_round] == best


def test_the_student_saves_as_one_keras_file_and_acts_per_task(distilled, tmp_path):
    model, _ = distilled
    model.save(tmp_path / "student.keras")
    loaded = keras.saving.load_model(tmp_path / "student.keras", safe_mode=True)
    assert task_names(loaded) == list(TASKS)
    rng = np.random.default_rng(0)
    for env_id, (shape, num_actions) in TASKS.items():
        x = rng.normal(size=(16, *shape)).astype(np.float32)
        expected = task_model(model, env_id)(x).numpy()
        np.testing.assert_allclose(task_model(loaded, env_id)(x).numpy(), expected, rtol=1e-6)
        assert expected.shape == (16, num_actions)


def test_side_by_side_loss_is_the_mean_kl_over_all_tasks_rows():
    """One step's loss against a float64 NumPy reference: padded actions add nothing."""
    model = student(1)
    rng = np.random.default_rng(1)
    x = {"CartPole-v1": rng.normal(size=(5, 4)), "MountainCar-v0": rng.normal(size=(3, 2))}
    t = [rng.normal(size=(5, 2)), rng.normal(size=(3, 3))]
    s = [task_model(model, env_id)(x[env_id]).numpy().astype(np.float64) for env_id in TASKS]

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    temperature = 2.0
    rows = [np.sum(np.exp(log_softmax(ti / temperature))
                   * (log_softmax(ti / temperature) - log_softmax(si / temperature)), -1)
            for ti, si in zip(t, s)]
    expected = temperature**2 * np.concatenate(rows).mean()

    distiller = Distiller(_packed_view(model, [2, 3]), teacher=None, temperature=temperature)
    distiller.compile()
    padded = np.concatenate([np.pad(t[0], [[0, 0], [0, 1]], constant_values=MASKED_LOGIT), t[1]])
    batch = tf.data.Dataset.from_tensors(  # one batch of 5 + 3 rows, as training stacks them
        ({k: v.astype(np.float32) for k, v in x.items()}, padded.astype(np.float32)))
    result = distiller.evaluate(batch, verbose=0, return_dict=True)
    np.testing.assert_allclose(result["distillation_loss"], expected, rtol=1e-5)


def test_the_multi_task_student_is_small():
    model = build_multi_task_student(
        {"CartPole-v1": ((4,), 2), "Acrobot-v1": ((6,), 3), "LunarLander-v3": ((8,), 4)})
    assert count_params(model) == (4 + 6 + 8 + 3) * 64 + 2 * (64 * 64 + 64) + (65 * 9)


def test_mismatches_are_clear_errors(cartpole_teacher):
    with pytest.raises(ValueError, match="target_return applies to one task"):
        config(target_return=100.0)
    with pytest.raises(ValueError, match="names a task twice"):
        config(env_id=("CartPole-v1", "CartPole-v1"))
    with pytest.raises(ValueError, match="one positive number per task"):
        config(task_proportions=(1.0,))
    with pytest.raises(ValueError, match="1 teachers for 2 tasks"):
        distill_multi_task([cartpole_teacher], student(), config())
    with pytest.raises(ValueError, match="the student's tasks"):
        distill_multi_task([mountain_car_teacher(), cartpole_teacher], student(),
                           config(env_id=("MountainCar-v0", "CartPole-v1")))
    with pytest.raises(ValueError, match="distill_multi_task"):
        distill(cartpole_teacher, student(), config())
    with pytest.raises(ValueError, match="all be vectors or all be frames"):
        build_multi_task_student({"a": ((4,), 2), "b": ((10, 10, 4), 3)})
    with pytest.raises(ValueError, match="share height and width"):
        build_multi_task_student({"a": ((10, 10, 4), 2), "b": ((8, 8, 4), 3)})


def test_task_proportions_split_the_minibatch():
    assert config(batch_size=64).task_batch_sizes() == [64, 64]
    assert config(batch_size=64, task_proportions=(3, 1)).task_batch_sizes() == [96, 32]


def test_each_task_spreads_its_own_budget_over_the_rounds():
    plans = config(total_env_steps=(50_000, 5_000), steps_per_round=5_000,
                   num_envs=8).task_round_steps()
    assert plans[0] == [5_000] * 10  # the largest budget: round_steps() itself
    assert sum(plans[1]) == 5_000 and set(plans[1]) == {496, 504}
    for budgets, message in (((4_000,), "one integer per task"),
                             ((4_000, 16), "too small to collect num_envs")):
        with pytest.raises(ValueError, match=message):
            config(total_env_steps=budgets)


def test_a_task_with_a_smaller_budget_collects_only_that(cartpole_teacher):
    model = student(5)
    history = distill_multi_task(
        [cartpole_teacher, mountain_car_teacher()], model,
        config(total_env_steps=(400, 200), steps_per_round=200, train_steps_per_round=5,
               eval_episodes=0))
    cartpole, mountain_car = history.tasks.values()
    assert cartpole.env_steps == [200, 400] and mountain_car.env_steps == [96, 200]
    assert mountain_car.buffer_size == [96, 200]


def test_a_multi_task_run_resumes_from_its_checkpoint(cartpole_teacher, tmp_path):
    teachers = [cartpole_teacher, mountain_car_teacher()]
    tiny = config(total_env_steps=400, steps_per_round=200, train_steps_per_round=10,
                  eval_episodes=1, checkpoint_dir=str(tmp_path / "run"))
    first = distill_multi_task(teachers, student(), tiny)
    again = distill_multi_task(teachers, student(3), tiny)  # everything comes from the checkpoint
    assert again.resumed_from == first.num_rounds == 2
    assert again.as_dict()["tasks"]["CartPole-v1"]["env_steps"] == [200, 400]


@pytest.mark.parametrize("combination", ["mean", "most_confident"])
def test_a_student_of_two_teachers_follows_the_sure_one(make_cartpole_teacher, combination):
    """Several teachers of one task: a sure controller and an unsure wrong one."""
    sure = make_cartpole_teacher(100.0)
    inputs = keras.Input((4,))
    unsure = keras.Model(inputs, keras.layers.Dense(2, use_bias=False)(inputs))
    unsure.set_weights([-0.01 * sure.get_weights()[0]])  # pushes the wrong way, barely
    ensemble = TeacherEnsemble([sure, unsure], combination, temperature=1.0)
    keras.utils.set_random_seed(0)
    model = build_mlp((4,), 2, (16, 16))
    distill(ensemble, model, DistillConfig(total_env_steps=3_000, steps_per_round=1_000,
                                           train_steps_per_round=300, eval_episodes=3,
                                           learning_rate=3e-3, temperature=1.0, progress=False))
    result = compare_policies("CartPole-v1", sure, model, HELD_OUT)
    assert compare_policies("CartPole-v1", sure, unsure, HELD_OUT).normalized_score < 0.2
    assert result.normalized_score >= 0.9, result.as_dict()


@pytest.mark.slow
def test_multi_task_distillation_on_ray_workers(cartpole_teacher):
    """Each task collects on its own two actors, the tasks side by side."""
    pytest.importorskip("ray")
    model = student()
    history = distill_multi_task([cartpole_teacher, mountain_car_teacher()], model,
                                 config(workers=2, num_envs=4))
    for env_id, teacher in {"CartPole-v1": cartpole_teacher,
                            "MountainCar-v0": mountain_car_teacher()}.items():
        assert history.tasks[env_id].env_steps == [1000, 2000, 3000, 4000]
        result = compare_policies(env_id, teacher, task_model(model, env_id), HELD_OUT)
        assert result.normalized_score >= 0.9, (env_id, result.as_dict())


# ------------------------------------------------- multi-task DQN from scratch

def dqn_config(env_id="CartPole-v1", **overrides):
    values = dict(env_id=env_id, total_env_steps=400, num_envs=4, learning_starts=100,
                  buffer_capacity=1_000, batch_size=16, train_every=4, eval_every=200,
                  eval_episodes=2, target_update_every=100, epsilon_fraction=0.5,
                  progress=False)
    return DQNConfig(**{**values, **overrides})


def dqn_configs(**overrides):
    return [dqn_config(env_id, **overrides) for env_id in TASKS]


def test_multi_task_dqn_of_one_task_trains_as_train_dqn():
    """Task 0 reuses train_dqn's pieces and random streams: the same weights, the same history."""
    one_task = {"CartPole-v1": TASKS["CartPole-v1"]}
    keras.utils.set_random_seed(0)
    alone = build_multi_task_student(one_task, trunk_units=(16,), adapter_units=16)
    single = train_dqn(task_model(alone, "CartPole-v1"), dqn_config())
    keras.utils.set_random_seed(0)
    multi = build_multi_task_student(one_task, trunk_units=(16,), adapter_units=16)
    history = train_multi_task_dqn(multi, [dqn_config()])
    for ours, theirs in zip(multi.get_weights(), alone.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    expected, got = single.as_dict(), history.tasks["CartPole-v1"].as_dict()
    expected.pop("wall_time_s"), got.pop("wall_time_s")
    assert got == expected and history.best_step == single.best_step


def test_one_multi_task_dqn_step_minimises_the_sum_of_the_tasks_td_losses():
    """With SGD the trunk moves by −lr·(∇L_TD,0 + ∇L_TD,1), each adapter by its own task's only."""
    model = student(2)
    configs = dqn_configs()
    envs = [make_vector_env(config.env_id, config.num_envs) for config in configs]
    try:
        run = _Run(model, configs, envs, None)
        for _ in range(10):
            for task in run.tasks:
                task.explorer.step(0)
        batches = [task.sample() for task in run.tasks]
        gradients, losses = [], []
        for task, (s, a, r, s_next, terminated) in zip(run.tasks, batches):
            # The reference: the TD loss written out in NumPy from the networks' Q-values.
            q_next, q_target_next = (np.asarray(net(s_next)) for net in
                                     (task.q_network, task.target_network))
            y = r.numpy() + 0.99 * (1 - terminated.numpy()) * q_target_next[
                np.arange(len(a)), q_next.argmax(-1)]  # the double-DQN target
            with tf.GradientTape() as tape:
                q = tf.gather(task.q_network(s), a, batch_dims=1)
                error = tf.abs(q - y)
                loss = tf.reduce_mean(tf.where(error <= 1, 0.5 * error**2, error - 0.5))
            losses.append(float(loss))
            variables = model.trainable_variables
            gradients.append({v.path: np.zeros(v.shape) if g is None else g.numpy()
                              for v, g in zip(variables, tape.gradient(loss, variables))})
        before = {v.path: v.numpy() for v in model.trainable_variables}
        update = _make_multi_task_update(model, run.tasks, keras.optimizers.SGD(0.1))
        np.testing.assert_allclose(update(batches).numpy(), losses, rtol=1e-5)
    finally:
        for env in envs:
            env.close()
    for task_gradients in gradients:  # both tasks' losses reach the shared trunk
        assert np.abs(task_gradients["trunk_0/kernel"]).max() > 1e-4
    assert np.abs(gradients[0]["adapter_1/kernel"]).max() == 0  # and only their own adapter
    for variable in model.trainable_variables:
        step = -0.1 * (gradients[0][variable.path] + gradients[1][variable.path])
        np.testing.assert_allclose(variable.numpy() - before[variable.path], step, atol=1e-6)


def test_each_task_has_its_own_env_replay_and_budget():
    model = student(3)
    configs = dqn_configs()
    configs[1] = dataclasses.replace(configs[1], batch_size=8, epsilon_final=0.2,
                                     total_env_steps=200)
    envs = [make_vector_env(config.env_id, config.num_envs) for config in configs]
    try:
        run = _Run(model, configs, envs, None)
        history = run.train()
    finally:
        for env in envs:
            env.close()
    cartpole, mountain_car = (task.replay for task in run.tasks)
    # Every env step of its own task, and no more than its budget.
    assert cartpole.size == 400 and mountain_car.size == 200
    assert cartpole.observations.shape[1:] == (4,) and mountain_car.observations.shape[1:] == (2,)
    positions = mountain_car.observations[:200, 0]  # MountainCar's car: in [-1.2, 0.6]
    assert positions.min() >= -1.2 and positions.max() <= 0.6
    assert np.isin(mountain_car.actions, [0, 1, 2]).all() and set(cartpole.actions[:400]) == {0, 1}
    assert (cartpole.rewards[:400] == 1).all() and (mountain_car.rewards[:200] == -1).all()
    assert history.eval_steps == [200, 400]
    for env_id, steps in (("CartPole-v1", [200, 400]), ("MountainCar-v0", [200, 200])):
        task = history.tasks[env_id]
        assert task.env_steps == steps[-1] and task.eval_steps == steps
        # The spent task's replay memory is still sampled by every gradient step.
        assert all(loss is not None for loss in task.eval_loss)
    assert history.tasks["MountainCar-v0"].eval_epsilon[-1] != history.tasks[
        "CartPole-v1"].eval_epsilon[-1]  # each task its own ε schedule


def test_the_kept_network_is_the_best_mean_normalised_score_on_selection_episodes():
    model = student(4)
    references = {"CartPole-v1": 500.0, "MountainCar-v0": -110.0}
    history = train_multi_task_dqn(model, dqn_configs(total_env_steps=600),
                                   reference_returns=references)
    assert history.eval_steps == [200, 400, 600]
    for k, step in enumerate(history.eval_steps):
        returns = [task.eval_return_mean[k] for task in history.tasks.values()]
        assert history.selection_score[k] == pytest.approx(np.mean([
            normalized_score(r, history.random_returns[env_id], references[env_id])
            for r, env_id in zip(returns, TASKS)]))
    best = int(np.argmax(history.selection_score))
    assert history.best_step == history.eval_steps[best]
    for env_id, task in history.tasks.items():  # the network ends with the kept weights
        assert task.best_step == history.best_step
        kept = evaluate_policy(env_id, task_model(model, env_id), task.selection_seeds)
        assert kept.mean == task.best_return == task.eval_return_mean[best]
    json.dumps(history.as_dict(), allow_nan=False)


def test_no_defined_score_keeps_the_last_weights():
    """MountainCar's random play scores −200 like this reference: its score is undefined."""
    model = student(5)
    history = train_multi_task_dqn(model, dqn_configs(total_env_steps=200, eval_every=100),
                                   {"CartPole-v1": 500.0, "MountainCar-v0": -200.0})
    assert history.selection_score == [None, None] and history.best_step is None
    assert all(task.best_return is None for task in history.tasks.values())
    assert history.random_returns["MountainCar-v0"] == -200.0
    json.dumps(history.as_dict(), allow_nan=False)


def test_multi_task_dqn_refuses_bad_settings_in_one_line():
    model = student()
    cases = [
        ([dqn_config()], None, "are not the network's tasks"),
        (dqn_configs()[::-1], None, "are not the network's tasks"),
        ([], None, "one DQNConfig per task"),
        ([dqn_config(), dqn_config("MountainCar-v0", learning_rate=1e-4)], None,
         "must agree on learning_rate"),
        ([dqn_config(), dqn_config("MountainCar-v0", checkpoint_dir="ckpt")], None,
         "must agree on checkpoint_dir"),
        ([dqn_config(), dqn_config("MountainCar-v0", target_return=0.0)], None,
         "does not take target_return"),
        (dqn_configs(), {"CartPole-v1": 500.0}, "one return per task"),
        (dqn_configs(), {"CartPole-v1": 500.0, "MountainCar-v0": float("nan")}, "finite"),
    ]
    for configs, references, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            train_multi_task_dqn(model, configs, reference_returns=references)
        assert "\n" not in str(error.value)


def _without_wall_time(history) -> dict:
    saved = history.as_dict()
    saved.pop("wall_time_s")
    for task in saved["tasks"].values():
        task.pop("wall_time_s")
    return saved


def test_multi_task_dqn_resumes_from_its_checkpoint_and_refuses_another_runs(tmp_path):
    folder = str(tmp_path / "ckpt")
    references = {"CartPole-v1": 500.0, "MountainCar-v0": -110.0}
    first = train_multi_task_dqn(student(6), dqn_configs(checkpoint_dir=folder), references)
    with pytest.raises(ValueError, match=r"other settings \(learning_rate\)") as error:
        train_multi_task_dqn(student(6), dqn_configs(checkpoint_dir=folder, learning_rate=5e-4),
                             references)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="other reference_returns"):
        train_multi_task_dqn(student(6), dqn_configs(checkpoint_dir=folder),
                             {**references, "CartPole-v1": 400.0})
    with pytest.raises(ValueError, match="holds 2 tasks, this run 1"):
        one = {"CartPole-v1": TASKS["CartPole-v1"]}
        train_multi_task_dqn(build_multi_task_student(one, trunk_units=(32,), adapter_units=32),
                             [dqn_config(checkpoint_dir=folder)])

    # A larger budget continues the run: its first evaluations are the first run's.
    longer_model = student(7)  # other initial weights: the checkpoint's replace them
    longer = train_multi_task_dqn(longer_model, dqn_configs(total_env_steps=600,
                                                            checkpoint_dir=folder), references)
    assert longer.eval_steps == [200, 400, 600]
    assert longer.selection_score[:2] == first.selection_score
    for env_id, task in longer.tasks.items():
        assert task.env_steps == 600 and task.eval_steps == [200, 400, 600]
        assert task.eval_return_mean[:2] == first.tasks[env_id].eval_return_mean
        assert task.episode_returns[:len(first.tasks[env_id].episode_returns)] == \
            first.tasks[env_id].episode_returns
    best = int(np.argmax(longer.selection_score))
    assert longer.best_step == longer.eval_steps[best]

    # A finished run given its own budget again trains nothing: the same history and weights.
    again_model = student(8)
    again = train_multi_task_dqn(again_model, dqn_configs(total_env_steps=600,
                                                          checkpoint_dir=folder), references)
    assert _without_wall_time(again) == _without_wall_time(longer)
    for ours, theirs in zip(again_model.get_weights(), longer_model.get_weights()):
        np.testing.assert_array_equal(ours, theirs)


def test_multi_task_dqn_refuses_a_damaged_or_foreign_checkpoint(tmp_path):
    folder = tmp_path / "ckpt"
    train_dqn(task_model(student(9), "CartPole-v1"),
              dqn_config(total_env_steps=200, checkpoint_dir=str(folder)))
    with pytest.raises(ValueError, match="not a multi-task DQN checkpoint"):
        train_multi_task_dqn(student(9), dqn_configs(checkpoint_dir=str(folder)))
    (folder / "latest.json").write_text("{", "utf-8")
    with pytest.raises(ValueError, match="corrupt latest.json"):
        train_multi_task_dqn(student(9), dqn_configs(checkpoint_dir=str(folder)))
