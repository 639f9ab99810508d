"""BatchNorm over the global batch: every process normalises with the statistics of all processes' images.

CvT's convolutional projections use BatchNorm; with a few images per process, per-process statistics are noisy
and differ from a single process with the whole batch. ``torch.nn.SyncBatchNorm`` synchronises them but refuses
CPU tensors (its kernels are CUDA's), so on other devices :class:`CrossProcessBatchNorm2d` does the same with two
all-reduces of PyTorch's functional collectives, which autograd differentiates (the backward of a sum over
processes is a sum over processes): sums and counts for the mean, then squared deviations for the variance.
"""

import torch
import torch.distributed as dist
from torch import nn


def _synchronising() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class CrossProcessBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training statistics cover every process's batch; the same state dict.

    Processes may hold different numbers of images (unreadable ones skipped): the mean and variance are over all
    images, as one process holding the global batch would compute them. In eval mode, or on one process, it is
    plain BatchNorm.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _synchronising()):
            return super().forward(x)
        from torch.distributed._functional_collectives import all_reduce, wait_tensor

        def total(t: torch.Tensor) -> torch.Tensor:
            return wait_tensor(all_reduce(t, "sum", dist.group.WORLD))

        xf = x.float()
        dims = [0, 2, 3]
        count = torch.tensor([x.numel() // x.shape[1]], dtype=xf.dtype, device=x.device)
        sums = total(torch.cat([xf.sum(dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = xf - mean[None, :, None, None]
        var = total(centred.square().sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.item()
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                unbiased = var.detach() * (n / (n - 1).clamp(min=1))
                self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        return y.to(x.dtype)


def convert_batchnorm(model: nn.Module, device: torch.device) -> int:
    """Swap every ``BatchNorm2d`` of ``model`` (in place) for a synchronised one; return how many.

    On CUDA the swap is to ``torch.nn.SyncBatchNorm`` (PyTorch's fused kernels); elsewhere to
    :class:`CrossProcessBatchNorm2d`. Parameters and buffers are kept, so the state dict does not change.
    """
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.BatchNorm2d:
                continue
            kind = nn.SyncBatchNorm if device.type == "cuda" else CrossProcessBatchNorm2d
            new = kind(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            # the same Parameter and buffer objects (as nn.SyncBatchNorm.convert_sync_batchnorm does)
            new.weight, new.bias = child.weight, child.bias
            new.running_mean, new.running_var = child.running_mean, child.running_var
            new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(parent, name, new)
            count += 1
    return count
