"""Security defaults of the served server: loopback only, and the APIs that change it need a key nobody was given."""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def test_model_repository_api_is_refused_without_the_admin_key(server):
    request = urllib.request.Request(f"http://{server.http_url}/v2/repository/index", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert "restricted" in err.value.read().decode()
    with pytest.raises(InferenceServerException) as grpc_err:
        server.grpc().unload_model("yolo11_pytorch")
    assert "restricted" in grpc_err.value.message().lower()
    assert server.grpc().is_model_ready("yolo11_pytorch"), "nothing was unloaded"


def test_shared_memory_registration_is_refused(server):
    with pytest.raises(InferenceServerException) as err:
        server.grpc().register_system_shared_memory("region", "/yolo11_test_region", 1024)
    assert "restricted" in err.value.message().lower()


def test_inference_health_and_metadata_stay_open(server, samples):
    client = server.grpc()
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_model_metadata("yolo11_trt").name == "yolo11_trt"
    inp = grpcclient.InferInput("images", [1, len(samples["bus.jpg"])], "UINT8")
    inp.set_data_from_numpy(np.frombuffer(samples["bus.jpg"], np.uint8)[None])
    assert client.infer("yolo11_trt", [inp]).as_numpy("num_detections")[0, 0] > 0


def test_server_listens_on_loopback_only(server):
    text = server.log.read_text()
    assert "HTTP 127.0.0.1:" in text and "gRPC 127.0.0.1:" in text and "metrics 127.0.0.1:" in text
    assert "APIs are off" in text, "no admin key was set, so the restricted APIs must be off"
