"""Independent float64 references, written from the papers' formulas with plain autograd."""
import math

import torch


def one_hot(labels, num_classes):
    t = torch.zeros(labels.shape[0], num_classes + 1, dtype=torch.float64)
    t[torch.arange(labels.shape[0]), labels] = 1
    return t[:, :num_classes]


def sigmoid_focal(x, t, alpha=0.25, gamma=2.0):
    """-alpha_t (1 - p_t)^gamma log p_t, elementwise (torchvision's definition)."""
    p = 1 / (1 + torch.exp(-x))
    ce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None:
        alpha = torch.as_tensor(alpha, dtype=torch.float64)
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss


def poly1_focal(x, t, alpha=0.25, gamma=2.0, epsilon=1.0):
    p = 1 / (1 + torch.exp(-x))
    p_t = p * t + (1 - p) * (1 - t)
    return sigmoid_focal(x, t, alpha, gamma) + epsilon * (1 - p_t) ** (gamma + 1)


def focal_star(x, t, gamma=2.0, beta=1.0, alpha=0.25):
    """-log(sigmoid(gamma x_t + beta)) / gamma with x_t = x (t=1), -x (t=0)."""
    def term(xt):
        return -torch.log(1 / (1 + torch.exp(-(gamma * xt + beta)))) / gamma
    loss = t * term(x) + (1 - t) * term(-x)
    return (alpha * t + (1 - alpha) * (1 - t)) * loss


def softmax_focal(x, labels, alpha=None, gamma=2.0):
    """-alpha_y (1 - p_y)^gamma log p_y per row; alpha per output or None."""
    p = torch.exp(x) / torch.exp(x).sum(1, keepdim=True)
    p_y = p[torch.arange(x.shape[0]), labels]
    loss = -(1 - p_y) ** gamma * torch.log(p_y)
    if alpha is not None:
        loss = torch.as_tensor(alpha, dtype=torch.float64)[labels] * loss
    return loss


def equalized_focal(x, t, gammas, gamma_b=2.0, alpha=0.25):
    """EFL: sum_j alpha_t (gamma_j / gamma_b) (1 - p_t)^gamma_j CE, per class column j."""
    p = 1 / (1 + torch.exp(-x))
    ce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    return alpha_t * (gammas / gamma_b) * (1 - p_t) ** gammas * ce


def _softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def soft_weights_of_image(losses, negative, budget, temperature):
    """Soft negative weights of one image (lists in, list out): a plain loop over its
    candidates, each rank weighted by the logistic step averaged over its cell, the centre
    found by bisection on the budget."""
    candidates = sorted((i for i in range(len(losses)) if negative[i]), key=lambda i: -losses[i])
    count, weights = len(candidates), [0.0] * len(losses)
    if budget == 0:
        return weights
    if budget >= count:
        for i in candidates:
            weights[i] = 1.0
        return weights
    width = temperature * budget

    def cell(rank, centre):  # the logistic step 1 / (1 + exp(rank / width - centre)) over a cell
        return width * (_softplus(centre - rank / width) - _softplus(centre - (rank + 1) / width))

    low, high = -1e4, 1e4
    for _ in range(200):
        centre = (low + high) / 2
        if sum(cell(r, centre) for r in range(count)) < budget:
            low = centre
        else:
            high = centre
    for rank, i in enumerate(candidates):
        weights[i] = cell(rank, centre)
    return weights
