"""Configs come from one definition, ensembles are consistent, and CPU twins keep the production I/O."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from python_models import contract as c
from python_models.export import repository as repo
from python_models.export import cpu_configs
from python_models.export import repository_files
from tritonclient.grpc import model_config_pb2 as mc
from python_models.serving.cpu_profile import build_cpu_repository

ROOT = Path(__file__).resolve().parents[1]


def test_committed_configs_equal_the_generated_ones():
    result = subprocess.run([sys.executable, "-m", "python_models", "dev", "gen-configs", "--check"], capture_output=True, text=True)
    assert result.returncode == 0, f"run yolo11-triton dev gen-configs: {result.stdout}"
    on_disk = {p.parent.name for p in (ROOT / "model_repository").glob("*/config.pbtxt")}
    assert on_disk == set(repo.definitions_by_name(repo.default_spec())), "a model folder has no definition, or the reverse"


def test_every_public_model_has_the_contract_io():
    defs = repo.definitions_by_name(repo.default_spec())
    for name in repo.PUBLIC_MODELS:
        config = defs[name].config
        assert config.max_batch_size > 0
        assert [(i.name, list(i.dims)) for i in config.input] == [(c.INPUT_IMAGES, [-1])]
        assert [(o.name, list(o.dims)) for o in config.output] == [(s.name, list(s.dims))
                                                                   for s in repo.default_spec().public_outputs()]
        assert c.ModelSpec.from_metadata(config.parameters[c.METADATA].string_value) == repo.default_spec()


def _ensemble_problems(defs: dict, names) -> list[str]:
    problems = []
    for name in names:
        ensemble = defs[name].config
        if ensemble.platform != "ensemble":
            continue
        produced = {c.INPUT_IMAGES}
        for step in ensemble.ensemble_scheduling.step:
            leaf = defs[step.model_name].config
            if leaf.max_batch_size < ensemble.max_batch_size:
                problems.append(f"{name}: {step.model_name} batches less than the ensemble")
            if set(step.input_map) != {i.name for i in leaf.input}:
                problems.append(f"{name}: {step.model_name} inputs {set(step.input_map)}")
            if not set(step.output_map) <= {o.name for o in leaf.output}:
                problems.append(f"{name}: {step.model_name} has no output {set(step.output_map)}")
            if not set(step.input_map.values()) <= produced:
                problems.append(f"{name}: {step.model_name} reads a tensor no step wrote")
            produced |= set(step.output_map.values())
        if not {o.name for o in ensemble.output} <= produced:
            problems.append(f"{name}: outputs no step wrote")
    return problems


def test_ensemble_steps_fit_their_leaves():
    defs = repo.definitions_by_name(repo.default_spec())
    assert _ensemble_problems(defs, repo.PUBLIC_MODELS) == []


def test_the_preprocessing_benchmark_ensemble_fits_its_leaves_and_preprocesses_as_exported():
    """yolo11-triton bench preprocess's ensemble: the exported preprocessing step, unchanged, then a step that only
    consumes its output."""
    spec = repo.default_spec()
    defs = {d.name: d for d in repo.preprocess_only_definitions(spec)}
    assert _ensemble_problems(defs, [repo.PREPROCESS_ONLY]) == []
    assert defs[repo.PREPROCESS].config == repo.definitions_by_name(spec)[repo.PREPROCESS].config
    broken = {**defs, repo.CONSUME: repo.ModelDefinition(repo.definitions_by_name(spec)[repo.NMS].config)}
    assert _ensemble_problems(broken, [repo.PREPROCESS_ONLY]), "a step whose inputs do not fit is found"


def test_the_step_benchmark_serves_the_instance_count_asked_and_the_exported_one_by_default(tmp_path):
    from python_models.cli import bench_preprocess

    def served_count(root):
        return repository_files.parse_pbtxt((root / repo.PREPROCESS / "config.pbtxt").read_text()).instance_group[0].count

    exported = repo.preprocess_definition(repo.default_spec(), "gpu").config.instance_group[0].count
    assert served_count(bench_preprocess.layout(tmp_path / "as_exported", 0, "gpu")) == exported
    assert served_count(bench_preprocess.layout(tmp_path / "four", 0, "gpu", instances=4)) == 4
    assert bench_preprocess.step_instances("gpu", 0) == exported and bench_preprocess.step_instances("gpu", 4) == 4


def test_the_preprocessing_step_decodes_on_the_gpu_of_a_gpu_host_and_on_the_cpu_in_the_cpu_profile():
    """Tracks B and C's step: on a GPU host its GPU mode (``decode gpu``, KIND_GPU, measured faster) unless the export
    says ``--preprocess-decode cpu``; the CPU profile runs the CPU mode's instances; both modes have the same I/O; the
    benchmark's consumer takes device tensors where they are."""
    spec = repo.default_spec()
    served = repo.definitions_by_name(spec)[repo.PREPROCESS]
    cpu = repo.definitions_by_name(spec, preprocess_decode="cpu")[repo.PREPROCESS].config
    assert served.config.parameters["decode"].string_value == repo.PREPROCESS_DECODE == "gpu"  # results/h200_issue25
    assert served.config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert cpu.parameters["decode"].string_value == "cpu" and cpu.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert (list(cpu.input), list(cpu.output)) == (list(served.config.input), list(served.config.output))
    assert cpu_configs.cpu_profile_config(served) == cpu, "the CPU profile serves the CPU mode, four instances and all"
    broken = dataclasses.replace(served, cpu_instances=1)
    assert cpu_configs.cpu_profile_config(broken) != cpu
    defs = {d.name: d for d in repo.preprocess_only_definitions(spec, "gpu")}
    assert _ensemble_problems(defs, [repo.PREPROCESS_ONLY]) == []
    assert defs[repo.CONSUME].config.parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value == "no"
    with pytest.raises(ValueError, match="must be one of"):
        repo.preprocess_definition(spec, "nvjpeg")


