"""Hyperparameter campaigns over the backbone registry with DeepHyper (docs/tune.md).

* :mod:`~atomgfm.tune.space`: the search space from each backbone's declared ``Settings`` ranges
* :mod:`~atomgfm.tune.campaign`: the campaign YAML and its validation
* :mod:`~atomgfm.tune.trial`: one trial (base config + params, capped data, budget, stopper)
* :mod:`~atomgfm.tune.search`: the CBO driver with parallel evaluators and resume
* :mod:`~atomgfm.tune.records`: per-trial records in ``CAMPAIGN_DIR/trials/<id>/``
* :mod:`~atomgfm.tune.report`: ranked table, trajectories per family, promotion

DeepHyper is imported only where a campaign runs (``pip install 'atomgfm[tune]'``).
"""
