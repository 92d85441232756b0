"""Train a small MLP on synthetic data (three Gaussian blobs) and save its weights to model/."""

from pathlib import Path

import torch
from net import CLASSES, FEATURES, make_net


def main() -> None:
    torch.manual_seed(0)
    centres = torch.randn(CLASSES, FEATURES) * 3
    labels = torch.randint(0, CLASSES, (600,))
    features = centres[labels] + torch.randn(600, FEATURES)
    net = make_net()
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(features), labels)
        loss.backward()
        optimiser.step()
    out = Path(__file__).parent / "model"
    out.mkdir(exist_ok=True)
    torch.save({"state_dict": net.state_dict(), "centres": centres}, out / "mlp.pt")
    print(f"wrote {out / 'mlp.pt'} (final loss {loss.item():.4f})")


if __name__ == "__main__":
    main()