def test_track_a_states_where_it_suppresses_and_the_served_default_is_what_measured_faster():
    config = repo.definitions_by_name(repo.default_spec())[repo.PYTORCH].config
    assert config.parameters["nms"].string_value == repo.PYTORCH_NMS == "host"  # results/h200_issue25
    assert repo.PYTORCH_NMS in c.TRACK_A_NMS


def test_dali_tiers_have_their_own_leaves_with_tier_settings():
    defs = repo.definitions_by_name(repo.default_spec())
    for tier in c.DALI_TIERS:
        leaves = repo.request_path(repo.dali_ensemble_name(tier), defs)
        assert leaves == [repo.dali_guard_name(tier), repo.dali_preprocess_name(tier), repo.dali_end2end_name(tier)]
        guard, dali, engine = (defs[name].config for name in leaves)
        for config in (guard, dali, engine):
            assert config.max_batch_size == tier.max_batch_size
        for config in (dali, engine):
            assert config.instance_group[0].count == tier.instances
        # The guard batches for the tier; the DALI leaf decodes each call as sent, so a call it fails holds only what
        # the guard put in it (never another guard instance's rows), and a row's pixels are those of its own call.
        for config in (guard, engine):
            assert config.dynamic_batching.max_queue_delay_microseconds == tier.max_queue_delay_us
        assert not dali.HasField("dynamic_batching")
        assert guard.dynamic_batching.default_queue_policy.max_queue_size == \
            repo.QUEUE_DEPTH_PER_BATCH * tier.max_batch_size


def test_cpu_twin_keeps_name_io_and_batching():
    for definition in repo.model_definitions(repo.default_spec()):
        if not definition.twin:
            continue
        twin = cpu_configs.cpu_twin(definition)
        prod = definition.config
        assert twin.backend == "python" and not twin.platform
        assert (twin.name, twin.max_batch_size) == (prod.name, prod.max_batch_size)
        assert list(twin.input) == list(prod.input) and list(twin.output) == list(prod.output)
        assert twin.dynamic_batching == prod.dynamic_batching


