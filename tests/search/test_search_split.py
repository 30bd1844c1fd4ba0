"""The data discipline of the default evaluator: held-out slice and proxy set are seeded and disjoint."""


def test_split_is_disjoint_and_seeded():
    from kdnas_deploy.search.evaluator import split_train

    a = split_train(6000, 0.1, 500, seed=0)
    assert len(a.heldout) == 500 and len(a.proxy) == 600
    assert not set(a.heldout) & set(a.proxy) and not set(a.heldout) & set(a.full)
    assert len(a.full) == 5500 and set(a.proxy) <= set(a.full)
    b = split_train(6000, 0.1, 500, seed=0)
    c = split_train(6000, 0.1, 500, seed=1)
    assert (a.proxy == b.proxy).all() and not (a.proxy == c.proxy).all()
