"""TensorBoard: ``tools/train.py --tensorboard`` writes event files with the run's scalars."""
import glob
import os
import os.path as osp

import pytest
from mmengine.config import Config

from mmtlalign.engine import tensorboard
from mmtlalign.errors import UserInputError

import datagen

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

TINY_TLALIGN = datagen.tiny_deit_config(osp.join(ROOT, 'configs/tlalign/deit-t_8xb128.py'))


def test_add_tensorboard_keeps_the_other_backends():
    cfg = Config(dict(visualizer=dict(type='UniversalVisualizer',
                                      vis_backends=[dict(type='LocalVisBackend')])))
    tensorboard.add_tensorboard(cfg)
    tensorboard.add_tensorboard(cfg)  # idempotent
    assert cfg.visualizer.type == 'UniversalVisualizer'
    assert [b['type'] for b in cfg.visualizer.vis_backends] == [
        'LocalVisBackend', 'TensorboardVisBackend']


def test_missing_tensorboard_is_a_clear_error(monkeypatch):
    real = tensorboard.importlib.util.find_spec
    monkeypatch.setattr(tensorboard.importlib.util, 'find_spec',
                        lambda name, *a: None if name == 'tensorboard' else real(name, *a))
    with pytest.raises(UserInputError, match=r'pip install "mmtlalign\[tensorboard\]"'):
        tensorboard.add_tensorboard(Config(dict()))


@pytest.mark.slow
def test_train_tool_writes_tensorboard_events(tmp_path):
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    data = datagen.make_imagenet(str(tmp_path / 'imagenet'), per_class=2, val_per_class=1)
    config = tmp_path / 'tiny_tlalign.py'
    config.write_text(TINY_TLALIGN)
    work_dir = str(tmp_path / 'work')
    result = datagen.train_tool(config, work_dir, data, '--tensorboard')
    assert result.returncode == 0, result.stderr[-3000:]
    events = glob.glob(osp.join(work_dir, '*', 'vis_data', 'events.out.tfevents.*'))
    assert len(events) == 1, os.listdir(work_dir)
    acc = EventAccumulator(events[0])
    acc.Reload()
    scalars = acc.Tags()['scalars']
    for tag in ('loss', 'lr', 'token_fluctuation', 'accuracy/top1'):
        assert tag in scalars, scalars
    assert len(acc.Scalars('loss')) == 2  # one per iteration (8 images, batch 4)
    # the local JSON scalars are still written beside them
    assert glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