def test_cpu_repository_serves_ensembles_as_production_has_them(tmp_path):
    artifacts = tmp_path / "artifacts"
    for leaf in (repo.RAW_TRT, repo.ULTRALYTICS_RAW_TRT):  # Track B's engine and the one served beside it
        (artifacts / leaf / "1").mkdir(parents=True)
        (artifacts / leaf / "1" / "model.onnx").write_bytes(b"onnx")
    layout = build_cpu_repository(repo.default_spec(), artifacts, tmp_path / "cpu")
    assert {repo.PYTORCH, repo.TRT_ENSEMBLE} <= set(layout.served)
    ensemble = layout.path / repo.TRT_ENSEMBLE / "config.pbtxt"
    assert ensemble.read_bytes() == (ROOT / "model_repository" / repo.TRT_ENSEMBLE / "config.pbtxt").read_bytes()
    twin = repository_files.parse_pbtxt((layout.path / repo.RAW_TRT / "config.pbtxt").read_text())
    assert twin.backend == "python" and (layout.path / repo.RAW_TRT / "1" / "model.onnx").exists()
    for public, why in layout.skipped.items():
        assert why, public


def test_queue_bounds_of_models_on_every_gpu_scale_with_the_serving_host_s_gpus():
    """Instances of a KIND_GPU group go on every GPU; the queue bound is the model's: export --gpus 2 doubles the bound
    of each model placed on the GPUs (Track A's among them) and leaves the CPU steps' as they were."""
    one = repo.definitions_by_name(repo.default_spec())
    two = repo.definitions_by_name(repo.default_spec(), gpus=2)
    scaled = set()
    for name, definition in one.items():
        bound = definition.config.dynamic_batching.default_queue_policy.max_queue_size
        # Track D's guard holds the queue of its tier's DALI leaf, which runs on every GPU and queues nothing itself
        on_gpus = any(g.kind == g.KIND_GPU for g in definition.config.instance_group) or definition.calls_leaf
        assert two[name].config.dynamic_batching.default_queue_policy.max_queue_size == bound * (2 if on_gpus else 1)
        if on_gpus and bound:
            scaled.add(name)
    assert repo.PYTORCH in scaled and repo.NMS not in scaled, scaled
    assert {repo.dali_guard_name(tier) for tier in c.DALI_TIERS} <= scaled, scaled
    with pytest.raises(ValueError):
        repo.model_definitions(repo.default_spec(), gpus=0)


def test_the_tracking_model_calls_the_detection_track_the_export_chose_the_fastest_of_the_profile_by_default(
        tmp_path, monkeypatch):
    """``--track-detector auto``: Track A in the production configs (a GPU host), Track C in the CPU profile; a named
    track everywhere. What the tracking model needs loaded and built follows its detector."""
    spec = repo.default_spec()
    config = repo.definitions_by_name(spec)[c.TRACK].config
    assert config.parameters["detector"].string_value == repo.FASTEST_DETECTOR["gpu"] == repo.PYTORCH
    assert config.instance_group[0].count == repo.TRACK_INSTANCES and config.input[0].allow_ragged_batch
    from python_models.export.artifacts import end2end_onnx

    end2end_onnx(tmp_path / "artifacts").parent.mkdir(parents=True)
    end2end_onnx(tmp_path / "artifacts").write_bytes(b"onnx")  # what Track C's twin runs
    layout = build_cpu_repository(spec, tmp_path / "artifacts", tmp_path / "cpu", models=[c.TRACK])
    assert layout.served == [c.TRACK], layout.skipped
    cpu = repository_files.parse_pbtxt((layout.path / c.TRACK / "config.pbtxt").read_text())
    assert cpu.parameters["detector"].string_value == repo.FASTEST_DETECTOR["cpu"] == repo.END2END_ENSEMBLE
    assert cpu.instance_group[0].count == 1, "the CPU profile's two cores run one tracking instance"
    chosen = repo.TrackingOptions(detector=repo.TRT_ENSEMBLE, tracker="botsort", idle_s=2.5)
    named = repo.definitions_by_name(spec, tracking=chosen)
    track = named[c.TRACK].config
    assert track.parameters["detector"].string_value == repo.TRT_ENSEMBLE == chosen.for_profile("cpu").detector
    assert track.parameters["tracker"].string_value == "botsort"
    assert track.sequence_batching.max_sequence_idle_microseconds == 2_500_000
    assert repo.models_behind(c.TRACK, named)[:2] == [repo.TRT_ENSEMBLE, repo.PREPROCESS]
    # asked for the tracking model alone, a GPU host builds what its detector runs: Track A's compiled network
    from python_models.export import compiled_network, engine_build

    built = []
    monkeypatch.setattr(engine_build, "build_engines", lambda *a, **k: [])
    monkeypatch.setattr(compiled_network, "build_track_a", lambda *a, **k: built.append("track a") or [])
    assert engine_build.build_for_gpu_profile(tmp_path, spec, [c.TRACK]) == [] and built == ["track a"]
    for wrong in ({"detector": c.TRACK}, {"tracker": "sort"}, {"idle_s": 0}):
        with pytest.raises(ValueError):
            repo.TrackingOptions(**wrong)


