"""The base of the evaluation stages (:mod:`.stages` lists the kinds)."""
from ..errors import UserInputError


class Stage:
    """One evaluation stage. Subclasses set ``KIND``, ``PARAMS`` (name -> default) and
    implement :meth:`metric_names` and :meth:`run`."""
    KIND = ''
    PARAMS = {}
    #: :meth:`check` needs the evaluated model's config (a benchmark checks each arm's)
    NEEDS_CONFIG = False

    def __init__(self, name=None, **params):
        unknown = set(params) - set(self.PARAMS) - {'seed'}
        if unknown:
            raise UserInputError(f'evaluation stage {name or self.KIND!r} ({self.KIND}): '
                                 f'unknown parameter(s) {", ".join(sorted(unknown))}; allowed: '
                                 f'{", ".join(sorted(self.PARAMS)) or "none"}, seed.')
        self.name = name or self.KIND
        self.seed = int(params.pop('seed', 0))
        self.params = {**self.PARAMS, **params}

    def spec(self):
        """The stage as a JSON-able dict (what makes two evaluations the same)."""
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.params.items()}
        return dict(kind=self.KIND, name=self.name, seed=self.seed, **params)

    def metric_names(self):
        raise NotImplementedError

    def check(self, cfg=None):
        """Raise :class:`~mmtlalign.datasets.imagenet_robustness.RobustnessSetMissing` when
        the stage's data is not there (nothing to check for computed perturbations).

        Args:
            cfg (Config, optional): the evaluated model's config, where the caller has it
                (for stages whose data comes from its test pipeline).
        """

    def run(self, ev):
        """Returns ``dict(metrics={name: value}, curves={...}, num_images=N)``."""
        raise NotImplementedError
