"""Independent float64 references, written from the papers' formulas with plain autograd."""
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