@pytest.mark.parametrize("name", [repo.PYTORCH, repo.PREPROCESS, repo.NMS])
def test_python_models_point_into_python_models(name):
    entry = (ROOT / "model_repository" / name / "1" / "model.py").read_text()
    assert entry.startswith("from python_models.runtime.triton.") and len(entry.splitlines()) == 1


def test_every_batched_model_rejects_instead_of_queueing_without_bound():
    for definition in repo.model_definitions(repo.default_spec()):
        config = definition.config
        if config.platform == "ensemble":
            continue
        if config.HasField("sequence_batching"):
            # the tracking model: a stream has one frame in flight (its client sends the next after the answer), and
            # an instance holds max_batch_size streams; the detection track it calls has the bounded queue
            oldest = config.sequence_batching.oldest
            assert oldest.max_candidate_sequences == config.max_batch_size > 0, config.name
            assert not config.HasField("dynamic_batching"), config.name
            continue
        if config.backend == "dali":
            # a DALI leaf decodes each call of its guard as sent; the guard's queue (checked here too) is the tier's
            assert not config.HasField("dynamic_batching"), config.name
            continue
        policy = config.dynamic_batching.default_queue_policy
        assert policy.timeout_action == mc.ModelQueuePolicy.REJECT, config.name
        assert policy.max_queue_size == repo.QUEUE_DEPTH_PER_BATCH * config.max_batch_size > 0, config.name
        assert 0 < policy.default_timeout_microseconds <= 10_000_000 and policy.allow_timeout_override, config.name


def test_tensorrt_and_dali_leaves_warm_up_on_files_the_repository_holds():
    for definition in repo.model_definitions(repo.default_spec()):
        config = definition.config
        if config.platform != "tensorrt_plan" and config.backend != "dali":
            assert not config.model_warmup, config.name
            continue
        sizes = sorted(w.batch_size for w in config.model_warmup)
        assert sizes == sorted({1, config.max_batch_size}), config.name
        for warmup in config.model_warmup:
            assert set(warmup.inputs) == {i.name for i in config.input}, config.name
            for name, value in warmup.inputs.items():
                if value.input_data_file:
                    path = ROOT / "model_repository" / config.name / "warmup" / value.input_data_file
                    assert path.is_file(), path
                    if config.backend == "dali":
                        assert list(value.dims) == [path.stat().st_size]
        twin = cpu_configs.cpu_twin(definition)
        assert [w.batch_size for w in twin.model_warmup] == [1], "the CPU twin warms up on the same inputs, at batch 1"


def test_server_command_restricts_the_apis_that_change_the_server():
    from python_models.serving.triton import ADMIN_KEY_HEADER, Ports, TritonInstall, server_command

    cmd = server_command(TritonInstall(Path("/bin/tritonserver"), Path("/backends")), Path("/repo"), Ports(), key="k")
    for flag in ("--grpc-restricted-protocol", "--http-restricted-api"):
        (value,) = [a.split("=", 1)[1] for a in cmd if a.startswith(flag + "=")]
        apis, header = value.split(":", 1)
        assert set(apis.split(",")) == {"model-repository", "shared-memory", "trace", "logging"}
        assert header == f"{ADMIN_KEY_HEADER}=k"
    assert "--model-control-mode=explicit" in cmd and "--load-model=*" in cmd
    assert all(a.endswith("=127.0.0.1") for a in cmd if a.split("=")[0] in ("--http-address", "--grpc-address", "--metrics-address"))


