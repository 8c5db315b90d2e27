"""Two processes with batch B train as one process with batch 2B: the heads' normalizer
(``avg_factor``) is averaged over processes, and DDP's gradient averaging then gives the
single-process gradient. With ``sync_avg_factor=False`` each process divides by its own
positives, as mmdet's stock heads do, and the two differ."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_mining_heads import NUM_CLASSES, _head, _problem

import plugin  # noqa: F401

SAMPLERS = {'pseudo': dict(type='PseudoSampler'),
            'hard': dict(type='HardNegativeSampler', neg_pos_ratio=3),
            'soft': dict(type='HardNegativeSampler', mode='soft', temperature=1.0),
            # normalized by the positives OHEM kept, which differ between the processes
            'ohem': dict(type='HardNegativeSampler', mode='ohem', batch_size=64, nms_thr=0.7,
                         neg_pos_ratio=3)}


def _batch():
    """4 images; the second process's images have fewer positives than the first's."""
    problem = _problem(4, 11, NUM_CLASSES)
    problem['labels'][3] = NUM_CLASSES
    problem['bbox_weights'][3] = 0
    return problem


def _assigned_positives(problem):
    return float(((problem['labels'] < NUM_CLASSES) & (problem['label_weights'] > 0)).sum())


def _loss_and_gradients(head, problem):
    problem = {key: value.detach().clone() if isinstance(value, torch.Tensor) else value
               for key, value in problem.items()}
    problem['cls_score'].requires_grad_(True)
    problem['bbox_pred'].requires_grad_(True)
    problem['avg_factor'] = _assigned_positives(problem)  # what get_targets gives
    losses = head.loss_by_batch(**problem)
    total = sum(losses['loss_cls']) + sum(losses['loss_bbox'])
    total.backward()
    return total.detach(), problem['cls_score'].grad, problem['bbox_pred'].grad


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2)
    try:
        half = {key: value[2 * rank:2 * rank + 2] if isinstance(value, torch.Tensor) else value
                for key, value in _batch().items()}
        for name, sampler in SAMPLERS.items():
            for sync in (True, False):
                head = _head('retina', sampler)
                head.sync_avg_factor = sync
                loss, grad_cls, grad_box = _loss_and_gradients(head, half)
                dist.all_reduce(loss)  # the loss whose gradient DDP's gradient mean gives
                out[(rank, name, sync)] = (loss / 2, grad_cls, grad_box)
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one_process_with_both_batches():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(port, out), nprocs=2, join=True)
    for name, sampler in SAMPLERS.items():
        loss, grad_cls, grad_box = _loss_and_gradients(_head('retina', sampler), _batch())
        for rank in (0, 1):
            their_loss, their_cls, their_box = out[(rank, name, True)]
            torch.testing.assert_close(their_loss, loss, rtol=1e-5, atol=0)
            # DDP averages parameter gradients over the 2 processes: half of each one's
            torch.testing.assert_close(their_cls / 2, grad_cls[2 * rank:2 * rank + 2],
                                       rtol=1e-5, atol=1e-9)
            torch.testing.assert_close(their_box / 2, grad_box[2 * rank:2 * rank + 2],
                                       rtol=1e-5, atol=1e-9)
        # Switched off: each process by its own positives, which is not the one-process loss.
        assert not torch.allclose(out[(0, name, False)][0], loss, rtol=1e-3), name
