"""Stratified samples: every op mix gets its proportional share, iso classes are not repeated while others are
left, and the draw is reproducible from its seed."""
from collections import Counter

import pytest

from nasbench_ptb.sampling import op_mix, stratified_sample
from nasbench_ptb.space import space


def test_3node_sample_of_64_has_every_op_mix_in_proportion_and_distinct_iso_classes():
    sp = space("3node")
    s = stratified_sample(sp, 64, seed=0)
    genos = [sp.from_id(i) for i in s.ids]
    assert len(set(s.ids)) == 64 and list(s.ids) == sorted(s.ids)
    mixes = Counter(op_mix(g.ops) for g in genos)
    # 384 cells: 4 mixes of one op (6 cells each), 12 of two ops (18), 4 of three ops (36) -> 1/6 of each
    assert len(mixes) == 20
    assert sorted(Counter(mixes.values()).items()) == [(1, 4), (3, 12), (6, 4)]
    for mix, count in mixes.items():
        assert count == sum(op_mix(g.ops) == mix for g in sp) // 6
    assert len({g.iso_hash for g in genos}) == 64  # 188 classes to draw from: none repeated


def test_sample_is_reproducible_from_its_seed_and_recorded_whole():
    sp = space("3node")
    a, b, c = stratified_sample(sp, 64, 0), stratified_sample(sp, 64, 0), stratified_sample(sp, 64, 1)
    assert a == b and a.ids != c.ids
    d = a.to_dict()
    assert d["n"] == 64 and d["seed"] == 0 and d["space"] == "3node" and d["ids"] == list(a.ids) and d["method"]


def test_small_samples_round_by_largest_remainder_and_cover_every_class_when_they_can():
    sp = space("2node")  # 32 cells: 6 mixes of two ops (4 cells, 3 iso classes), 4 of one op (2 cells, 2 classes)
    five = [sp.from_id(i) for i in stratified_sample(sp, 5, seed=3).ids]
    # shares 5·4/32 = 0.625 beat 5·2/32 = 0.3125: five different two-op mixes get one cell each
    assert len({op_mix(g.ops) for g in five}) == 5 and all(len(set(g.ops)) == 2 for g in five)
    # 26 = 6·3 + 4·2 by largest remainder: each group gives one cell per iso class, so all 26 classes appear
    genos = [sp.from_id(i) for i in stratified_sample(sp, 26, seed=0).ids]
    assert len({g.iso_hash for g in genos}) == 26
    assert stratified_sample(sp, 32, seed=3).ids == tuple(range(32))


@pytest.mark.parametrize("n", [0, -1, 385])
def test_sample_size_out_of_range_is_refused(n):
    with pytest.raises(ValueError, match="out of range"):
        stratified_sample(space("3node"), n)


@pytest.mark.parametrize("n", [1, 5, 7, 26, 50, 383])
def test_every_size_gives_exactly_n_distinct_cells(n):
    for name in ("2node", "3node"):
        sp = space(name)
        if n <= sp.size:
            ids = stratified_sample(sp, n, seed=4).ids
            assert len(ids) == len(set(ids)) == n


def test_the_default_seed_is_zero():
    assert stratified_sample(space("3node"), 64) == stratified_sample(space("3node"), 64, seed=0)
