"""The same dropout masks in every pass of one adversary call, as FreeLB's reference code keeps them.

torch's dropout draws from the global generator of the model's device; rewinding that generator to where it
stood before the first pass makes every pass draw the same masks (the passes run the same shapes). Cheap:
it saves and restores a few bytes of generator state, nothing is patched.
"""

from __future__ import annotations

import torch


class DropoutReplay:
    """``rewind()`` before each pass; a no-op when disabled or when the model is not training."""

    def __init__(self, device: torch.device, enabled: bool) -> None:
        self.enabled = enabled
        self.device = device
        self.cpu_state: torch.Tensor | None = None
        self.cuda_state: torch.Tensor | None = None
        if enabled:
            self.cpu_state = torch.get_rng_state()
            if device.type == "cuda":
                self.cuda_state = torch.cuda.get_rng_state(device)

    def rewind(self) -> None:
        if not self.enabled:
            return
        assert self.cpu_state is not None
        torch.set_rng_state(self.cpu_state)
        if self.cuda_state is not None:
            torch.cuda.set_rng_state(self.cuda_state, self.device)
