"""The ``label_fidelity`` panels of ``results.png``: one scatter per label rule of the share it
gives against the content share of the same mixed image
(:mod:`mmtlalign.evaluation.label_fidelity`), every arm in its colour, its seeds pooled. Points
on the diagonal: the rule labels what the image shows; the area rule's cloud shows how far area
and content part."""

#: the most points drawn per arm and panel (a seeded subsample of each seed's points is stored)
MAX_POINTS = 1500


def fidelity_rules(ev, stage):
    """The rules a label_fidelity stage scored (from the first arm that has its curves)."""
    for per in ev.get('curves', {}).values():
        mean = (per.get(stage) or {}).get('mean') or {}
        if mean.get('rules'):
            return list(mean['rules'])
    return []


def fidelity_panel(ax, ev, stage, rule, colors, labels, mae=None):
    """Scatter of ``rule``'s share (y) against the content share (x), per arm.

    Args:
        ev (dict): ``results['evaluation']``.
        mae (dict, optional): ``{arm: mean share MAE of the rule (pp)}`` for the legend.
    """
    ax.plot([0, 1], [0, 1], 'k--', lw=1)
    for arm, per in ev['curves'].items():
        mean = (per.get(stage) or {}).get('mean') or {}
        ys = (mean.get('shares') or {}).get(rule)
        xs = mean.get('content')
        if not ys or not xs:
            continue
        n = min(len(xs), len(ys), MAX_POINTS)
        text = labels[arm] + (f' (MAE {mae[arm]:.1f} pp)' if mae and mae.get(arm) is not None
                              else '')
        ax.scatter(xs[:n], ys[:n], s=5, alpha=0.35, color=colors[arm], label=text, lw=0)
    ax.set(xlabel='content share (partner part of the visible foreground)',
           ylabel=f'{rule} share', xlim=(0, 1), ylim=(0, 1))
    ax.set_aspect('equal', adjustable='box')
    ax.set_title(f'{stage}: {rule} label vs content', fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc='upper left', markerscale=3)


def fidelity_panels(results, ev, stages, colors, labels):
    """``[draw(ax)]``: one scatter per rule of each label_fidelity stage in ``stages``."""
    panels = []
    for stage in stages:
        for rule in fidelity_rules(ev, stage):
            mae = {arm: ((a['metrics'].get(f'share MAE {rule}') or {}).get('mean'))
                   for arm, a in results['arms'].items()}
            panels.append(lambda ax, s=stage, r=rule, m=mae: fidelity_panel(
                ax, ev, s, r, colors, labels, m))
    return panels
