"""Restarting the training loop's data loader (shared by the reliability hooks)."""


def restart_train_iterator(loop):
    """Give ``IterBasedTrainLoop`` a fresh loader iterator, as if the loop was just built.

    The loop creates its iterator when it is built, before any hook runs; with worker
    processes those already hold copies of the dataset (its pipeline) and of the worker seeds,
    and have prefetched batches. Call this after changing either. No-op for other loops (they
    create their iterator at each epoch).
    """
    from mmengine.runner.loops import _InfiniteDataloaderIterator
    wrapper = getattr(loop, 'dataloader_iterator', None)
    if not isinstance(wrapper, _InfiniteDataloaderIterator):
        return False
    loader = loop.dataloader
    old = wrapper._iterator
    if hasattr(old, '_shutdown_workers'):
        old._shutdown_workers()
    if getattr(loader, '_iterator', None) is not None:  # persistent workers
        loader._iterator = None
    sampler = getattr(loader, 'sampler', None)
    if hasattr(sampler, '_indices_of_rank'):  # InfiniteSampler: its position is shared
        sampler.indices = sampler._indices_of_rank()
    loop.dataloader_iterator = _InfiniteDataloaderIterator(loader)
    return True