def test_every_track_d_ensemble_checks_rows_on_the_cpu_and_calls_its_dali_leaf_from_there():
    """Each tier's guard takes the public request first, calls the tier's DALI leaf (so that a batch DALI fails can be
    answered request by request) and hands the engine what the leaf returns."""
    defs = repo.definitions_by_name(repo.default_spec())
    for tier in c.DALI_TIERS:
        guard = defs[repo.dali_guard_name(tier)]
        config = guard.config
        assert config.backend == "python" and all(g.kind == mc.ModelInstanceGroup.KIND_CPU for g in config.instance_group)
        assert guard.calls == config.parameters["dali_model"].string_value == repo.dali_preprocess_name(tier)
        assert config.max_batch_size == tier.max_batch_size
        assert config.instance_group[0].count == tier.instances + repo.GUARD_SPARE_INSTANCES
        dali = defs[guard.calls].config
        assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == \
            [(i.name, i.data_type, list(i.dims)) for i in dali.input]
        assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == \
            [(o.name, o.data_type, list(o.dims)) for o in dali.output], "the guard hands on what the leaf returns"
        first, engine = defs[repo.dali_ensemble_name(tier)].config.ensemble_scheduling.step
        assert first.model_name == guard.name and dict(first.input_map) == {c.INPUT_IMAGES: c.INPUT_IMAGES}
        assert engine.model_name == repo.dali_end2end_name(tier)
        assert guard.calls in repo.models_behind(repo.dali_ensemble_name(tier), defs), "the leaf is loaded with it"
        twin_group = cpu_configs.cpu_profile_config(guard).instance_group
        assert [g.count for g in twin_group] == [cpu_configs.TWIN_INSTANCES + repo.GUARD_SPARE_INSTANCES]


def test_track_a_runs_the_measured_instances_per_gpu_and_one_on_the_cpu():
    definition = repo.definitions_by_name(repo.default_spec())[repo.PYTORCH]
    (group,) = definition.config.instance_group
    assert (group.kind, group.count) == (mc.ModelInstanceGroup.KIND_GPU, repo.PYTORCH_GPU_INSTANCES) and group.count == 4
    cpu = cpu_configs.cpu_profile_config(definition)
    assert [(g.kind, g.count) for g in cpu.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 1)]
    on_gpu_only = {"decode": ("gpu", "cpu"), "network": (repo.PYTORCH_NETWORK, "eager")}  # nvJPEG, compiled network
    for name, (gpu, cpu_value) in on_gpu_only.items():
        assert (definition.config.parameters[name].string_value, cpu.parameters[name].string_value) == (gpu, cpu_value)
    assert {k: v for k, v in cpu.parameters.items() if k not in on_gpu_only} == {
        k: v for k, v in definition.config.parameters.items() if k not in on_gpu_only}
    assert cpu.dynamic_batching == definition.config.dynamic_batching
    assert cpu_configs.cpu_profile_config(repo.definitions_by_name(repo.default_spec())[repo.TRT_ENSEMBLE]) is None


def test_memory_pools_hold_every_dali_batch_in_flight_and_what_cpu_steps_hand_the_engines(monkeypatch):
    from python_models.serving.triton import (
        BATCHES_IN_FLIGHT,
        TRITON_DEFAULT_PINNED_BYTES,
        letterboxed_bytes,
        memory_pools,
    )

    spec = repo.default_spec()
    cuda, pinned = memory_pools(spec)
    per_image = 3 * spec.imgsz * spec.imgsz  # uint8 RGB between the steps
    assert letterboxed_bytes(spec) >= per_image
    need = sum(BATCHES_IN_FLIGHT * t.instances * t.max_batch_size * per_image for t in c.DALI_TIERS)
    assert cuda >= need > 64 * 2**20, "Triton's default 64 MB pool holds about 13 letterboxed images"
    largest = max(t.max_batch_size * per_image for t in c.DALI_TIERS)
    assert largest >= 150 * 2**20 and cuda > largest
    engines_fed_by_python = [repo.RAW_TRT, repo.END2END_TRT]
    defs = repo.definitions_by_name(repo.default_spec())
    fed = sum(defs[e].config.max_batch_size * per_image * defs[e].config.instance_group[0].count for e in engines_fed_by_python)
    # Either mode of tracks B/C's step: from the host (pinned) or from the GPU (CUDA), whichever the export chose.
    assert pinned >= TRITON_DEFAULT_PINNED_BYTES + fed and cuda >= need + fed
    # Larger images need larger pools, four times at twice the side.
    large = dataclasses.replace(spec, imgsz=2 * spec.imgsz)
    assert memory_pools(large)[0] >= 3.9 * cuda
    # A planted mistake is caught: a tier twice as wide needs a bigger pool.
    wider = [d for d in repo.model_definitions(spec)]
    for d in wider:
        if d.config.backend == "dali":
            d.config.max_batch_size *= 2
    monkeypatch.setattr(repo, "model_definitions", lambda _: wider)
    assert memory_pools(spec)[0] > cuda


