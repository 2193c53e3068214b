"""The configs the CPU profile serves instead of the production ones: Python twins of the TensorRT and DALI leaves
(same names, I/O and batching), guards sized to them, and the GPU's Python models on the CPU.
"""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc

from python_models.export.repository import GUARD_SPARE_INSTANCES, ModelDefinition


TWIN_INSTANCES = 1


def cpu_twin(definition: ModelDefinition) -> mc.ModelConfig:
    """The Python-backend stand-in for a TensorRT/DALI leaf: same name, I/O and batching, on the CPU."""
    if definition.twin is None:
        raise ValueError(f"{definition.name} runs as it is in the CPU profile")
    twin = mc.ModelConfig()
    twin.CopyFrom(definition.config)
    twin.ClearField("platform")
    twin.backend = "python"
    twin.ClearField("default_model_filename")  # the twin's entry is the Python backend's model.py
    twin.ClearField("instance_group")
    # One instance: ONNX Runtime and DALI already use every core inside it.
    twin.instance_group.append(mc.ModelInstanceGroup(count=TWIN_INSTANCES, kind=mc.ModelInstanceGroup.KIND_CPU))
    # Same warm-up inputs, batch 1 only: a CPU warm-up at batch 128 would only delay the start.
    kept = [w for w in twin.model_warmup if w.batch_size == 1]
    twin.ClearField("model_warmup")
    twin.model_warmup.extend(kept)
    twin.parameters["twin_of"].string_value = definition.config.platform or definition.config.backend
    return twin


def cpu_profile_config(definition: ModelDefinition) -> mc.ModelConfig | None:
    """The config the CPU profile serves instead of the production one, or None when it serves it unchanged.

    TensorRT and DALI leaves become their Python twins (``cpu_twin``); Track D's guard is sized to its twin leaf; a
    Python model placed on the GPU (Track A) runs one instance on the CPU, where PyTorch already uses every core,
    and decodes there (the B/C preprocessing step runs its CPU mode's instances); a KIND_CPU model sized to a GPU
    host's cores runs the instances its definition gives the CPU profile.
    """
    if definition.twin:
        return cpu_twin(definition)
    if definition.calls_leaf:
        # Sized to the leaf it calls, which the CPU profile runs as one twin instance.
        return _with_instances(definition.config, TWIN_INSTANCES + GUARD_SPARE_INSTANCES)
    if any(g.kind == mc.ModelInstanceGroup.KIND_GPU for g in definition.config.instance_group):
        config = mc.ModelConfig()
        config.CopyFrom(definition.config)
        config.ClearField("instance_group")
        config.instance_group.append(mc.ModelInstanceGroup(count=definition.cpu_instances or 1,
                                                           kind=mc.ModelInstanceGroup.KIND_CPU))
        # nvJPEG and the compiled package need a GPU instance (which refuses them otherwise): the CPU decodes and
        # runs the network eagerly.
        for name, value in (("decode", "cpu"), ("network", "eager")):
            if name in config.parameters:
                config.parameters[name].string_value = value
        return config
    if definition.cpu_instances is not None:
        # Sized to a GPU host's cores (the tracking model): the CPU profile's two cores run fewer.
        return _with_instances(definition.config, definition.cpu_instances)
    return None


def _with_instances(production: mc.ModelConfig, count: int) -> mc.ModelConfig:
    """A copy of a config of one instance group, with ``count`` instances in it."""
    config = mc.ModelConfig()
    config.CopyFrom(production)
    (group,) = config.instance_group
    group.count = count
    return config
