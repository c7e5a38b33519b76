"The exported qoqmed.ecg against the official ECG-JEPA fixture (the notebook tests its own namespace; this tests the package)."
from pathlib import Path

import numpy as np
import pytest
import torch

from qoqmed.ecg import (ECGBridge, ECGCheckpointError, ECGJEPAConfig, ECGJEPAEncoder, ecg_token_counts,
                        load_ecg_jepa, pool_ecg_tokens)

FIXTURE = Path(__file__).resolve().parent/"fixtures"/"ecg_jepa"


@pytest.fixture(scope="module")
def ecg():
    return torch.from_numpy(np.load(FIXTURE/"input_8x2500.npy"))[None]


@pytest.fixture(scope="module")
def encoder():
    return load_ecg_jepa(FIXTURE/"tiny_ecg_jepa.pth")


def test_reproduces_official_outputs(encoder, ecg):
    official_tokens = np.load(FIXTURE/"tokens_400x64.npy")
    official_representation = np.load(FIXTURE/"representation.npy")
    with torch.no_grad():
        tokens, representation = encoder(ecg)[0].numpy(), encoder.representation(ecg)[0].numpy()
    np.testing.assert_allclose(tokens, official_tokens, rtol=0, atol=1e-5 * np.abs(official_tokens).max())
    np.testing.assert_allclose(representation, official_representation, rtol=0, atol=1e-5 * np.abs(official_representation).max())


def test_released_format_has_137_keys():
    with torch.device("meta"):
        full = ECGJEPAEncoder(ECGJEPAConfig())
    keys = list(full.state_dict())
    assert len(keys) == 137 and keys[0] == "pos_embed" and keys[-2:] == ["W_P.weight", "W_P.bias"]
    assert "pos_embed" not in dict(full.named_parameters())


@pytest.mark.parametrize("n_ecg_tokens", [1, 2, 5, 10, 25, 50, 400])
def test_bridge_token_counts(encoder, ecg, n_ecg_tokens):
    bridge = ECGBridge(encoder.config, hidden_size=16, n_ecg_tokens=n_ecg_tokens)
    bridge.encoder.load_state_dict(encoder.state_dict())
    out = bridge(ecg)
    assert out.shape == (1, n_ecg_tokens, 16)
    out.sum().backward()
    assert bridge.encoder.W_P.weight.grad.abs().sum() > 0 and bridge.projection.weight.grad.abs().sum() > 0


def test_pooling_means_agree(encoder, ecg):
    with torch.no_grad():
        tokens = encoder(ecg)
    for t in ecg_token_counts(encoder.config):
        torch.testing.assert_close(pool_ecg_tokens(tokens, t).mean(1), tokens.mean(1), rtol=0, atol=1e-5)


def test_bad_inputs(encoder, tmp_path):
    with pytest.raises(ValueError, match=r"got shape \(1, 12, 5000\)"):
        encoder(torch.zeros(1, 12, 5000))
    with pytest.raises(ValueError, match="dtype torch.int16"):
        encoder(torch.zeros(1, 8, 2500, dtype=torch.int16))
    (tmp_path/"x.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ECGCheckpointError, match="x.pth: not a PyTorch checkpoint"):
        load_ecg_jepa(tmp_path/"x.pth")
    with pytest.raises(ECGCheckpointError, match="wrong shapes"):
        load_ecg_jepa(FIXTURE/"tiny_ecg_jepa.pth", config=ECGJEPAConfig())