def test_gpu_command_sizes_the_pools_and_a_failed_model_leaves_the_others_serving(monkeypatch):
    from python_models.serving.triton import Ports, TritonInstall, memory_pools, server_command

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    install = TritonInstall(Path("/bin/tritonserver"), Path("/backends"))
    gpu = server_command(install, Path("/repo"), Ports(), key="k", profile="gpu", load=["yolo11_pytorch"],
                         spec=repo.default_spec())
    cuda, pinned = memory_pools(repo.default_spec())
    assert f"--cuda-memory-pool-byte-size=0:{cuda}" in gpu and f"--cuda-memory-pool-byte-size=1:{cuda}" in gpu
    assert f"--pinned-memory-pool-byte-size={pinned}" in gpu
    assert "--load-model=yolo11_pytorch" in gpu and "--load-model=*" not in gpu
    cpu = server_command(install, Path("/repo"), Ports(), key="k")
    assert not any(a.startswith(("--cuda-memory-pool", "--pinned-memory-pool")) for a in cpu)
    for command in (gpu, cpu):
        assert "--exit-on-error=false" in command and "--strict-readiness=true" in command
        assert "--exit-on-error=true" not in command


def test_dali_leaves_name_their_python_pipeline_so_the_backend_never_runs_model_dali_as_python():
    """The DALI backend (r26.05 dali_model.h, LoadModel) tries default_model_filename as a serialised pipeline, then
    autoserialises that same file, then dali.py. Left at model.dali, the second step imports a file without .py:
    importlib finds no loader and a traceback is logged at every load. Naming dali.py skips that step."""
    for definition in repo.model_definitions(repo.default_spec()):
        if definition.config.backend != "dali":
            continue
        (name,) = repository_files.version_files(definition)
        assert definition.config.default_model_filename == name and name.endswith(".py"), definition.name
        assert not cpu_configs.cpu_twin(definition).default_model_filename, "the Python twin loads its model.py"


def test_a_model_an_earlier_export_wrote_and_this_one_does_not_is_removed_and_a_users_own_model_is_kept(tmp_path):
    """Triton loads every folder of the repository: the folder of a leaf since renamed (yolo11_end2end_trt, now
    yolo11_end2end_plan), its plan included, must go when the export writes again; a model the user put there
    (a config this project did not write) stays."""
    from python_models.export.repository_files import generated, write_repository

    spec = repo.default_spec()
    write_repository(tmp_path, spec)
    old = tmp_path / "yolo11_end2end_trt"
    (old / "1").mkdir(parents=True)
    (old / "1" / "model.plan").write_bytes(b"engine")
    (old / "config.pbtxt").write_text("# Generated by tools/gen_configs.py from python_models/build/repository.py. "
                                      "Do not edit.\nname: \"yolo11_end2end_trt\"\n")
    mine = tmp_path / "my_classifier"
    (mine / "1").mkdir(parents=True)
    (mine / "config.pbtxt").write_text('name: "my_classifier"\nbackend: "python"\n')
    assert write_repository(tmp_path, spec, check=True) == [old], "reported, nothing removed"
    assert old.exists()
    write_repository(tmp_path, spec)
    assert not old.exists() and mine.exists() and (tmp_path / repo.END2END_TRT / "config.pbtxt").exists()
    assert write_repository(tmp_path, spec, check=True) == []
    assert not generated('name: "my_classifier"\n') and generated((tmp_path / repo.PYTORCH / "config.pbtxt").read_text())
