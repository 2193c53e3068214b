"""Configs come from one definition, ensembles are consistent, and CPU twins keep the production I/O."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from python_models import contract as c
from python_models import repository as repo
from tritonclient.grpc import model_config_pb2 as mc
from python_models.server import build_cpu_repository

ROOT = Path(__file__).resolve().parents[1]


def test_committed_configs_equal_the_generated_ones():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_configs.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, f"run tools/gen_configs.py: {result.stdout}"
    on_disk = {p.parent.name for p in (ROOT / "model_repository").glob("*/config.pbtxt")}
    assert on_disk == set(repo.definitions_by_name()), "a model folder has no definition, or the reverse"


def test_every_public_model_has_the_contract_io():
    defs = repo.definitions_by_name()
    for name in repo.PUBLIC_MODELS:
        config = defs[name].config
        assert config.max_batch_size > 0
        assert [(i.name, list(i.dims)) for i in config.input] == [(c.INPUT_IMAGES, [-1])]
        assert [(o.name, list(o.dims)) for o in config.output] == [(s.name, list(s.dims)) for s in c.PUBLIC_OUTPUTS]


def test_ensemble_steps_fit_their_leaves():
    defs = repo.definitions_by_name()
    for name in repo.PUBLIC_MODELS:
        ensemble = defs[name].config
        if ensemble.platform != "ensemble":
            continue
        produced = {c.INPUT_IMAGES}
        for step in ensemble.ensemble_scheduling.step:
            leaf = defs[step.model_name].config
            assert leaf.max_batch_size >= ensemble.max_batch_size, (name, step.model_name)
            assert set(step.input_map) == {i.name for i in leaf.input}, step.model_name
            assert set(step.output_map) <= {o.name for o in leaf.output}, step.model_name
            assert set(step.input_map.values()) <= produced, f"{name}: {step.model_name} reads a tensor no step wrote"
            produced |= set(step.output_map.values())
        assert {o.name for o in ensemble.output} <= produced


def test_dali_tiers_have_their_own_leaves_with_tier_settings():
    defs = repo.definitions_by_name()
    for tier in c.DALI_TIERS:
        leaves = repo.leaf_models(defs[repo.dali_ensemble_name(tier)].config)
        assert leaves == [repo.dali_preprocess_name(tier), repo.dali_end2end_name(tier)]
        for leaf in leaves:
            config = defs[leaf].config
            assert config.max_batch_size == tier.max_batch_size
            assert config.dynamic_batching.max_queue_delay_microseconds == tier.max_queue_delay_us
            assert config.instance_group[0].count == tier.instances


def test_cpu_twin_keeps_name_io_and_batching():
    for definition in repo.model_definitions():
        if not definition.twin:
            continue
        twin = repo.cpu_twin(definition)
        prod = definition.config
        assert twin.backend == "python" and not twin.platform
        assert (twin.name, twin.max_batch_size) == (prod.name, prod.max_batch_size)
        assert list(twin.input) == list(prod.input) and list(twin.output) == list(prod.output)
        assert twin.dynamic_batching == prod.dynamic_batching


def test_cpu_repository_links_ensembles_unchanged(tmp_path):
    artifacts = tmp_path / "artifacts"
    (artifacts / repo.RAW_TRT / "1").mkdir(parents=True)
    (artifacts / repo.RAW_TRT / "1" / "model.onnx").write_bytes(b"onnx")
    layout = build_cpu_repository(ROOT / "model_repository", artifacts, tmp_path / "cpu")
    assert {repo.PYTORCH, repo.TRT_ENSEMBLE} <= set(layout.served)
    ensemble = layout.path / repo.TRT_ENSEMBLE / "config.pbtxt"
    assert ensemble.read_bytes() == (ROOT / "model_repository" / repo.TRT_ENSEMBLE / "config.pbtxt").read_bytes()
    twin = repo.parse_pbtxt((layout.path / repo.RAW_TRT / "config.pbtxt").read_text())
    assert twin.backend == "python" and (layout.path / repo.RAW_TRT / "1" / "model.onnx").exists()
    for public, why in layout.skipped.items():
        assert why, public


@pytest.mark.parametrize("name", [repo.PYTORCH, repo.PREPROCESS, repo.NMS])
def test_python_models_point_into_python_models(name):
    entry = (ROOT / "model_repository" / name / "1" / "model.py").read_text()
    assert entry.startswith("from python_models.triton.") and len(entry.splitlines()) == 1


def test_every_batched_model_rejects_instead_of_queueing_without_bound():
    for definition in repo.model_definitions():
        config = definition.config
        if config.platform == "ensemble":
            continue
        policy = config.dynamic_batching.default_queue_policy
        assert policy.timeout_action == mc.ModelQueuePolicy.REJECT, config.name
        assert policy.max_queue_size == repo.QUEUE_DEPTH_PER_BATCH * config.max_batch_size > 0, config.name
        assert 0 < policy.default_timeout_microseconds <= 10_000_000 and policy.allow_timeout_override, config.name


def test_tensorrt_and_dali_leaves_warm_up_on_files_the_repository_holds():
    for definition in repo.model_definitions():
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
        twin = repo.cpu_twin(definition)
        assert [w.batch_size for w in twin.model_warmup] == [1], "the CPU twin warms up on the same inputs, at batch 1"


def test_server_command_restricts_the_apis_that_change_the_server():
    from python_models.server import ADMIN_KEY_HEADER, Ports, TritonInstall, server_command

    cmd = server_command(TritonInstall(Path("/bin/tritonserver"), Path("/backends")), Path("/repo"), Ports(), key="k")
    for flag in ("--grpc-restricted-protocol", "--http-restricted-api"):
        (value,) = [a.split("=", 1)[1] for a in cmd if a.startswith(flag + "=")]
        apis, header = value.split(":", 1)
        assert set(apis.split(",")) == {"model-repository", "shared-memory", "trace", "logging"}
        assert header == f"{ADMIN_KEY_HEADER}=k"
    assert "--model-control-mode=explicit" in cmd and "--load-model=*" in cmd
    assert all(a.endswith("=127.0.0.1") for a in cmd if a.split("=")[0] in ("--http-address", "--grpc-address", "--metrics-address"))
